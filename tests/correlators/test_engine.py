"""Timeline tests of the correlation engine: push alerts at t, expect decisions/events at t'."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from correlators.config import EngineConfig
from correlators.engine import Engine
from correlators.lifecycle import IncidentState
from correlators.types import Output
from schemas.context import Asset, Change, ChangeKind, Feedback, FeedbackKind, Link, LinkKind
from schemas.models import (
    Alert,
    Decision,
    Disposition,
    Domain,
    IncidentEvent,
    IncidentKind,
    LifecycleEvent,
    RootCause,
    Severity,
    Status,
)
from schemas.rules import Match, SeverityRule, SuppressRule, ThresholdRule

T0 = datetime(2024, 3, 1, tzinfo=UTC)
NO_WARMUP = EngineConfig(warmup=timedelta(0))
_n = 0


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def alert(
    minutes: float,
    asset: str = "web-1",
    signature: str = "sig",
    *,
    source: str = "ids",
    domain: Domain = Domain.SECURITY,
    severity: Severity = Severity.MEDIUM,
    status: Status = Status.FIRING,
    title: str = "",
    src_ip: str | None = None,
    alert_id: str | None = None,
) -> Alert:
    global _n
    _n += 1
    return Alert(
        id=alert_id or f"a{_n}",
        source=source,
        domain=domain,
        time=at(minutes),
        asset=asset,
        signature=signature,
        title=title,
        severity=severity,
        status=status,
        src_ip=src_ip,
    )


class Run:
    """Feeds an engine and keeps every output, checking one decision per alert."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.decisions: dict[str, Decision] = {}
        self.events: list[IncidentEvent] = []

    def take(self, outputs: list[Output]) -> list[Output]:
        for out in outputs:
            if isinstance(out, Decision):
                assert out.alert_id not in self.decisions, f"second decision for {out.alert_id}"
                self.decisions[out.alert_id] = out
            else:
                self.events.append(out)
        return outputs

    def push(self, *alerts: Alert) -> list[Output]:
        out: list[Output] = []
        for a in alerts:
            out += self.take(self.engine.on_alert(a))
        return out

    def advance(self, minutes: float) -> list[Output]:
        return self.take(self.engine.advance(at(minutes)))

    def flush(self) -> list[Output]:
        return self.take(self.engine.flush())


def routine_history(run: Run, asset: str, signature: str, hours: int = 30) -> None:
    for h in range(hours):
        run.push(alert(h * 60.0 - hours * 60.0, asset, signature, source="mail"))


def test_novel_multi_detector_activity_opens_one_security_incident() -> None:
    run = Run(Engine(NO_WARMUP))
    first = alert(0, signature="web-attack", source="waf")
    assert run.push(first) == []  # waits as evidence
    run.push(alert(0.5, signature="dir-bruteforce", source="ids"))
    run.push(alert(1, signature="new-process", source="edr"))
    opened = [e for e in run.events if e.event is LifecycleEvent.OPENED]
    assert len(opened) == 1
    inc = opened[0]
    assert inc.kind is IncidentKind.SECURITY and inc.assets == ("web-1",)
    assert inc.root_cause is not None and inc.root_cause.alert_id == first.id
    assert {d.disposition for d in run.decisions.values()} == {Disposition.INCIDENT}
    assert "2 detectors (ids, waf)" in run.decisions[first.id].reason
    # a later non-routine alert on the asset joins on arrival
    late = alert(3, signature="another")
    run.push(late)
    assert run.decisions[late.id].incident_id == inc.incident_id


def test_window_that_never_reaches_threshold_closes_as_noise() -> None:
    run = Run(Engine(NO_WARMUP))
    lone = alert(0, signature="odd-thing", severity=Severity.LOW)
    run.push(lone)
    assert lone.id not in run.decisions
    run.advance(14)
    assert lone.id not in run.decisions
    run.advance(16)  # session gap of 15 minutes has passed
    decision = run.decisions[lone.id]
    assert decision.disposition is Disposition.NOISE
    assert "closed without incident" in decision.reason and "odd-thing" in decision.reason


def test_routine_signature_is_noise_with_its_count_and_repeats_are_duplicates() -> None:
    run = Run(Engine(NO_WARMUP))
    routine_history(run, "mail", "login-failed")
    now = [alert(1, "mail", "login-failed", source="mail"), alert(2, "mail", "login-failed", source="mail")]
    run.push(*now)
    first, second = (run.decisions[a.id] for a in now)
    assert first.disposition is Disposition.NOISE or first.disposition is Disposition.DUPLICATE
    assert second.disposition is Disposition.DUPLICATE
    assert "login-failed" in second.reason


