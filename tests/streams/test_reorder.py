"""Event-time order across input partitions (`streams.reorder`) inside one correlation partition."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from datetime import timedelta

import orjson
import pytest

from correlators.config import EngineConfig
from correlators.engine import Engine
from schemas.errors import SnapshotError
from schemas.models import Decision, IncidentEvent, Severity
from streams.partition import Processor, Snapshotter
from streams.records import AlertItem, FlushItem, Item, TickItem, decode_item, encode_item
from streams.reorder import Reorder
from tests.streams.test_partition import T0, alert


def _engine() -> Engine:
    return Engine(EngineConfig(warmup=timedelta(0)))


def _snap() -> Snapshotter:
    return Snapshotter(lambda c, f: c.snapshot(f), Engine.restore)  # type: ignore[attr-defined]


def _timeline() -> dict[str, list[AlertItem]]:
    """Two input partitions over the same hour: an attack on web-1 in `in:0`, other hosts in `in:1`."""
    a = [alert(i * 1.0, "web-1", f"s{i % 7}", severity=Severity.HIGH) for i in range(60)]
    b = [alert(i * 1.0 + 0.5, f"db-{i % 3}", f"r{i % 2}", severity=Severity.LOW) for i in range(60)]
    return {
        "in:0": [AlertItem(x, source="in:0") for x in a],
        "in:1": [AlertItem(x, source="in:1") for x in b],
    }


def _raced() -> list[Item]:
    """What a decoder hands over when `in:1`'s backlog comes in one batch: `in:0` has begun,
    then all of `in:1`, then the rest of `in:0`, and both go quiet."""
    t = _timeline()
    last = t["in:1"][-1].alert.time.timestamp()
    return [
        t["in:0"][0],
        *t["in:1"],
        *t["in:0"][1:],
        TickItem("in:0", t["in:0"][-1].alert.time.timestamp(), quiet=True),
        TickItem("in:1", last, quiet=True),
    ]


def _in_order() -> list[Item]:
    t = _timeline()
    merged = sorted(t["in:0"] + t["in:1"], key=lambda i: i.alert.time)
    return [*merged, FlushItem()]


def test_quiet_sources_release_everything_they_held() -> None:
    processor = Processor(_engine())
    _run(processor, _raced())
    assert len(processor.reorder) == 0


def _decisions(outputs: list[object]) -> dict[str, tuple[str, str | None]]:
    return {o.alert_id: (o.disposition.value, o.incident_id) for o in outputs if isinstance(o, Decision)}


def _run(processor: Processor, items: list[Item]) -> list[object]:
    return [o for item in items for o in processor.feed(item)]


def test_a_partition_racing_ahead_does_not_make_the_other_late() -> None:
    expected = _run(Processor(_engine()), _in_order())
    assert any(isinstance(o, IncidentEvent) for o in expected), "the attack should open an incident"

    ordered = Processor(_engine())
    got = _run(ordered, [*_raced(), FlushItem()])
    assert _decisions(got) == _decisions(expected)
    assert ordered.correlator.stats.late == 0  # type: ignore[attr-defined]
    assert [o for o in got if isinstance(o, IncidentEvent)] == [o for o in expected if isinstance(o, IncidentEvent)]

    # without the buffer (nothing may be held) the same log makes in:0's alerts late
    unordered = Processor(_engine(), reorder=Reorder(max_pending=0))
    raced = _run(unordered, [*_raced(), FlushItem()])
    assert unordered.correlator.stats.late > 0  # type: ignore[attr-defined]
    assert _decisions(raced) != _decisions(expected)


def test_a_single_source_is_never_held_and_a_quiet_one_holds_nothing() -> None:
    reorder = Reorder()
    for i in range(5):
        item = AlertItem(alert(10 - i), source="in:0")  # out of order within one source
        assert list(reorder.push(item)) == [item]
    live = AlertItem(alert(50, "db-1"), source="in:1")
    assert list(reorder.push(live)) == []  # in:0 has only reached minute 10: minute 50 waits
    at = (T0 + timedelta(minutes=20)).timestamp()
    assert list(reorder.progress("in:0", at, quiet=False)) == []  # still sending, at minute 20
    assert list(reorder.progress("in:0", at, quiet=True)) == [live]
    assert len(reorder) == 0
    later = AlertItem(alert(60, "db-1"), source="in:1")
    assert list(reorder.push(later)) == [later]  # in:0 is quiet: nothing to wait for
    back = AlertItem(alert(30), source="in:0")
    assert list(reorder.push(back)) == [back]  # in:0 holds again, from minute 30
    assert list(reorder.push(AlertItem(alert(70, "db-1"), source="in:1"))) == []
    untagged = AlertItem(alert(1))  # no source (e.g. an older record format)
    assert list(reorder.push(untagged)) == [untagged]


def test_the_buffer_is_bounded_in_holding_time_and_count() -> None:
    reorder = Reorder(max_hold_ms=5_000, max_pending=3)
    assert list(reorder.push(AlertItem(alert(0), 1_000, source="slow"))) != []
    held = [AlertItem(alert(1 + i, "db-1"), 1_000 + i, source="fast") for i in range(3)]
    for item in held:
        assert list(reorder.push(item)) == []
    assert len(reorder) == 3
    fourth = AlertItem(alert(4, "db-1"), 2_000, source="fast")
    assert list(reorder.push(fourth)) == [held[0]]  # over the count: the oldest goes
    # `slow` keeps sending, from far behind (a wrong clock): the others wait 5 s at most
    stuck = AlertItem(alert(0.5), 6_002, source="slow")
    assert list(reorder.push(stuck)) == [stuck, held[1]]  # held[1] arrived at 1,001: overdue
    assert len(reorder) == 2  # held[2] arrived at 1,002: 5,000 ms is not over 5,000 ms
    slower = AlertItem(alert(0.6), 6_500, source="slow")
    assert list(reorder.push(slower)) == [slower, held[2]]
    late = AlertItem(alert(0.7), 7_001, source="slow")
    assert list(reorder.push(late)) == [late, fourth]
    assert len(reorder) == 0 and list(reorder.drain()) == []


def test_the_holding_bound_survives_many_alerts() -> None:
    reorder = Reorder(max_hold_ms=100, max_pending=10**9)
    reorder.push(AlertItem(alert(0), 0, source="slow"))
    out = [x for i in range(1, 20_000) for x in reorder.push(AlertItem(alert(1 + i / 1000, "db"), i, source="fast"))]
    assert len(reorder) <= 102  # what arrived in the last 100 ms, at most
    assert out == sorted(out, key=lambda x: x.alert.time)
    assert len(reorder._arrivals) <= 2 * 102  # no stale entries piling up


def test_sources_and_quiet_ticks_cross_the_internal_topic() -> None:
    tick = TickItem("in:3", 1.5e9, quiet=True)
    encoded = encode_item(tick)
    assert decode_item(encoded.value, encoded.headers) == tick
    item = AlertItem(alert(1), 17, source="in:3")
    encoded = encode_item(item)
    assert decode_item(encoded.value, encoded.headers) == item


def test_a_checkpoint_keeps_the_held_alerts_and_restores_exactly() -> None:
    items = [decode_item(e.value, e.headers) for e in map(encode_item, _raced())]
    expected = _run(Processor(_engine()), items)
    for cut in (1, 30, 61, 90, len(items) - 1):
        before = Processor(_engine())
        got = _run(before, items[:cut])
        restored = Processor.load(before.dump(_snap()), _snap())
        assert len(restored.reorder) == len(before.reorder)
        got += _run(restored, items[cut:])
        assert got == expected, cut


@pytest.mark.parametrize(
    "held",
    [
        [],
        {"seq": 1, "newest": None, "sources": {}, "held": [[math.inf, 0, None, None, "{}"]]},
        {"seq": 1, "newest": None, "sources": {}, "held": [[1.0, 0, None, None, "not json"]]},
        {"seq": 1, "newest": None, "sources": {"x": 3}, "held": []},
        {"seq": "x", "newest": None, "sources": {}, "held": []},
        {"seq": 1, "newest": None, "sources": {}, "held": [[1.0]]},
    ],
)
def test_a_corrupt_reorder_buffer_is_a_snapshot_error(held: object) -> None:
    import zlib

    good = Processor(_engine()).dump(_snap())
    plain = zlib.decompress(good)
    size = int.from_bytes(plain[:4], "big")
    head = orjson.loads(plain[4 : 4 + size])
    head["reorder"] = held
    raw = orjson.dumps(head)
    bad = zlib.compress(len(raw).to_bytes(4, "big") + raw + plain[4 + size :])
    with pytest.raises(SnapshotError):
        Processor.load(bad, _snap())


def test_ticks_never_move_the_clock_past_a_held_alert() -> None:
    processor = Processor(_engine())
    t = _timeline()
    processor.feed(t["in:0"][0])  # in:0 holds from minute 0
    for item in t["in:1"][:10]:
        processor.feed(item)  # held: newer than in:0's progress
    assert len(processor.reorder) == 10
    # in:1 ticks its progress (minute 9.5) before in:0 has: the clock waits for the held alerts
    # and for in:0, which is still sending and may deliver alerts older than those
    processor.feed(TickItem("in:1", t["in:1"][9].alert.time.timestamp()))
    processor.feed(TickItem("in:0", t["in:0"][0].alert.time.timestamp()))
    assert processor.watermark == t["in:0"][0].alert.time.timestamp()  # in:0's progress, no further
    out = [o for item in [*t["in:0"][1:], FlushItem()] for o in processor.feed(item)]
    assert processor.correlator.stats.late == 0  # type: ignore[attr-defined]
    decided = {o.alert_id for o in out if isinstance(o, Decision)}
    assert decided >= {i.alert.id for i in t["in:1"][:10]} | {i.alert.id for i in t["in:0"][1:]}


def test_a_partition_taken_over_with_nothing_new_still_goes_quiet() -> None:
    """After a rebalance the new decoder may have no record of a partition to decode: it still
    says the partition is quiet, or alerts held for it would wait for the idle timeout."""
    from streams.decode_stage import SourceClock

    clock = SourceClock(last_record=100.0, last_tick=100.0, quiet_sent=False)
    clock.next_offset = 42  # its fetch position, all caught up
    tick = clock.due(100.6, idle_after=3600.0, wall=5e9, quiet_after=0.5, high=42)
    assert tick is not None and tick.quiet and tick.watermark == 0.0

    processor = Processor(_engine())
    t = _timeline()
    processor.feed(t["in:0"][0])
    processor.feed(TickItem("in:0", t["in:0"][0].alert.time.timestamp()))
    held = t["in:1"][:5]
    for item in held:
        processor.feed(item)
    assert len(processor.reorder) == 5
    mark = processor.sources["in:0"]
    processor.feed(TickItem("in:0", 0.0, quiet=True))
    assert len(processor.reorder) == 0  # released
    assert processor.sources["in:0"] == mark  # and the source's progress is not lowered


def test_announced_sources_hold_the_first_fetch_of_another_until_they_deliver_or_go_quiet() -> None:
    """A decoder announces the input partitions it takes on before any alert: the first
    fetch of `in:1` (its whole backlog) no longer races ahead of `in:0`'s older alerts."""
    t = _timeline()
    in_order = _run(Processor(_engine()), _in_order())
    starts: list[Item] = [TickItem("in:0", 0.0, start=True), TickItem("in:1", 0.0, start=True)]
    last = t["in:1"][-1].alert.time.timestamp()
    backlog: list[Item] = [
        *starts,
        *t["in:1"],  # in:1's fetch first: held, in:0 has delivered nothing yet
        *t["in:0"],
        TickItem("in:0", t["in:0"][-1].alert.time.timestamp(), quiet=True),
        TickItem("in:1", last, quiet=True),
        FlushItem(),
    ]
    items = [decode_item(e.value, e.headers) for e in map(encode_item, backlog)]
    # without the announcement, in:1's backlog goes first and in:0's alerts come late
    _assert_in_order_only_with(items, in_order, lambda tick: tick.start)


