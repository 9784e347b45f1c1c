"""Engine state that used to grow for as long as the stream ran: resolved incidents and
correlation-rule groups (issue 7, "bounded under floods")."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from correlators.config import EngineConfig
from correlators.engine import Engine
from schemas.models import Alert, Domain, IncidentEvent, LifecycleEvent, Severity
from schemas.rules import DistinctRule, RuleKind, SequenceRule, ThresholdRule
from schemas.rules import Match as RuleMatch
from streams.correlator import worker_context
from streams.settings import Settings

T0 = datetime(2024, 3, 1, tzinfo=UTC)

# short lifecycle so a long stream holds many incidents
CFG = EngineConfig(
    warmup=timedelta(0),
    quiet_period=timedelta(minutes=10),
    reopen_window=timedelta(minutes=30),
    retain_resolved=timedelta(hours=1),
)


def _alert(
    i: int, asset: str, seconds: float, *, signature: str = "odd", src_ip: str | None = None,
    severity: Severity = Severity.CRITICAL,
) -> Alert:
    return Alert(
        id=f"a{i}", source="ids", domain=Domain.SECURITY, time=T0 + timedelta(seconds=seconds), asset=asset,
        signature=signature, title=signature, severity=severity, src_ip=src_ip,
    )


def _incident_stream(engine: Engine, n: int, step: float = 600.0) -> int:
    """One new incident every `step` seconds (own asset, own signature); returns how many opened."""
    opened = 0
    for i in range(n):
        alert = _alert(i, f"host-{i}", i * step, signature=f"sig-{i}", src_ip=f"10.{i // 256 % 256}.{i % 256}.1")
        out = engine.on_alert(alert)
        opened += sum(isinstance(o, IncidentEvent) and o.event is LifecycleEvent.OPENED for o in out)
    return opened


def test_long_stream_keeps_incidents_and_indexes_bounded() -> None:
    engine = Engine(CFG, default_rules=True)
    opened = _incident_stream(engine, 5_000)
    assert opened == 5_000  # a month of event time, one incident every 10 minutes
    # live ones plus those resolved within the last hour: (10 min quiet + 1 h) / 10 min, and some slack
    assert len(engine._incidents) <= 10
    assert len(engine._sig_incident) <= 10
    assert len(engine._open_by_asset) <= 10
    assert len(engine._prune_heap) <= 10
    assert engine.stats.incidents_pruned == opened - len(engine._incidents)
    # rule groups (the shipped pack groups by src_ip and asset) only for the last rule timespans
    assert engine.rules.groups() <= 4 * 13  # 4 rules, the longest window 2 h = 12 alerts
    assert engine.stats.rule_groups_expired > 0 and engine.stats.rule_groups_over_cap == 0


def test_without_retention_every_incident_stays() -> None:
    engine = Engine(replace(CFG, retain_resolved=None))
    assert _incident_stream(engine, 300) == 300
    assert len(engine._incidents) == 300 and len(engine.incidents()) == 300
    assert engine.stats.incidents_pruned == 0


def test_asset_with_only_pruned_incidents_is_evicted() -> None:
    def run(cfg: EngineConfig) -> Engine:
        engine = Engine(cfg)
        engine.on_alert(_alert(0, "victim", 0))
        assert "victim" in engine._open_by_asset
        engine.advance(T0 + timedelta(hours=3))  # resolved after 10 min quiet, retained 1 h
        for i in range(1, 20):  # other assets, routine low alerts: no incidents
            engine.on_alert(_alert(i, f"other-{i}", 3 * 3600 + i, severity=Severity.INFO, signature="s"))
        engine.flush()
        return engine

    kept = run(replace(CFG, retain_resolved=None, max_assets=5))
    assert "victim" in kept._recent_assets  # pinned by its resolved incident, forever
    pruned = run(replace(CFG, max_assets=5))
    assert pruned.stats.incidents_pruned == 1 and not pruned._incidents
    assert "victim" not in pruned._recent_assets and "victim" not in pruned._open_by_asset
    assert pruned.stats.evicted_assets > kept.stats.evicted_assets


def test_a_reopen_after_retention_opens_a_new_incident() -> None:
    cfg = replace(CFG, reopen_window=timedelta(hours=12), retain_resolved=timedelta(minutes=20))
    engine = Engine(cfg)
    first = engine.on_alert(_alert(0, "web", 0))
    engine.advance(T0 + timedelta(hours=1))  # resolved at 10 min, pruned at 30 min
    again = engine.on_alert(_alert(1, "web", 3700, signature="other"))
    ids = {o.incident_id for o in first + again if isinstance(o, IncidentEvent) and o.event is LifecycleEvent.OPENED}
    assert len(ids) == 2 and engine.stats.incidents_pruned == 1


def _pack() -> list[ThresholdRule | DistinctRule | SequenceRule]:
    match = RuleMatch(signature="*")
    span = timedelta(minutes=5)
    return [
        ThresholdRule(id="t", type=RuleKind.THRESHOLD, match=match, count=3, timespan=span, group_by=("src_ip",)),
        DistinctRule(
            id="d", type=RuleKind.DISTINCT, match=match, field="signature", count=3, timespan=span,
            group_by=("src_ip",),
        ),
        SequenceRule(
            id="s", type=RuleKind.SEQUENCE, steps=(match, RuleMatch(signature="never")), timespan=span,
            group_by=("src_ip",),
        ),
    ]


def test_rule_groups_expire_and_are_capped() -> None:
    engine = Engine(replace(CFG, max_rule_groups=100), rules=list(_pack()))
    # a flood of new source addresses, 1 s apart: the 5 min window holds ~300 groups per rule
    for i in range(20_000):
        engine.on_alert(_alert(i, "web", i, severity=Severity.INFO, signature=f"s{i % 5}", src_ip=f"ip-{i}"))
        assert engine.rules.groups() <= 3 * 100
    assert engine.stats.rule_groups_over_cap > 0
    # far apart in time: the window expiry alone keeps them few, no cap reached
    engine = Engine(CFG, rules=list(_pack()))
    for i in range(5_000):
        engine.on_alert(_alert(i, "web", i * 120, severity=Severity.INFO, signature=f"s{i % 5}", src_ip=f"ip-{i}"))
        assert engine.rules.groups() <= 3 * (5 * 60 // 120 + 2 + 5 * 60 // 120)
    assert engine.stats.rule_groups_over_cap == 0 and engine.stats.rule_groups_expired > 9_000


def test_expired_groups_change_no_finding() -> None:
    """A group past the rule's window is dropped only when no alert on time could still see it."""
    engine = Engine(CFG, rules=list(_pack()))
    engine.on_alert(_alert(0, "web", 0, severity=Severity.INFO, src_ip="x"))
    engine.on_alert(_alert(1, "web", 200, severity=Severity.INFO, src_ip="x"))
    engine.advance(T0 + timedelta(seconds=400))  # within 5 min + allowed lateness of the last event
    assert ("t", "x") in engine.rules.counting_state()
    engine.advance(T0 + timedelta(seconds=200 + 300 + 300 + 1))
    assert ("t", "x") not in engine.rules.counting_state() and ("s", "x") not in engine.rules.sequence_state()