def test_warmup_keeps_alerts_as_weak_evidence_until_a_strong_signal() -> None:
    run = Run(Engine(EngineConfig(warmup=timedelta(hours=24))))
    quiet = alert(0, signature="new")
    run.push(quiet)
    assert quiet.id not in run.decisions  # waits in the window, weakly weighted
    run.advance(20)
    assert run.decisions[quiet.id].disposition is Disposition.NOISE
    assert "baseline warm-up until" in run.decisions[quiet.id].reason
    early = alert(30, signature="probe")
    loud = alert(31, signature="ransomware", severity=Severity.CRITICAL, source="edr")
    run.push(early, loud)
    assert run.decisions[early.id].disposition is Disposition.INCIDENT
    assert run.decisions[early.id].incident_id == run.decisions[loud.id].incident_id


def test_maintenance_window_explains_ops_alerts_only() -> None:
    change = Change(id="CHG-42", assets=("db-1",), start=at(0), end=at(120), kind=ChangeKind.MAINTENANCE)
    run = Run(Engine(NO_WARMUP, changes=[change]))
    down = alert(10, "db-1", "service-down", domain=Domain.OPS, source="zabbix")
    attack = alert(11, "db-1", "sql-injection")
    after = alert(130, "db-1", "service-down", domain=Domain.OPS, source="zabbix")
    run.push(down, attack)
    assert "maintenance CHG-42 on db-1 until" in run.decisions[down.id].reason
    assert attack.id not in run.decisions  # security evidence is still weighed
    run.push(after)
    assert after.id not in run.decisions or "CHG-42" not in run.decisions[after.id].reason


def test_authorised_scanner_is_noise() -> None:
    scan = Change(id="SCAN-1", start=at(0), end=at(60), kind=ChangeKind.SCAN, source="10.9.9.9")
    run = Run(Engine(NO_WARMUP, changes=[scan]))
    probe = alert(5, "web-1", "port-scan", src_ip="10.9.9.9")
    run.push(probe)
    assert run.decisions[probe.id].disposition is Disposition.NOISE
    assert "authorised scan SCAN-1" in run.decisions[probe.id].reason


def test_analyst_false_positive_verdict_is_named_in_the_reason() -> None:
    verdict = Feedback(
        id="FP-7",
        kind=FeedbackKind.FALSE_POSITIVE,
        time=at(0),
        asset="web-1",
        signature="noisy-rule",
        analyst="ana",
    )
    run = Run(Engine(NO_WARMUP, feedback=[verdict]))
    hit = alert(1, signature="noisy-rule")
    other = alert(1, asset="web-2", signature="noisy-rule")
    run.push(hit, other)
    assert run.decisions[hit.id].reason.startswith("analyst verdict false_positive FP-7 by ana")
    assert other.id not in run.decisions  # scoped to the asset


def test_suppression_and_severity_rules() -> None:
    rules = [
        SuppressRule(id="quiet-av", type="suppress", match=Match(title="*signature update*"), reason="AV updates"),
        SeverityRule(id="crit", type="severity", match=Match(signature="mimikatz*"), severity=Severity.CRITICAL),
    ]
    run = Run(Engine(NO_WARMUP, rules=rules))  # type: ignore[arg-type]
    av = alert(0, title="Antivirus signature update done")
    run.push(av)
    assert run.decisions[av.id].reason == "suppressed by rule quiet-av: AV updates"
    crit = alert(1, signature="mimikatz-detected", source="edr")
    out = run.push(crit)
    events = [e for e in out if isinstance(e, IncidentEvent)]
    assert events and events[0].severity is Severity.CRITICAL


def test_threshold_rule_turns_routine_failures_into_evidence() -> None:
    rule = ThresholdRule(
        id="bruteforce",
        type="threshold",
        match=Match(signature="login-failed"),
        count=20,
        timespan=timedelta(minutes=5),
        severity=Severity.HIGH,
        tactic="credential-access",
    )
    run = Run(Engine(NO_WARMUP, rules=[rule]))
    routine_history(run, "mail", "login-failed")
    burst = [alert(1 + i * 0.1, "mail", "login-failed", source="mail") for i in range(25)]
    run.push(*burst)
    run.push(alert(4, "mail", "new-admin-session", source="edr", severity=Severity.HIGH))
    kinds = {d.disposition for d in run.decisions.values() if d.alert_id in {a.id for a in burst[19:]}}
    assert Disposition.INCIDENT in kinds
    assert any("rule bruteforce: 20 matching alerts in 5m" in r for e in run.events for r in e.reasons)


