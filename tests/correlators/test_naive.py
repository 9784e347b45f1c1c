from datetime import UTC, datetime, timedelta

import pytest

from correlators.naive import NaiveCorrelator
from correlators.types import Correlator
from schemas.context import Asset, Link
from schemas.models import (
    Alert,
    Decision,
    Disposition,
    Domain,
    IncidentEvent,
    IncidentKind,
    LifecycleEvent,
    Severity,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def alert(
    n: int,
    minute: float,
    asset: str = "web",
    domain: Domain = Domain.SECURITY,
    severity: Severity = Severity.MEDIUM,
) -> Alert:
    return Alert(
        id=f"a{n}",
        source="test",
        domain=domain,
        time=T0 + timedelta(minutes=minute),
        asset=asset,
        signature=f"sig{n}",
        severity=severity,
    )


def decisions(outputs: list[Decision | IncidentEvent]) -> list[Decision]:
    return [o for o in outputs if isinstance(o, Decision)]


def test_implements_the_protocol() -> None:
    engine: Correlator = NaiveCorrelator()
    assert engine.flush() == []


def test_session_per_asset_splits_after_gap() -> None:
    engine = NaiveCorrelator()
    out = [
        decisions(engine.on_alert(a))[0]
        for a in (
            alert(1, 0),
            alert(2, 10),
            alert(3, 25),
            alert(4, 40.5),
            alert(5, 41, asset="db"),
        )
    ]
    assert all(d.disposition is Disposition.INCIDENT for d in out)
    ids = [d.incident_id for d in out]
    # 0 -> 10 -> 25 are at most 15 min apart; 40.5 is 15.5 min after 25
    assert ids[0] == ids[1] == ids[2]
    assert ids[3] != ids[2]
    assert ids[4] not in ids[:4]
    incidents = engine.incidents()
    assert [i.incident_id for i in incidents] == sorted(i.incident_id for i in incidents)
    first = next(i for i in incidents if i.incident_id == ids[0])
    assert first.alert_count == 3
    assert first.opened_at == T0
    assert first.updated_at == T0 + timedelta(minutes=25)
    assert first.resolved_at == T0 + timedelta(minutes=40)  # closed by alert 4
    assert first.root_cause is not None and first.root_cause.alert_id == "a1"
    assert first.assets == ("web",)


def test_exactly_gap_apart_still_joins() -> None:
    engine = NaiveCorrelator()
    a = decisions(engine.on_alert(alert(1, 0)))[0]
    b = decisions(engine.on_alert(alert(2, 15)))[0]
    assert a.incident_id == b.incident_id


def test_kind_follows_domains_present() -> None:
    engine = NaiveCorrelator()
    d1 = decisions(engine.on_alert(alert(1, 0, domain=Domain.OPS)))[0]
    assert d1.incident_kind is IncidentKind.OPERATIONAL
    d2 = decisions(engine.on_alert(alert(2, 1, domain=Domain.SECURITY)))[0]
    assert d2.incident_kind is IncidentKind.CONVERGED
    d3 = decisions(engine.on_alert(alert(3, 0, asset="x")))[0]
    assert d3.incident_kind is IncidentKind.SECURITY
    kinds = {i.assets[0]: i.kind for i in engine.incidents()}
    assert kinds == {"web": IncidentKind.CONVERGED, "x": IncidentKind.SECURITY}


def test_severity_is_the_maximum() -> None:
    engine = NaiveCorrelator()
    engine.on_alert(alert(1, 0, severity=Severity.LOW))
    engine.on_alert(alert(2, 1, severity=Severity.CRITICAL))
    engine.on_alert(alert(3, 2, severity=Severity.INFO))
    (incident,) = engine.incidents()
    assert incident.severity is Severity.CRITICAL
    assert incident.score == 100.0


def test_advance_resolves_quiet_sessions_and_new_alert_opens_new() -> None:
    engine = NaiveCorrelator()
    out = engine.on_alert(alert(1, 0))
    assert [o.event for o in out if isinstance(o, IncidentEvent)] == [LifecycleEvent.OPENED]
    assert engine.advance(T0 + timedelta(minutes=15)) == []  # not yet quiet for > 15 min
    resolved = engine.advance(T0 + timedelta(minutes=16))
    assert [o.event for o in resolved if isinstance(o, IncidentEvent)] == [LifecycleEvent.RESOLVED]
    assert engine.advance(T0 + timedelta(minutes=30)) == []
    d = decisions(engine.on_alert(alert(2, 31)))[0]
    assert d.incident_id is not None and d.incident_id.endswith("000002")


def test_later_alert_pushes_the_deadline() -> None:
    engine = NaiveCorrelator()
    engine.on_alert(alert(1, 0))
    engine.on_alert(alert(2, 10))
    assert engine.advance(T0 + timedelta(minutes=16)) == []
    assert len(engine.advance(T0 + timedelta(minutes=26))) == 1


def test_component_grouping_uses_inventory_links_and_aliases() -> None:
    assets = [
        Asset(id="sw1", links=(Link(to="r1"),)),
        Asset(id="r1", aliases=("10.0.0.1",)),
        Asset(id="r2", links=(Link(to="sw1"),)),
        Asset(id="lonely"),
    ]
    engine = NaiveCorrelator(gap=timedelta(minutes=5), group_by="component", assets=assets)
    out = [
        decisions(engine.on_alert(a))[0]
        for a in (
            alert(1, 0, asset="r2", domain=Domain.OPS),
            alert(2, 1, asset="10.0.0.1", domain=Domain.OPS),
            alert(3, 2, asset="lonely", domain=Domain.OPS),
            alert(4, 8, asset="sw1", domain=Domain.OPS),
        )
    ]
    assert out[0].incident_id == out[1].incident_id
    assert out[1].asset == "r1"
    assert out[2].incident_id != out[0].incident_id
    assert out[3].incident_id != out[0].incident_id  # 7 min after the component's last alarm
    first = next(i for i in engine.incidents() if i.incident_id == out[0].incident_id)
    assert first.assets == ("r2", "r1")
    assert first.root_cause is not None and first.root_cause.asset == "r2"


def test_redelivered_ids_get_no_second_decision() -> None:
    engine = NaiveCorrelator()
    assert len(decisions(engine.on_alert(alert(1, 0)))) == 1
    assert decisions(engine.on_alert(alert(1, 0))) == []
    assert decisions(engine.on_invalid("bad:1", "DecodeError: x"))[0].disposition is (
        Disposition.INVALID
    )
    assert engine.on_invalid("bad:1", "again") == []


def test_deterministic() -> None:
    def run() -> list[str]:
        engine = NaiveCorrelator()
        for i in range(50):
            engine.on_alert(alert(i, i * 7 % 60, asset=f"h{i % 3}"))
        return [i.model_dump_json() for i in engine.incidents()]

    assert run() == run()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        NaiveCorrelator(gap=timedelta(0))
    with pytest.raises(ValueError):
        NaiveCorrelator(group_by="team")  # type: ignore[arg-type]
