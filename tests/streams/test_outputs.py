"""Correlation outputs to their topics: headers, team copies, and what a restore skips."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from correlators.config import EngineConfig
from correlators.engine import Engine
from schemas.models import (
    Alert,
    DeadLetter,
    Decision,
    Disposition,
    Domain,
    IncidentEvent,
    IncidentKind,
    LifecycleEvent,
    Severity,
)
from streams.caps import CapWatch
from streams.health import StageHealth
from streams.kafka import BatchSender, key_partition
from streams.metrics import Metrics
from streams.outputs import Outputs, engine_failure, team_targets
from streams.partition import Processor
from streams.partition_state import PartitionState
from streams.records import AlertItem, encode_item
from streams.settings import Settings
from streams.testing import AckingProducer

T0 = datetime(2024, 3, 1, tzinfo=UTC)


class _Sender:
    """A real `BatchSender` over a producer stand-in, and what it sent, in order: (topic,
    partition, key, headers) of each record."""

    def __init__(self) -> None:
        self._producer = AckingProducer(8, keep=True)
        self.sender = BatchSender(self._producer)

    async def records(self) -> list[tuple[str, int, bytes | None, list[tuple[str, bytes]]]]:
        await self.sender.send()
        return [(r.topic, r.partition, r.key, r.headers) for r in self._producer.produced]


def _outputs(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[Outputs, Metrics]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    metrics = Metrics.create(CollectorRegistry())
    return Outputs(Settings(), metrics, CapWatch(metrics), StageHealth()), metrics


def _event(
    version: int, event: LifecycleEvent = LifecycleEvent.OPENED, owners: tuple[str, ...] = ("soc",)
) -> IncidentEvent:
    return IncidentEvent(
        incident_id="INC-1", kind=IncidentKind.SECURITY, assets=("web",), opened_at=T0, updated_at=T0,
        severity=Severity.HIGH, score=50, alert_count=1, owners=owners, event=event, version=version,
        resolved_at=T0 if event is LifecycleEvent.RESOLVED else None,
    )


def _state(partition: int = 5) -> PartitionState:
    return PartitionState(partition, Processor(Engine(EngineConfig())), 0)


async def test_a_decision_names_its_cause_and_goes_to_its_engines_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs, _ = _outputs(monkeypatch)
    outputs.decision_partitions = 4
    sender, st = _Sender(), _state(5)
    decision = Decision(alert_id="a1", disposition=Disposition.NOISE, reason="routine")
    outputs.decision(sender.sender, st, 17, decision, {}, 0.0)
    assert await sender.records() == [
        ("alerts.decisions", 1, b"a1", [("socnoc-src", b"5:17"), ("socnoc-oid", b"d:a1")])
    ]


async def test_what_a_restore_found_published_is_skipped_once(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs, _ = _outputs(monkeypatch)
    sender, st = _Sender(), _state()
    st.suppress = {"d:a1", "i:INC-1:1", "q:in:0:9"}
    decision = Decision(alert_id="a1", disposition=Disposition.NOISE, reason="routine")
    letter = DeadLetter(
        raw="", topic="in", partition=0, offset=9, error="DecodeError", reason="bad", received_at=T0
    )
    outputs.decision(sender.sender, st, 1, decision, {}, 0.0)
    await outputs.dead_letter(sender.sender, st, 1, letter)
    await outputs.incident(sender.sender, st, 1, _event(1))
    assert await sender.records() == [] and st.suppress == set()
    assert st.open == {}  # (an event published before the restore was counted then)
    outputs.decision(sender.sender, st, 2, decision, {}, 0.0)
    assert [r[0] for r in await sender.records()] == ["alerts.decisions"]  # skipped once, not for ever


async def test_an_incident_event_goes_to_its_owners_topics_with_routing_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outputs, _ = _outputs(monkeypatch, SOCNOC_TEAM_TOPICS='{"soc": "incidents.soc", "noc": "incidents.noc"}')
    sender, st = _Sender(), _state(2)
    st.suppress = {"i:INC-1:1@incidents.soc"}  # this copy went out before a restart
    await outputs.incident(sender.sender, st, 8, _event(1, owners=("noc", "soc")))
    by_key = key_partition(b"INC-1", 8)  # (partitioned by the incident id, in every topic)
    records = await sender.records()
    assert [(topic, partition, key) for topic, partition, key, _ in records] == [
        ("incidents", by_key, b"INC-1"),
        ("incidents.noc", by_key, b"INC-1"),
    ]
    assert dict(records[1][3]) == {
        "socnoc-src": b"2:8",
        "socnoc-oid": b"i:INC-1:1@incidents.noc",
        "socnoc-owners": b"noc,soc",
        "socnoc-incident-kind": b"security",
        "socnoc-event": b"opened",
    }
    assert st.open == {"INC-1": IncidentKind.SECURITY}
    await outputs.incident(sender.sender, st, 9, _event(2, LifecycleEvent.RESOLVED))
    assert st.open == {}


@pytest.mark.parametrize(
    ("owners", "expected"),
    [
        (("soc",), ["i.soc"]),
        (("noc", "soc"), ["i.noc", "i.soc"]),
        (("dba",), ["i.other"]),  # nobody's route: the catch-all
        ((), ["i.other"]),
        (("dba", "soc"), ["i.soc"]),  # someone's route: no catch-all copy
    ],
)
def test_team_targets(owners: tuple[str, ...], expected: list[str]) -> None:
    routes = {"soc": "i.soc", "noc": "i.noc", "*": "i.other"}
    assert team_targets(routes, owners, "incidents") == expected
    assert team_targets({}, owners, "incidents") == []
    assert team_targets({"soc": "incidents"}, ("soc",), "incidents") == []  # never twice on the main topic


def test_an_alert_the_engine_failed_on_is_invalid_and_dead_letters_its_internal_record() -> None:
    alert = Alert(
        id="a1", source="ids", domain=Domain.SECURITY, time=datetime(2024, 3, 1, tzinfo=UTC),
        asset="web", signature="s", raw="the input record",
    )
    value = encode_item(AlertItem(alert)).value
    decision, letter = engine_failure(AlertItem(alert), KeyError("boom"), "app.by-asset", 3, 17, value)
    assert isinstance(decision, Decision) and isinstance(letter, DeadLetter)
    assert (decision.alert_id, decision.disposition) == ("a1", Disposition.INVALID)
    assert "CorrelationError" in decision.reason and "KeyError" in decision.reason
    # the record at the coordinates it names: the alert as the engine got it
    assert (letter.topic, letter.partition, letter.offset, letter.error) == ("app.by-asset", 3, 17, "CorrelationError")
    assert base64.b64decode(letter.raw) == value
    assert "alert a1" in letter.reason


class _Scripted:
    """A correlator that decides each alert as told, and fails on the alert `fail_on`."""

    def __init__(self, fail_on: str) -> None:
        self.fail_on = fail_on

    def advance(self, when: datetime) -> list[Decision]:
        return []

    def on_alert(self, alert: Alert) -> list[Decision]:
        if alert.id == self.fail_on:
            raise RuntimeError("an engine bug")
        return [Decision(alert_id=alert.id, disposition=Disposition.NOISE, reason="routine")]


async def test_a_record_goes_through_its_engine_and_out_and_an_engine_failure_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outputs, metrics = _outputs(monkeypatch)
    sender, st = _Sender(), PartitionState(3, Processor(_Scripted(fail_on="a2")), 0)  # type: ignore[arg-type]

    def item(alert_id: str) -> tuple[AlertItem, bytes]:
        alert = Alert(id=alert_id, source="ids", domain=Domain.SECURITY, time=T0, asset="web", signature="s")
        return AlertItem(alert, arrived_ms=1), encode_item(AlertItem(alert)).value

    first, value = item("a1")
    assert outputs.record(sender.sender, st, 0, first, value, 1000.0) is None  # only a decision: done here
    assert st.next_offset == 1 and st.dirty
    assert metrics.decisions.value("noise") == 1 and metrics.decision_latency.sum == pytest.approx(0.999)
    second, value = item("a2")
    rest = outputs.record(sender.sender, st, 1, second, value, 1000.0)
    # the engine raised: the alert is decided `invalid` here, its dead letter is left to the
    # caller (it may wait for the producer), and the record is not processed until then
    assert rest is not None and [type(o) for o in rest] == [DeadLetter]
    assert st.next_offset == 1
    assert outputs.state.errors == 1 and (outputs.state.last_error or "").startswith("RuntimeError: an engine bug")
    assert metrics.decisions.value("invalid") == 1
    records = await sender.records()
    assert [(topic, key, dict(headers)["socnoc-src"]) for topic, _, key, headers in records] == [
        ("alerts.decisions", b"a1", b"3:0"),
        ("alerts.decisions", b"a2", b"3:1"),
    ]
