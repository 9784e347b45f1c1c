"""Engine caps reach `socnoc_caps_hit_total` and a log line at most once per interval per cap."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from correlators.config import EngineConfig
from correlators.engine import Engine
from schemas.models import Alert, Domain, Severity
from streams.caps import CapWatch
from streams.metrics import Metrics

T0 = datetime(2024, 3, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _hits(registry: CollectorRegistry, cap: str) -> float:
    return registry.get_sample_value("socnoc_caps_hit_total", {"cap": cap}) or 0.0


def _flood(engine: Engine, start: int, count: int) -> None:
    for i in range(start, start + count):
        engine.on_alert(
            Alert(id=f"a{i}", source="ids", domain=Domain.SECURITY, time=T0 + timedelta(seconds=i),
                  asset=f"host-{i}", signature="odd", title="odd", severity=Severity.LOW)
        )


def test_engine_caps_become_metrics_and_rate_limited_logs(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    clock = Clock()
    watch = CapWatch(Metrics.create(registry), log_every_s=60.0, clock=clock)
    engine = Engine(replace(EngineConfig(), max_assets=10, max_windows=4))
    watch.observe(3, engine)  # the first sight of a correlator sets its baseline
    caplog.set_level(logging.WARNING, logger="streams.caps")

    _flood(engine, 0, 30)
    watch.observe(3, engine)
    assert _hits(registry, "max_assets") == engine.stats.assets_over_cap == 20
    assert _hits(registry, "max_windows") == engine.stats.windows_closed_early == 26
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert any("state cap max_assets reached 20 times (partitions 3)" in m and "max_assets=10" in m for m in lines)

    for batch in range(10):  # a flood: many batches within the interval -> no new lines
        clock.now += 1
        _flood(engine, 100 + batch * 10, 10)
        watch.observe(3, engine)
    assert len(caplog.records) == 2
    assert _hits(registry, "max_assets") == 120

    clock.now += 60  # the next observation after the interval logs the total since the last line
    watch.observe(3, engine)
    assert len(caplog.records) == 4
    assert "reached 100 times in the last 70 s" in caplog.records[2].getMessage()


def test_a_restored_correlator_does_not_count_its_past() -> None:
    registry = CollectorRegistry()
    watch = CapWatch(Metrics.create(registry))
    engine = Engine(replace(EngineConfig(), max_assets=5))
    _flood(engine, 0, 20)
    watch.observe(0, engine)
    watch.observe(0, Engine.restore(engine.snapshot()))  # same counters, a new object: baseline
    assert _hits(registry, "max_assets") == 0
    watch.forget(0)


def test_oversize_records_are_a_cap_too(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    watch = CapWatch(Metrics.create(registry), clock=Clock())
    caplog.set_level(logging.WARNING, logger="streams.caps")
    for _ in range(5):
        watch.record_too_large(partition=1)
    assert _hits(registry, "max_record_bytes") == 5
    assert len(caplog.records) == 1 and "RecordTooLarge" in caplog.records[0].getMessage()


def test_rule_group_cap_is_reported() -> None:
    from schemas.rules import default_rules

    registry = CollectorRegistry()
    watch = CapWatch(Metrics.create(registry), log_every_s=60.0, clock=Clock())
    engine = Engine(replace(EngineConfig(), max_rule_groups=5), rules=list(default_rules()))
    watch.observe(0, engine)
    for i in range(200):
        engine.on_alert(
            Alert(id=f"r{i}", source="ids", domain=Domain.SECURITY, time=T0 + timedelta(seconds=i),
                  asset="web-1", signature=f"s{i % 3}", title="t", severity=Severity.LOW, src_ip=f"10.0.{i}.1")
        )
    watch.observe(0, engine)
    assert engine.stats.rule_groups_over_cap > 0
    assert _hits(registry, "max_rule_groups") == engine.stats.rule_groups_over_cap
