"""One correlation partition without Kafka: engine calls in log order, watermarks, checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from correlators.config import EngineConfig
from correlators.engine import Engine
from schemas.context import Asset
from schemas.models import Alert, DeadLetter, Decision, Disposition, Domain, IncidentEvent, Severity
from schemas.rules import Match, SuppressRule
from streams.partition import Processor, Snapshotter, SourceMark, effective_watermark
from streams.records import (
    AlertItem,
    ContextItem,
    FlushItem,
    InvalidItem,
    Item,
    RulesItem,
    TickItem,
    decode_item,
    encode_item,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def alert(minutes: float, asset: str = "web-1", signature: str = "sig", **kw: Any) -> Alert:
    base: dict[str, Any] = dict(
        id=f"a-{asset}-{signature}-{minutes}",
        source="ids",
        domain=Domain.SECURITY,
        time=T0 + timedelta(minutes=minutes),
        asset=asset,
        signature=signature,
        severity=Severity.HIGH,
    )
    base.update(kw)
    return Alert(**base)


class Recorder:
    """A correlator that records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_alert(self, a: Alert) -> list[Any]:
        self.calls.append(("alert", a.id))
        return [Decision(alert_id=a.id, disposition=Disposition.NOISE, reason="r")]

    def on_invalid(self, alert_id: str, reason: str) -> list[Any]:
        self.calls.append(("invalid", alert_id))
        if any(c == ("invalid", alert_id) for c in self.calls[:-1]):
            return []
        return [Decision(alert_id=alert_id, disposition=Disposition.INVALID, reason=reason)]

    def on_context(self, item: Any) -> None:
        self.calls.append(("context", item.id))

    def advance(self, wm: datetime) -> list[Any]:
        self.calls.append(("advance", wm))
        return []

    def flush(self) -> list[Any]:
        self.calls.append(("flush", None))
        return []

    def incidents(self) -> list[Any]:
        return []

    def replace_rules(self, rules: list[Any]) -> None:
        self.calls.append(("rules", len(rules)))


def _invalid(alert_id: str = "t:0:7", decide: bool = True) -> InvalidItem:
    return InvalidItem(alert_id, "DecodeError", "DecodeError: bad", b"\x00", "t", 0, 7, T0, decide)


def test_advances_before_an_alert_that_moves_event_time_like_replay() -> None:
    rec = Recorder()
    proc = Processor(rec)  # type: ignore[arg-type]
    proc.feed(AlertItem(alert(0)))
    proc.feed(AlertItem(alert(5, signature="b")))
    proc.feed(AlertItem(alert(3, signature="late")))  # out of order: no advance backwards
    assert rec.calls == [
        ("advance", T0),
        ("alert", "a-web-1-sig-0"),
        ("advance", T0 + timedelta(minutes=5)),
        ("alert", "a-web-1-b-5"),
        ("alert", "a-web-1-late-3"),
    ]


def test_invalid_input_is_decided_and_dead_lettered_once() -> None:
    proc = Processor(Recorder())  # type: ignore[arg-type]
    first = proc.feed(_invalid())
    assert [type(o) for o in first] == [Decision, DeadLetter]
    assert proc.feed(_invalid()) == []  # a redelivery: no second decision, no second letter
    bad_context = proc.feed(_invalid("ctx:0:1", decide=False))
    assert [type(o) for o in bad_context] == [DeadLetter]


def test_effective_watermark_follows_the_slowest_active_source() -> None:
    assert effective_watermark({}) is None
    marks = {"a:0": SourceMark(100.0, False), "a:1": SourceMark(50.0, False)}
    assert effective_watermark(marks) == 50.0
    marks["a:1"] = SourceMark(9e9, True)  # idle sources do not hold the others back
    assert effective_watermark(marks) == 100.0
    marks["a:0"] = SourceMark(8e9, True)  # all idle: the wall-clock watermark
    assert effective_watermark(marks) == 9e9


def test_ticks_only_move_the_watermark_forward() -> None:
    rec = Recorder()
    proc = Processor(rec)  # type: ignore[arg-type]
    t1 = (T0 + timedelta(minutes=10)).timestamp()
    proc.feed(TickItem("in:0", t1))
    proc.feed(TickItem("in:1", t1 - 60))  # a slower source joins: no step back
    proc.feed(AlertItem(alert(1)))  # older than the watermark: no advance
    proc.feed(TickItem("in:1", t1 + 60))  # in:0 is now the slowest: still at t1
    proc.feed(TickItem("in:0", t1 + 120))
    advances = [c for c in rec.calls if c[0] == "advance"]
    assert advances == [("advance", T0 + timedelta(minutes=10)), ("advance", T0 + timedelta(minutes=11))]


def test_context_flush_and_rules_reach_the_correlator() -> None:
    rec = Recorder()
    proc = Processor(rec)  # type: ignore[arg-type]
    proc.feed(ContextItem(Asset(id="web-1")))
    rule = SuppressRule(id="r", type="suppress", match=Match(signature="x"), reason="why")
    proc.feed(RulesItem((rule,)))
    proc.feed(FlushItem())
    assert rec.calls == [("context", "web-1"), ("rules", 1), ("flush", None)]


def _engine() -> Engine:
    return Engine(EngineConfig(warmup=timedelta(0)))


def _snap() -> Snapshotter:
    return Snapshotter(lambda c, f: c.snapshot(f), Engine.restore)  # type: ignore[attr-defined]


def _stream() -> list[Item]:
    items: list[Item] = [ContextItem(Asset(id="web-1", aliases=("10.0.0.5",), criticality=5))]
    for i in range(40):
        items.append(AlertItem(alert(i * 0.5, signature=f"s{i % 7}", severity=Severity.HIGH)))
        if i % 10 == 9:
            items.append(TickItem("in:0", (T0 + timedelta(minutes=i * 0.5)).timestamp()))
    items.append(_invalid())
    items.append(TickItem("in:0", (T0 + timedelta(hours=5)).timestamp(), idle=True))
    return items


def test_a_restored_partition_continues_exactly_like_an_uninterrupted_one() -> None:
    items = [decode_item(e.value, e.headers) for e in map(encode_item, _stream())]
    whole = Processor(_engine())
    expected = [o for item in items for o in whole.feed(item)]
    assert any(isinstance(o, IncidentEvent) for o in expected)

    half = len(items) // 2
    before = Processor(_engine())
    got = [o for item in items[:half] for o in before.feed(item)]
    restored = Processor.load(before.dump(_snap()), _snap())
    assert restored.watermark == before.watermark and restored.sources == before.sources
    got += [o for item in items[half:] for o in restored.feed(item)]
    assert got == expected