def test_quiet_incident_resolves_and_reopens_with_same_id() -> None:
    cfg = replace(NO_WARMUP, quiet_period=timedelta(minutes=30), reopen_window=timedelta(hours=2))
    run = Run(Engine(cfg))
    run.push(*(alert(i * 0.1, signature=f"s{i}", source=f"d{i}", severity=Severity.HIGH) for i in range(3)))
    opened = run.events[0]
    run.advance(40)
    assert run.events[-1].event is LifecycleEvent.RESOLVED
    assert run.events[-1].resolved_at == at(0.2) + timedelta(minutes=30)
    back = alert(60, signature="s-new", severity=Severity.HIGH)
    run.push(back)
    run.flush()
    assert run.decisions[back.id].incident_id == opened.incident_id
    ids = [e for e in run.events if e.incident_id == opened.incident_id]
    assert [e.event for e in ids].count(LifecycleEvent.OPENED) == 1
    assert [e.version for e in ids] == sorted(e.version for e in ids)
    assert ids[-1].resolved_at is None


def test_storm_updates_are_coalesced() -> None:
    run = Run(Engine(NO_WARMUP))
    run.push(*(alert(0, signature=f"s{i}", source=f"d{i}", severity=Severity.HIGH) for i in range(3)))
    storm = [alert(1 + i * 0.001, signature="flood") for i in range(5000)]
    run.push(*storm)
    run.flush()
    assert sum(1 for d in run.decisions.values() if d.disposition is Disposition.INCIDENT) == 5003
    updates = [e for e in run.events if e.event is LifecycleEvent.UPDATED]
    assert 1 <= len(updates) <= 12  # 5 minutes of storm at one update per 30 s, plus the flush
    assert updates[-1].alert_count == 5003
    assert len(updates[-1].alert_ids) <= NO_WARMUP.max_alert_ids_per_event


def test_consequences_join_the_upstream_incident() -> None:
    inventory = [
        Asset(id="sw-3", criticality=5, owner="netops"),
        *(Asset(id=f"ap-{i}", links=(Link(to="sw-3", kind=LinkKind.UPSTREAM),)) for i in range(5)),
    ]
    run = Run(Engine(NO_WARMUP, assets=inventory))
    root = [alert(0, "sw-3", "link-down", domain=Domain.OPS, source="snmp", severity=Severity.CRITICAL)]
    run.push(*root)
    children = [alert(1, f"ap-{i}", "link-down", domain=Domain.OPS, source="snmp") for i in range(5)]
    run.push(*children)
    inc_id = run.events[0].incident_id
    for child in children:
        decision = run.decisions[child.id]
        assert decision.incident_id == inc_id
        assert "consequence of sw-3 link-down" in decision.reason
    run.flush()
    assert run.engine.incidents()[0].owners == ("netops", "noc")


def test_flapping_condition_is_one_incident() -> None:
    run = Run(Engine(NO_WARMUP))
    for i in range(10):
        run.push(alert(i * 2, "r1", "bgp-peer", domain=Domain.OPS, source="syslog"))
        run.push(alert(i * 2 + 1, "r1", "bgp-peer", domain=Domain.OPS, source="syslog", status=Status.RESOLVED))
    run.flush()
    incidents = run.engine.incidents()
    assert len(incidents) == 1
    assert "flapping" in incidents[0].summary
    assert len(run.decisions) == 20


def test_redelivered_alert_gets_no_second_decision() -> None:
    run = Run(Engine(NO_WARMUP))
    a = alert(0, alert_id="soc.alerts:0:17", signature="x", severity=Severity.CRITICAL)
    run.push(a)
    assert run.engine.on_alert(a) == []
    assert run.engine.on_invalid("soc.alerts:0:17", "garbage") == []


def test_converged_incident_when_ops_symptom_meets_security_evidence() -> None:
    run = Run(Engine(NO_WARMUP))
    run.push(*(alert(i * 0.1, "db-1", f"s{i}", source=f"d{i}", severity=Severity.HIGH) for i in range(4)))
    cpu = alert(5, "db-1", "cpu-high", domain=Domain.OPS, source="prometheus")
    run.push(cpu)
    assert run.decisions[cpu.id].incident_kind is IncidentKind.CONVERGED
    run.flush()
    assert run.engine.incidents()[0].owners == ("noc", "soc")


