"""Correlation outputs to their topics: decisions, dead letters and incident events.

Every published record carries `socnoc-src` (the internal record that caused it) and
`socnoc-oid` (its identity, `streams.records.identity`); an output whose identity a restore
found already published (`PartitionState.suppress`) is skipped, once. Incident events also
go to the topic of each owner team (`SOCNOC_TEAM_TOPICS`), each copy with an identity of its
own, and carry routing headers for consumers that filter instead.

Compiled (scripts/build_native.py), with the record path of the correlate stage
(`Outputs.record`): a record with only decisions goes through its engine and out without
the interpreter.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime

from schemas.models import DeadLetter, Decision, Disposition, IncidentEvent
from streams.caps import CapWatch
from streams.health import StageHealth
from streams.kafka import BatchSender
from streams.metrics import Metrics
from streams.partition_state import PartitionState
from streams.records import (
    EVENT_HEADER,
    INCIDENT_KIND_HEADER,
    OID_HEADER,
    OWNERS_HEADER,
    SRC_HEADER,
    AlertItem,
    Emitted,
    InvalidItem,
    Item,
    dead_letter,
    identity,
    output_json,
)
from streams.settings import Settings

__all__ = ["Outputs", "team_targets", "engine_failure"]

log = logging.getLogger(__name__)


class Outputs:
    """Feeds a partition's records to its engine and puts the outputs on a `BatchSender`,
    with their headers and metrics; an engine failure counts in `state` (the stage's health)."""

    def __init__(self, settings: Settings, metrics: Metrics, caps: CapWatch, state: StageHealth) -> None:
        self.settings = settings
        self.metrics = metrics
        self.caps = caps
        self.state = state
        self._topic = settings.internal_topic()
        # of the decisions topic: read at each session's start (`CorrelateStage.session`)
        self.decision_partitions = 1
        self._publish = settings.publish_decisions  # (settings are frozen: read once)
        self._decisions = settings.decisions_topic

    def record(
        self, sender: BatchSender, st: PartitionState, offset: int, item: Item, value: bytes, now_ms: float
    ) -> list[Emitted] | None:
        """One internal record (`item`, decoded from `value`) through its partition's engine,
        and its decisions to `sender`, without a coroutine (most records have only a
        decision). None when the record is done; otherwise what the caller still has to do
        (`CorrelateStage._finish`): the outputs from the first one that is not a decision on
        (incident events and dead letters may wait for the producer), and the full batches
        to hand over."""
        outputs = self.feed(st, item, offset, value)
        arrived = st.processor.arrivals  # of the alerts this record released
        for i in range(len(outputs)):
            output = outputs[i]
            if not isinstance(output, Decision):
                return outputs[i:]
            self.decision(sender, st, offset, output, arrived, now_ms)
        if sender.queued:
            return []
        st.processed(offset)
        return None

    def feed(self, st: PartitionState, item: Item, offset: int, value: bytes) -> list[Emitted]:
        """The engine's outputs for one record; if it raises, the input is decided `invalid`
        and dead-lettered (`engine_failure`): an engine bug must neither stop the partition
        nor lose input."""
        try:
            return st.processor.feed(item)
        except Exception as exc:
            log.exception(
                "correlation failed on a record",
                extra={"topic": self._topic, "partition": st.partition, "offset": offset},
            )
            self.state.errors += 1
            self.state.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return engine_failure(item, exc, self._topic, st.partition, offset, value)

    def decision(
        self,
        sender: BatchSender,
        st: PartitionState,
        offset: int,
        output: Decision,
        arrived: dict[str, int],
        now_ms: float,
    ) -> None:
        """A decision to `decisions` (per alert: no coroutine); `arrived` has the input
        records' timestamps (ms) of the alerts just decided, for the latency metric."""
        oid = identity(output)
        suppress = st.suppress
        if suppress and oid in suppress:
            suppress.discard(oid)
            return
        alert_id = output.alert_id
        at = arrived.get(alert_id)
        self.metrics.observe_decision(output, (now_ms - at) / 1000 if at else None)
        if not self._publish:
            return
        headers = [(SRC_HEADER, f"{st.partition}:{offset}".encode()), (OID_HEADER, oid.encode())]
        # Keyed by alert id, but in the partition of the engine that decided: a subscriber
        # reads one engine's decisions in the order they were made, and each round of the
        # engine writes one record batch instead of one per partition (on Tansu every batch
        # a partition holds slows each later read of it).
        sender.put(
            self._decisions,
            output_json(output),
            st.partition % self.decision_partitions,
            key=alert_id.encode(),
            headers=headers,
        )

    async def dead_letter(self, sender: BatchSender, st: PartitionState, offset: int, output: DeadLetter) -> None:
        """A dead letter to `alerts.dlq`, keyed by where its input was."""
        oid = identity(output)
        if oid in st.suppress:
            st.suppress.discard(oid)
            return
        self.metrics.observe_dead_letter(output)
        if output.error == "RecordTooLarge":
            self.caps.record_too_large(st.partition)
        headers = [(SRC_HEADER, f"{st.partition}:{offset}".encode()), (OID_HEADER, oid.encode())]
        key = f"{output.topic}:{output.partition}:{output.offset}".encode()
        await sender.add(self.settings.dlq_topic, output_json(output), key=key, headers=headers)

    async def incident(self, sender: BatchSender, st: PartitionState, offset: int, output: IncidentEvent) -> None:
        """The incident event to `incidents` and to the topic of each owner team.

        A team copy has its own identity (`<oid>@<topic>`), so after a restart each copy
        that already went out is skipped on its own.
        """
        oid = identity(output)
        if oid not in st.suppress:
            self.metrics.observe_incident_event(output)
            if output.resolved_at is None and output.merged_into is None:
                st.open[output.incident_id] = output.kind
            else:
                st.open.pop(output.incident_id, None)
        main = self.settings.incidents_topic
        targets = [(main, oid)]
        targets += [(t, f"{oid}@{t}") for t in team_targets(self.settings.team_topics, output.owners, main)]
        value = output_json(output)
        key = output.incident_id.encode()
        routing = [
            (OWNERS_HEADER, ",".join(output.owners).encode()),
            (INCIDENT_KIND_HEADER, output.kind.value.encode()),
            (EVENT_HEADER, output.event.value.encode()),
        ]
        src = f"{st.partition}:{offset}".encode()
        for topic, copy_oid in targets:
            if copy_oid in st.suppress:
                st.suppress.discard(copy_oid)
                continue
            headers = [(SRC_HEADER, src), (OID_HEADER, copy_oid.encode()), *routing]
            await sender.add(topic, value, key=key, headers=headers)


def team_targets(routes: dict[str, str], owners: tuple[str, ...], main_topic: str) -> list[str]:
    """The per-team topics an incident owned by `owners` also goes to (`*`: nobody's route)."""
    if not routes:
        return []
    topics = {routes[team] for team in owners if team in routes}
    if not topics and "*" in routes:
        topics.add(routes["*"])
    topics.discard(main_topic)
    return sorted(topics)


def engine_failure(
    item: Item, exc: Exception, topic: str, partition: int, offset: int, value: bytes
) -> list[Emitted]:
    """What an input gets when the engine raised on it: `invalid`, and a dead letter of the
    internal record it came in (`value`, at `topic`/`partition`/`offset`: the alert as
    decoded; its input record stays on its input topic, found by the alert's id)."""
    reason = f"CorrelationError: the engine failed on this input ({type(exc).__name__})"
    if isinstance(item, AlertItem):
        alert = item.alert
        letter = DeadLetter(
            raw=base64.b64encode(value).decode("ascii"),
            topic=topic,
            partition=partition,
            offset=offset,
            error="CorrelationError",
            reason=f"{reason}; alert {alert.id}",
            received_at=datetime.now(UTC),
        )
        return [
            Decision(alert_id=alert.id, disposition=Disposition.INVALID, reason=reason),
            letter,
        ]
    if isinstance(item, InvalidItem):
        return [
            Decision(alert_id=item.alert_id, disposition=Disposition.INVALID, reason=item.reason),
            dead_letter(item),
        ]
    return []
