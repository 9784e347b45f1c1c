"""The gateway's read model of incidents, folded from the `incidents` topic.

`IncidentView` is pure (events in, queries out) so it is tested without Kafka;
`IncidentFeed` consumes the topic from the beginning (no consumer group: every gateway
instance holds the whole view) and feeds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.models import IncidentEvent, IncidentKind, LifecycleEvent, TimelineEntry
from streams.kafka_sink import start_client

__all__ = ["IncidentState", "IncidentQuery", "IncidentView", "IncidentFeed"]

log = logging.getLogger(__name__)

MAX_TIMELINE = 500
MAX_ALERT_IDS = 1000
MAX_REASONS = 100


class IncidentState(StrEnum):
    """Where an incident is in its lifecycle, as the read API filters it."""

    OPEN = "open"
    RESOLVED = "resolved"
    MERGED = "merged"


@dataclass(frozen=True)
class IncidentQuery:
    """Filters of `GET /api/v1/incidents`; None means any."""

    state: IncidentState | None = None
    kind: IncidentKind | None = None
    owner: str | None = None
    asset: str | None = None
    limit: int = 100


@dataclass
class _Entry:
    latest: IncidentEvent
    alert_ids: dict[str, None] = field(default_factory=dict)
    reasons: dict[str, None] = field(default_factory=dict)
    timeline: dict[tuple[str, str], TimelineEntry] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> IncidentState:
        if self.latest.event is LifecycleEvent.MERGED or self.latest.merged_into:
            return IncidentState.MERGED
        if self.latest.resolved_at is not None:
            return IncidentState.RESOLVED
        return IncidentState.OPEN


def _bounded_add(target: dict[Any, Any], items: Iterable[tuple[Any, Any]], cap: int) -> None:
    for key, value in items:
        if key not in target and len(target) >= cap:
            return
        target.setdefault(key, value)


class IncidentView:
    """Latest state of each incident, with the union of its alert ids, reasons and timeline.

    Events may carry full snapshots or only what changed; taking the union works for both.
    An event whose version is not newer than the one held (a redelivery) changes nothing.
    """

    def __init__(self, max_incidents: int = 10_000) -> None:
        self._max = max_incidents
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, event: IncidentEvent) -> bool:
        """Fold one event in; returns False for a stale or repeated version."""
        entry = self._entries.get(event.incident_id)
        if entry is not None and event.version <= entry.latest.version:
            return False
        if entry is None:
            entry = _Entry(latest=event)
            self._entries[event.incident_id] = entry
            self._evict()
        entry.latest = event
        _bounded_add(entry.alert_ids, ((a, None) for a in event.alert_ids), MAX_ALERT_IDS)
        _bounded_add(entry.reasons, ((r, None) for r in event.reasons), MAX_REASONS)
        _bounded_add(entry.timeline, (((t.alert_id, t.note), t) for t in event.timeline), MAX_TIMELINE)
        entry.history.append(
            {"version": event.version, "event": event.event.value, "updated_at": event.updated_at.isoformat()}
        )
        del entry.history[:-MAX_TIMELINE]
        return True

    def _evict(self) -> None:
        if len(self._entries) <= self._max:
            return
        # Drop the least recently updated closed incident, else the least recently updated.
        candidates = [e for e in self._entries.values() if e.state is not IncidentState.OPEN]
        pool = candidates or list(self._entries.values())
        victim = min(pool, key=lambda e: e.latest.updated_at)
        del self._entries[victim.latest.incident_id]

    def query(self, q: IncidentQuery) -> tuple[int, list[dict[str, Any]]]:
        """(matching count, summaries of the most recently updated `q.limit` matches)."""
        matches = [
            e
            for e in self._entries.values()
            if (q.state is None or e.state is q.state)
            and (q.kind is None or e.latest.kind is q.kind)
            and (q.owner is None or q.owner in e.latest.owners)
            and (q.asset is None or q.asset in e.latest.assets)
        ]
        matches.sort(key=lambda e: (e.latest.updated_at, e.latest.incident_id), reverse=True)
        return len(matches), [self._summary(e) for e in matches[: q.limit]]

    def get(self, incident_id: str) -> dict[str, Any] | None:
        """Full detail of one incident: state, timeline, reasons, alert ids, lifecycle."""
        entry = self._entries.get(incident_id)
        if entry is None:
            return None
        detail = self._summary(entry)
        latest = entry.latest
        timeline = sorted(entry.timeline.values(), key=lambda t: (t.time, t.alert_id))
        detail.update(
            alert_ids=list(entry.alert_ids),
            alert_ids_total=max(latest.alert_ids_total, len(entry.alert_ids)),
            reasons=list(entry.reasons),
            timeline=[t.model_dump(mode="json") for t in timeline],
            lifecycle=list(entry.history),
        )
        return detail

    @staticmethod
    def _summary(entry: _Entry) -> dict[str, Any]:
        out = entry.latest.model_dump(mode="json", exclude={"alert_ids", "reasons", "timeline", "alert_ids_total"})
        out["state"] = entry.state.value
        return out


class IncidentFeed:
    """Consume the incidents topic into an `IncidentView`, reconnecting while Kafka is down."""

    def __init__(
        self,
        view: IncidentView,
        *,
        bootstrap: str,
        topic: str,
        client_options: Mapping[str, Any] | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self.view = view
        self._bootstrap = bootstrap
        self._topic = topic
        self._options = dict(client_options or {})
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self.bad_records = 0
        self.applied = 0

    async def start(self) -> None:
        """Start consuming in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="incident-feed")

    async def stop(self) -> None:
        """Stop consuming."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _apply(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            event = IncidentEvent.model_validate_json(value)
        except ValidationError as exc:
            self.bad_records += 1
            log.warning("skipping an unreadable record on %s (%d errors)", self._topic, exc.error_count())
            return
        if self.view.apply(event):
            self.applied += 1

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                self._topic,
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                metadata_max_age_ms=5000,
                client_id="socnoc-gateway-view",
                **self._options,
            )
            try:
                await start_client(consumer)
                # A view rebuilt from the start of the topic: redeliveries are idempotent.
                async for record in consumer:
                    self._apply(record.value)
            except (KafkaError, OSError) as exc:
                log.warning("incident feed lost Kafka (%s); retrying", type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(self._retry_s)