def test_an_announced_source_that_stays_empty_stops_holding_when_quiet() -> None:
    reorder = Reorder()
    reorder.start("in:0")
    item = AlertItem(alert(5, "db-1"), source="in:1")
    assert list(reorder.push(item)) == []  # in:0 was taken on and has delivered nothing yet
    assert list(reorder.progress("in:0", 0.0, quiet=True)) == [item]
    # a re-announced source (a rebalance) holds again from its own progress, not from zero
    reorder.start("in:1")
    assert reorder.sources["in:1"].watermark == item.alert.time.timestamp()
    assert reorder.sources["in:1"].holding


def test_a_source_another_decoder_owns_holds_the_first_fetch_until_its_owner_delivers() -> None:
    """Two decoders: the one owning `in:0` names `in:1` (`expect`) before its own alerts, so
    its first fetch waits for `in:1`'s owner, whose announcement comes later in the log."""
    t = _timeline()
    in_order = _run(Processor(_engine()), _in_order())
    last = t["in:1"][-1].alert.time.timestamp()
    log: list[Item] = [
        TickItem("in:0", 0.0, start=True),  # decoder A takes in:0 on...
        TickItem("in:1", 0.0, expect=True),  # ...and names in:1, which decoder B owns
        *t["in:0"],  # A's first fetch: all of in:0
        TickItem("in:1", 0.0, start=True),  # B's announcement comes only now
        *t["in:1"],
        TickItem("in:0", t["in:0"][-1].alert.time.timestamp(), quiet=True),
        TickItem("in:1", last, quiet=True),
        FlushItem(),
    ]
    items = [decode_item(e.value, e.headers) for e in map(encode_item, log)]
    assert [i.expect for i in items if isinstance(i, TickItem)] == [False, True, False, False, False]
    # without the expectation, A's fetch runs ahead and B's older alerts come late
    _assert_in_order_only_with(items, in_order, lambda tick: tick.expect)


