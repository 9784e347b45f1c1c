"""The correlate stage's partition bookkeeping and checkpoint encoding, without a broker."""

from __future__ import annotations

import math

import pytest

from correlators.config import EngineConfig
from correlators.engine import Engine
from schemas.errors import SnapshotError
from streams.checkpoints import Checkpoint, MemoryPlan
from streams.partition import Processor, pack
from streams.partition_state import (
    PartitionState,
    bounded_ends,
    checkpoint_spacing,
    due_partitions,
    encode_all,
    encode_inline,
    packed,
    phase_kept,
)
from streams.records import TickItem
from tests.streams.test_reorder import _snap


def test_a_checkpoint_on_time_counts_from_its_own_phase() -> None:
    # due at 10.0 + 5 = 15.0, taken at 15.3 (the pause came a little late): next due at 20.0
    assert phase_kept(10.0, 15.3, 5.0) == 15.0


def test_partitions_checkpointed_together_after_a_long_pause_keep_their_phases() -> None:
    # four partitions staggered over a 5 s interval, all checkpointed in one pause at 31.0
    phases = [10.0, 11.25, 12.5, 13.75]
    kept = [phase_kept(p, 31.0, 5.0) for p in phases]
    assert kept == [30.0, 26.25, 27.5, 28.75]
    assert len({k % 5.0 for k in kept}) == 4  # still four different phases
    assert all(31.0 - k < 5.0 for k in kept)  # none of them due again at once


@pytest.mark.parametrize(("last", "now", "interval"), [(10.0, 12.0, 5.0), (10.0, 10.0, 5.0), (10.0, 9.0, 5.0)])
def test_a_forced_checkpoint_before_it_was_due_leaves_the_phase(last: float, now: float, interval: float) -> None:
    assert phase_kept(last, now, interval) == (last if now > last else now)


def test_no_interval_counts_from_now() -> None:
    assert phase_kept(10.0, 31.0, 0.0) == 31.0


@pytest.mark.parametrize(
    ("encode_s", "spacing"),
    [
        (math.inf, 5.0),  # never encoded: the interval
        (0.0003, 5.0),  # a partition that only gets ticks
        (0.25, 5.0),  # 5% of the interval exactly
        (0.3, 6.0),  # ~10,000 assets with alerts waiting, on a slow core
        (1.2, 24.0),
        (4.0, 30.0),  # ~100,000 of them: 80 s at 5%, but an older checkpoint must stay (60 s)
    ],
)
def test_a_state_slow_to_encode_is_checkpointed_less_often(encode_s: float, spacing: float) -> None:
    assert checkpoint_spacing(encode_s, 5.0, 0.05, 30.0) == pytest.approx(spacing)


def test_the_share_bounds_the_time_spent_encoding_up_to_the_longest_spacing() -> None:
    for encode_s in (0.001, 0.1, 1.0, 30.0):
        for share in (0.01, 0.05, 0.5, 1.0):
            spacing = checkpoint_spacing(encode_s, 5.0, share, 1e9)
            assert encode_s / spacing <= share + 1e-12
            assert checkpoint_spacing(encode_s, 5.0, share, 30.0) == min(spacing, max(5.0, 30.0))
    assert checkpoint_spacing(10.0, 5.0, 1.0, 1e9) == 10.0  # all of the time: back to back at worst
    assert checkpoint_spacing(10.0, 40.0, 0.05, 30.0) == 40.0  # never sooner than the interval


def test_the_share_is_the_stages_split_between_its_partitions() -> None:
    """A checkpoint of any partition pauses them all: eight big states at 5% each kept a
    worker paused 28-30% of a storm."""
    assert checkpoint_spacing(0.3, 5.0, 0.05, 1e9, partitions=8) == pytest.approx(48.0)
    assert checkpoint_spacing(0.3, 5.0, 0.05, 30.0, partitions=8) == 30.0  # (still the longest at most)
    assert checkpoint_spacing(0.0003, 5.0, 0.05, 30.0, partitions=8) == 5.0  # tick-only: the interval
    assert checkpoint_spacing(0.3, 5.0, 0.05, 1e9, partitions=0) == pytest.approx(6.0)  # (none owned yet)
    for n in (1, 2, 8, 64):
        for encode_s in (0.01, 0.3, 4.0):
            assert n * encode_s / checkpoint_spacing(encode_s, 5.0, 0.05, 1e9, partitions=n) <= 0.05 + 1e-12


def _spaced(last: float, encode_s: float, dirty: bool = True) -> PartitionState:
    st = PartitionState(0, Processor(Engine(EngineConfig())), 0)
    st.last_checkpoint, st.encode_s, st.dirty = last, encode_s, dirty
    return st


def _due(states: list[PartitionState], now: float, force: bool = False) -> list[int]:
    def spacing(st: PartitionState) -> float:
        return checkpoint_spacing(st.encode_s, 5.0, 0.05, 30.0)

    return [states.index(st) for st in due_partitions(states, now, 5.0, spacing, force)]