def test_snapshot_round_trips_the_new_settings_and_state() -> None:
    cfg = replace(CFG, max_rule_groups=7)
    engine = Engine(cfg, rules=list(_pack()))
    for i in range(30):
        engine.on_alert(_alert(i, f"h{i % 3}", i * 60, src_ip=f"ip-{i % 11}", signature=f"s{i % 4}"))
    engine.advance(T0 + timedelta(hours=2))
    restored = Engine.restore(engine.snapshot())
    assert restored.cfg == cfg
    assert restored.snapshot() == engine.snapshot()
    assert restored.rules.touched_state() == engine.rules.touched_state()


def test_snapshot_of_an_earlier_version_still_loads() -> None:
    engine = Engine(CFG, rules=list(_pack()))
    for i in range(10):
        engine.on_alert(_alert(i, "web", i * 30, src_ip=f"ip-{i % 3}", signature=f"s{i % 4}"))
    doc = json.loads(engine.snapshot())
    for key in ("retain_resolved", "max_rule_groups"):
        del doc["config"][key]
    del doc["rule_touched"]
    doc["stats"] = doc["stats"][:7]
    old = Engine.restore(json.dumps(doc).encode())
    assert old.cfg.retain_resolved is None and old.cfg.max_rule_groups == EngineConfig().max_rule_groups
    assert old.rules.groups() == engine.rules.groups()
    assert sorted(old.rules.touched_state()) == sorted(engine.rules.touched_state())


def test_the_worker_forgets_resolved_incidents_an_hour_after_the_reopen_window(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SOCNOC_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SOCNOC_REOPEN_WINDOW", "2h")
    config = worker_context(Settings()).config
    assert config is not None
    assert config.reopen_window == timedelta(hours=2) and config.retain_resolved == timedelta(hours=3)