def test_same_input_gives_same_output() -> None:
    def once() -> list[str]:
        run = Run(Engine(NO_WARMUP))
        for i in range(200):
            run.push(alert(i * 0.5, f"h{i % 7}", f"s{i % 13}", source=f"d{i % 3}", alert_id=f"id{i}"))
        run.flush()
        return [d.model_dump_json() for d in run.decisions.values()] + [e.model_dump_json() for e in run.events]

    assert once() == once()


def test_idle_and_excess_assets_are_evicted_but_live_ones_kept() -> None:
    cfg = replace(NO_WARMUP, max_assets=50, max_windows=20, max_idle=timedelta(days=1))
    run = Run(Engine(cfg))
    live = [alert(0, "keep-me", f"s{i}", source=f"d{i}", severity=Severity.HIGH) for i in range(3)]
    run.push(*live)
    for i in range(1000):
        run.push(alert(1 + i * 0.01, f"flood-{i}", "probe", severity=Severity.INFO))
    engine = run.engine
    assert engine.tracked_assets() <= 51
    assert engine.baseline.assets() <= 60
    assert engine.stats.evicted_assets >= 900
    assert "keep-me" in engine._recent_assets  # its incident is live
    assert engine.stats.windows_closed_early >= 900
    early = [d for d in run.decisions.values() if "closed early (more than 20 open windows)" in d.reason]
    assert len(early) >= 900
    run.push(alert(3 * 24 * 60, "late-comer", "x"))  # two idle days later
    assert engine.tracked_assets() <= 3
    run.flush()
    assert len(run.decisions) == 1004


def test_window_spanning_two_live_campaigns_merges_them() -> None:
    run = Run(Engine(NO_WARMUP))
    run.push(*(alert(i * 0.1, "web-1", f"a{i}", source=f"d{i}", severity=Severity.HIGH) for i in range(3)))
    run.push(*(alert(1 + i * 0.1, "db-1", f"b{i}", source=f"d{i}", severity=Severity.HIGH) for i in range(3)))
    first, second = (e for e in run.events if e.event is LifecycleEvent.OPENED)
    assert first.incident_id != second.incident_id
    # a third asset whose window carries signatures of both incidents ties them together
    run.push(alert(2, "app-1", "a0", severity=Severity.HIGH), alert(2.1, "app-1", "b0", severity=Severity.HIGH))
    run.push(alert(2.2, "app-1", "c0", severity=Severity.HIGH, source="edr"))
    merged = [e for e in run.events if e.event is LifecycleEvent.MERGED]
    assert [(e.incident_id, e.merged_into) for e in merged] == [(second.incident_id, first.incident_id)]
    run.engine.on_context(
        Feedback(id="ACK-1", kind=FeedbackKind.ACK, time=at(3), incident_id=first.incident_id, analyst="bo")
    )
    run.advance(10)
    run.flush()
    final = {i.incident_id: i for i in run.engine.incidents()}
    assert final[second.incident_id].merged_into == first.incident_id
    assert set(final[first.incident_id].assets) == {"web-1", "db-1", "app-1"}
    assert final[first.incident_id].alert_count == 9
    last = [e for e in run.events if e.incident_id == first.incident_id][-1]
    assert any(r.startswith("acknowledged by bo") for r in last.reasons)


def test_an_incident_summary_names_its_three_most_frequent_signatures_ties_by_name() -> None:
    inc = IncidentState(
        id="INC-x", assets=["web"], opened_at=0.0, root=RootCause(asset="web", alert_id="a"),
        root_signature="S", owners=set(),
    )
    assert "0 signatures ()" in inc.summary()
    inc.signatures.update({"b": 2, "a": 2, "c": 1})
    assert "3 signatures (a x2, b x2, c x1)" in inc.summary()
    # a tie at the third place goes by name; counts above it win whatever their name
    inc.signatures.update({"z": 9, "d": 1, "e": 2, "f": 5})
    assert "7 signatures (z x9, f x5, a x2)" in inc.summary()
    inc.signatures.update({"z": 2, "f": 2})
    assert "7 signatures (a x2, b x2, e x2)" in inc.summary()