def test_a_pause_takes_the_due_partitions_and_one_slow_state_at_most() -> None:
    states = [
        _spaced(95.0, 0.001),  # due (5 s)
        _spaced(97.0, 0.001),  # not yet
        _spaced(80.0, 0.5),  # slow (10 s), due 10 s ago
        _spaced(70.0, 1.0),  # slow (20 s), due 10 s ago too
        _spaced(60.0, 4.0),  # slow (30 s), due 10 s ago
        _spaced(50.0, 0.001, dirty=False),  # nothing new since its last one
    ]
    assert _due(states, 100.0) == [0, 2]  # one slow state a pause: the most overdue (ties: the first)
    states[4].last_checkpoint = 55.0  # now due 15 s ago: the most overdue
    assert _due(states, 100.0) == [0, 4]
    assert _due(states, 100.0, force=True) == [0, 1, 2, 3, 4]  # a stop or a rebalance: every dirty one
    assert _due(states, 96.0) == [4]  # no fast one due yet; of the slow ones, the most overdue


def test_small_states_are_encoded_on_the_loop_and_large_ones_in_the_thread() -> None:
    """A checkpoint of partitions that only get ticks takes well under a millisecond to
    encode: handed to a thread, it waited for the GIL behind the decode stage instead."""
    quiet = [PartitionState(p, Processor(Engine(EngineConfig())), 0) for p in range(3)]
    assert not encode_inline(quiet, [None] * 3)  # never encoded: measured in the thread first
    for st in quiet:
        st.processor.feed(TickItem("in:0", 1.7e9))
    encoded = encode_all(quiet, [None, None, None], _snap())
    # (compressed after the pause, when written: `packed`)
    assert [Processor.load(pack(state), _snap()).watermark for _, state in encoded] == [1.7e9] * 3
    assert all(0 < st.encode_s < math.inf for st in quiet)  # each one's CPU time, measured
    for st in quiet:
        st.encode_s = 0.0003  # (a tick-only partition took ~0.26 ms here, compiled)
    assert encode_inline(quiet, [None] * 3)
    sealing = MemoryPlan(kept=[], dropped=[], seal=[(0, 64)], memory_from=64)
    assert not encode_inline(quiet, [None, sealing, None])  # segments to seal: the thread
    quiet[0].encode_s = 0.002  # one of them has grown: the thread again
    assert not encode_inline(quiet, [None] * 3)


def test_checkpoints_are_compressed_after_their_pause() -> None:
    """`encode_all` (the pause) leaves the states as they are; `packed` (written behind)
    compresses them into what a restore loads."""
    st = PartitionState(0, Processor(Engine(EngineConfig())), 0)
    st.processor.feed(TickItem("in:0", 1.7e9))
    [(_, plain)] = encode_all([st], [None], _snap())
    with pytest.raises(SnapshotError):
        Processor.load(plain, _snap())
    empty = Checkpoint(1, 0, {}, None)
    full, untouched = packed([Checkpoint(0, 7, {"out:0": 3}, plain, 1.0), empty])
    assert untouched is empty
    assert full.state is not None and len(full.state) < len(plain)
    assert (full.offset, full.out_ends, full.written_at) == (7, {"out:0": 3}, 1.0)
    assert Processor.load(full.state, _snap()).watermark == 1.7e9


def _restored(next_offset: int, suppress_until: int) -> PartitionState:
    """A partition restored at `next_offset` whose scan, begun at output offset 40, found
    outputs published up to internal offset `suppress_until`."""
    st = PartitionState(0, Processor(Engine(EngineConfig())), next_offset)
    st.suppress, st.suppress_until, st.scan_from = {"d:a1", "d:a2"}, suppress_until, {"out:0": 40}
    return st


def test_a_checkpoint_before_the_partition_is_past_what_was_published_keeps_the_scan_start() -> None:
    st = _restored(100, 102)
    ends = {"out:0": 55, "dlq:0": 3}
    assert bounded_ends(st, ends) == {"out:0": 40, "dlq:0": 3}  # (a topic not scanned: as read)
    st.processed(100)
    st.processed(101)
    assert bounded_ends(st, ends) == {"out:0": 40, "dlq:0": 3}
    assert st.suppress and st.scan_from is not None
    st.processed(102)  # past the last output the scan found: the ends as read, and nothing kept
    assert bounded_ends(st, ends) == ends
    assert (st.suppress, st.suppress_until, st.scan_from) == (set(), -1, None)
    assert st.next_offset == 103 and st.dirty


def test_the_ends_are_read_without_changing_the_partition() -> None:
    st = _restored(100, 102)
    st.next_offset = 103  # (moved past without `processed`, as an unreadable record is)
    assert bounded_ends(st, {"out:0": 55}) == {"out:0": 55}
    assert st.scan_from == {"out:0": 40} and st.suppress == {"d:a1", "d:a2"}


def test_a_partition_that_was_not_restored_records_the_ends_as_read() -> None:
    st = PartitionState(0, Processor(Engine(EngineConfig())), 0)
    st.processed(0)
    assert bounded_ends(st, {"out:0": 55}) == {"out:0": 55}
    assert st.suppress_until == -1