def _assert_in_order_only_with(items: list[Item], in_order: list[object], kept: Callable[[TickItem], bool]) -> None:
    """Fed `items`, a partition decides as if fed in event-time order, with no late alert;
    without the ticks `kept` selects, some alerts come late."""
    processor = Processor(_engine())
    got = _run(processor, items)
    assert processor.correlator.stats.late == 0  # type: ignore[attr-defined]
    assert _decisions(got) == _decisions(in_order)
    without = Processor(_engine())
    _run(without, [i for i in items if not (isinstance(i, TickItem) and kept(i))])
    assert without.correlator.stats.late > 0  # type: ignore[attr-defined]


def test_a_tick_of_one_source_never_moves_the_clock_past_another_still_delivering() -> None:
    """With two decoders, one ticks its sources while the other has not ticked yet: the
    clock follows what every holding source has delivered, not only the ticked ones."""
    processor = Processor(_engine())
    mine = AlertItem(alert(10, "web-1"), source="in:0")
    assert [o.alert_id for o in processor.feed(mine) if isinstance(o, Decision)] == []
    theirs = [AlertItem(alert(m, "db-1", f"s{m}"), source="in:1") for m in (20, 30, 50)]
    for item in theirs:
        processor.feed(item)  # held: in:0 has only delivered up to minute 10
    at = (T0 + timedelta(minutes=50)).timestamp()
    processor.feed(TickItem("in:1", at))  # in:1's decoder ticks; in:0's has not yet
    assert processor.watermark == (T0 + timedelta(minutes=10)).timestamp()
    late = AlertItem(alert(15, "web-1", "s15"), source="in:0")
    processor.feed(late)
    assert processor.correlator.stats.late == 0  # type: ignore[attr-defined]
    processor.feed(TickItem("in:0", (T0 + timedelta(minutes=15)).timestamp(), quiet=True))
    assert processor.watermark == (T0 + timedelta(minutes=50)).timestamp()  # nothing holds now
    assert len(processor.reorder) == 0


