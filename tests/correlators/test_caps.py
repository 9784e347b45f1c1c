"""State caps of the engine under floods: bounded state, counted, and one decision per alert."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from correlators.config import EngineConfig
from correlators.engine import Engine
from correlators.types import Output
from schemas.models import Alert, Decision, Disposition, Domain, IncidentEvent, Severity

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _alert(i: int, asset: str, *, seconds: float, signature: str = "odd", severity: Severity = Severity.LOW) -> Alert:
    return Alert(
        id=f"a{i}",
        source="ids",
        domain=Domain.SECURITY,
        time=T0 + timedelta(seconds=seconds),
        asset=asset,
        signature=signature,
        title=signature,
        severity=severity,
    )


def _decisions(outputs: list[Output]) -> list[Decision]:
    return [o for o in outputs if isinstance(o, Decision)]


def test_flood_of_new_assets_never_tracks_more_than_max_assets() -> None:
    cfg = replace(EngineConfig(), max_assets=200, max_windows=50)
    engine = Engine(cfg, default_rules=True)
    decided: Counter[str] = Counter()
    for i in range(5_000):
        for d in _decisions(engine.on_alert(_alert(i, f"flood-{i}", seconds=i * 0.01, signature=f"s{i % 7}"))):
            decided[d.alert_id] += 1
        assert engine.tracked_assets() <= cfg.max_assets
        assert engine.baseline.assets() <= cfg.max_assets  # nothing kept for untracked assets
        assert len(engine._windows) <= cfg.max_windows
    for d in _decisions(engine.flush()):
        decided[d.alert_id] += 1
    assert len(decided) == 5_000 and set(decided.values()) == {1}  # every alert exactly once
    assert engine.stats.assets_over_cap == engine.stats.evicted_assets == 5_000 - cfg.max_assets
    assert engine.stats.windows_closed_early == 5_000 - cfg.max_windows


def test_eviction_stays_cheap_when_most_assets_are_pinned() -> None:
    """Assets with a waiting window cannot be evicted: rotating all of them on every alert was
    quadratic (and a plain dict emptied from the front made each step scan its holes)."""
    cfg = replace(EngineConfig(), max_assets=1_000, max_windows=100_000)
    engine = Engine(cfg)
    started = time.process_time()
    for i in range(10_000):
        engine.on_alert(_alert(i, f"pinned-{i}", seconds=i * 0.01))
    elapsed = time.process_time() - started
    assert len(engine._windows) == 10_000  # all pinned: the cap gives way to waiting evidence
    assert engine.tracked_assets() == 10_000
    assert elapsed < 10.0, f"{elapsed:.1f} CPU s for 10k alerts"  # about 30 s before the fix


def test_the_oldest_window_closes_early_whatever_happened_since() -> None:
    """At `max_windows` the window opened first closes early: later alerts on it do not make it
    younger, windows closed in between leave no trace, and a restore keeps the order."""
    cfg = replace(EngineConfig(), warmup=timedelta(0), max_windows=3)
    engine = Engine(cfg)
    early: list[str] = []

    def push(i: int, asset: str, seconds: float, into: Engine) -> None:
        for d in _decisions(into.on_alert(_alert(i, asset, seconds=seconds))):
            if "closed early" in d.reason:
                early.append(d.alert_id)

    for i, asset in enumerate(["w1", "w2", "w3"]):
        push(i, asset, i, engine)
    push(3, "w1", 3, engine)  # busy, yet still the oldest
    push(4, "w4", 4, engine)
    assert early == ["a0", "a3"]  # both of w1's alerts
    push(5, "w2", 5, engine)
    restored = Engine.restore(engine.snapshot())
    push(6, "w5", 6, restored)
    assert early == ["a0", "a3", "a1", "a5"]  # then w2's
    push(7, "w6", 7, restored)
    assert early[4:] == ["a2"]  # then w3's
    assert list(restored._windows) == ["w4", "w5", "w6"]
    assert restored.stats.windows_closed_early == 3


def test_idle_assets_are_forgotten_after_max_idle() -> None:
    cfg = replace(EngineConfig(), max_idle=timedelta(hours=1), session_gap=timedelta(minutes=1))
    engine = Engine(cfg)
    for i in range(100):
        engine.on_alert(_alert(i, f"old-{i}", seconds=i))
    engine.on_alert(_alert(1000, "late-comer", seconds=3 * 3600))
    assert engine.tracked_assets() == 1
    assert engine.stats.evicted_assets == 100 and engine.stats.assets_over_cap == 0  # idle, not a cap


def test_full_window_and_capped_incident_lists_are_counted() -> None:
    cfg = replace(
        EngineConfig(), warmup=timedelta(0), max_pending_per_asset=5, max_alert_ids_per_event=3, open_threshold=1e9
    )
    engine = Engine(cfg)
    outputs: list[Output] = []
    for i in range(8):
        outputs += engine.on_alert(_alert(i, "busy", seconds=i, signature=f"sig-{i}"))
    full = [d for d in _decisions(outputs) if "full" in d.reason]
    assert len(full) == 3 and all(d.disposition is Disposition.NOISE for d in full)
    assert engine.stats.window_full == 3

    engine = Engine(replace(cfg, max_pending_per_asset=100, open_threshold=14.0, update_interval=timedelta(0)))
    outputs = []
    for i in range(10):
        outputs += engine.on_alert(_alert(i, "web-1", seconds=i, signature=f"attack-{i}", severity=Severity.CRITICAL))
    events = [o for o in outputs if isinstance(o, IncidentEvent)]
    assert events and max(e.alert_ids_total for e in events) > 3
    assert all(len(e.alert_ids) <= 3 for e in events)
    assert engine.stats.incidents_capped == 1  # one incident, counted once


def test_cap_counters_survive_a_snapshot() -> None:
    cfg = replace(EngineConfig(), max_assets=10, max_windows=5)
    engine = Engine(cfg)
    for i in range(50):
        engine.on_alert(_alert(i, f"a-{i}", seconds=i))
    restored = Engine.restore(engine.snapshot())
    for name in ("evicted_assets", "assets_over_cap", "windows_closed_early", "window_full", "incidents_capped"):
        assert getattr(restored.stats, name) == getattr(engine.stats, name), name
    assert restored.stats.assets_over_cap > 0
