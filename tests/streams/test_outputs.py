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
from streams.metrics import Metrics
from streams.outputs import Outputs, engine_failure, team_targets
from streams.partition import Processor
from streams.partition_state import PartitionState
from streams.records import AlertItem, encode_item
from streams.settings import Settings

T0 = datetime(2024, 3, 1, tzinfo=UTC)


class _Sender:
    """Records what would go to the producer (`BatchSender`'s two ways in)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, int | None, bytes, list[tuple[str, bytes]]]] = []

    def put(self, topic: str, value: bytes, partition: int, *, key: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.records.append((topic, partition, key, headers))

    async def add(self, topic: str, value: bytes, *, key: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.records.append((topic, None, key, headers))


def _outputs(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[Outputs, Metrics]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    metrics = Metrics.create(CollectorRegistry())
    return Outputs(Settings(), metrics, CapWatch(metrics)), metrics


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
    outputs.decision(sender, st, 17, decision, {}, 0.0)  # type: ignore[arg-type]
    assert sender.records == [
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
    outputs.decision(sender, st, 1, decision, {}, 0.0)  # type: ignore[arg-type]
    await outputs.dead_letter(sender, st, 1, letter)  # type: ignore[arg-type]
    await outputs.incident(sender, st, 1, _event(1))  # type: ignore[arg-type]
    assert sender.records == [] and st.suppress == set()
    assert st.open == {}  # (an event published before the restore was counted then)
    outputs.decision(sender, st, 2, decision, {}, 0.0)  # type: ignore[arg-type]
    assert [r[0] for r in sender.records] == ["alerts.decisions"]  # skipped once, not for ever


async def test_an_incident_event_goes_to_its_owners_topics_with_routing_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outputs, _ = _outputs(monkeypatch, SOCNOC_TEAM_TOPICS='{"soc": "incidents.soc", "noc": "incidents.noc"}')
    sender, st = _Sender(), _state(2)
    st.suppress = {"i:INC-1:1@incidents.soc"}  # this copy went out before a restart
    await outputs.incident(sender, st, 8, _event(1, owners=("noc", "soc")))  # type: ignore[arg-type]
    assert [(topic, key) for topic, _, key, _ in sender.records] == [
        ("incidents", b"INC-1"),
        ("incidents.noc", b"INC-1"),
    ]
    assert dict(sender.records[1][3]) == {
        "socnoc-src": b"2:8",
        "socnoc-oid": b"i:INC-1:1@incidents.noc",
        "socnoc-owners": b"noc,soc",
        "socnoc-incident-kind": b"security",
        "socnoc-event": b"opened",
    }
    assert st.open == {"INC-1": IncidentKind.SECURITY}
    await outputs.incident(sender, st, 9, _event(2, LifecycleEvent.RESOLVED))  # type: ignore[arg-type]
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