def test_an_expected_source_already_known_keeps_its_state() -> None:
    """An expectation names a source only the first time: one that delivered or went quiet
    before it is not held again (a rebalance names the other decoders' sources once more)."""
    reorder = Reorder()
    first = AlertItem(alert(5, "db-1"), source="in:1")
    assert list(reorder.push(first)) == [first]
    assert list(reorder.progress("in:1", first.alert.time.timestamp(), quiet=True)) == []
    reorder.expect("in:1")
    assert not reorder.sources["in:1"].holding  # quiet stays quiet
    later = AlertItem(alert(50, "web-1"), source="in:0")
    assert list(reorder.push(later)) == [later]  # so nothing waits for in:1
    reorder.expect("in:2")  # never heard of: holds from the beginning of time
    assert reorder.sources["in:2"].watermark == -math.inf and reorder.sources["in:2"].holding
    assert list(reorder.push(AlertItem(alert(60, "web-1"), source="in:0"))) == []


def test_a_checkpoint_keeps_a_source_announced_but_not_yet_delivering() -> None:
    processor = Processor(_engine())
    processor.feed(TickItem("in:0", 0.0, start=True))
    held = AlertItem(alert(5, "db-1"), source="in:1")
    assert processor.feed(held) == []
    restored = Processor.load(processor.dump(_snap()), _snap())
    assert restored.reorder.sources["in:0"].watermark == -math.inf
    assert len(restored.reorder) == 1
    out = restored.feed(TickItem("in:0", 0.0, quiet=True))
    assert [o.alert_id for o in out if isinstance(o, Decision)] == [] and len(restored.reorder) == 0


def _held_push(reorder: Reorder, item: AlertItem) -> list[AlertItem]:
    """`Reorder.push` as it was before alerts due at once skipped the heaps: every alert held
    first, then released by `release` (the reference for the shortcut)."""
    ts = reorder._note(item)  # (the sources' progress, shared with `push`)
    arrived = item.arrived_ms
    heapq.heappush(reorder._heap, (ts, reorder._seq, item))
    if arrived is not None:
        heapq.heappush(reorder._arrivals, (arrived, reorder._seq, ts))
        reorder._timed.add(reorder._seq)
    reorder._seq += 1
    return list(reorder.release())


@pytest.mark.parametrize("seed", range(6))
def test_alerts_due_at_once_go_as_if_they_had_been_held(seed: int) -> None:
    # One to three sources, out of order, with ticks, quiet spells and a hold bound: the
    # shortcut releases what holding would have, step by step, and keeps the same state.
    rng = random.Random(seed)
    sources = [f"in:{i}" for i in range(1 + seed % 3)]
    fast, held = Reorder(max_hold_ms=50, max_pending=40), Reorder(max_hold_ms=50, max_pending=40)
    for reorder in (fast, held):
        for source in sources:
            reorder.start(source)
    clock, at_once, waited = 0.0, 0, 0
    for i in range(600):
        if rng.random() < 0.1:
            source = rng.choice(sources)
            mark, quiet = clock - rng.random() * 5, rng.random() < 0.5
            assert list(fast.progress(source, mark, quiet=quiet)) == list(held.progress(source, mark, quiet=quiet))
            continue
        clock += rng.random()
        item = AlertItem(alert(clock - rng.random() * 3, f"h{i % 4}"), i * 2, source=rng.choice(sources))
        empty = len(held) == 0
        released = _held_push(held, item)
        assert list(fast.push(item)) == released, i
        assert fast.dump() == held.dump(), i
        at_once += empty and released == [item]
        waited += not released
    assert list(fast.drain()) == list(held.drain())
    assert (at_once if len(sources) == 1 else waited) > 0  # the shortcut, or holding, taken
