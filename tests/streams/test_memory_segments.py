"""The redelivery memory in checkpoint segments: what a checkpoint writes, keeps and drops.

A partition's engine remembers the ids of the alerts it decided (up to `max_seen_ids`), each
numbered by the order it was remembered in. A checkpoint holds the newest ones itself and
refers to segments for the rest; each segment is written once. These are the pure parts
(planning, record formats); `tests/integration/test_memory_segments.py` runs them on Kafka.
"""

from __future__ import annotations

import orjson
import pytest

from schemas.errors import SnapshotError
from streams.checkpoints import (
    Checkpoint,
    MemoryRef,
    decode_segment,
    encode_segment,
    expire_retired,
    plan_memory,
    sealed_to,
)


def test_a_young_memory_stays_in_the_checkpoint() -> None:
    plan = plan_memory([], first=0, end=99, size=100)
    assert (plan.kept, plan.dropped, plan.seal, plan.memory_from) == ([], [], [], 0)


def test_full_segments_are_sealed_once_and_referred_to_from_the_next_checkpoint() -> None:
    plan = plan_memory([], first=0, end=250, size=100)
    # written beside this checkpoint, whose state still holds their ids (offsets unknown yet)
    assert plan.seal == [(0, 100), (100, 200)] and plan.memory_from == 0
    written = [MemoryRef(0, 100, 7), MemoryRef(100, 200, 8)]
    again = plan_memory(written, first=0, end=299, size=100)
    assert again.kept == written and again.seal == [] and again.memory_from == 200
    later = plan_memory(written, first=0, end=300, size=100)
    assert later.seal == [(200, 300)] and later.memory_from == 200


def test_segments_whose_ids_are_all_forgotten_are_dropped() -> None:
    written = [MemoryRef(0, 100, 7), MemoryRef(100, 200, 8), MemoryRef(200, 300, 9)]
    plan = plan_memory(written, first=200, end=350, size=100)
    assert plan.dropped == written[:2] and plan.kept == written[2:] and plan.memory_from == 300
    assert plan.seal == []
    # one id of a segment still held keeps it
    assert plan_memory(written, first=199, end=350, size=100).kept == written[1:]


def test_new_segments_start_where_the_segments_still_needed_end() -> None:
    """What the stage checks between checkpoints before planning (`sealed_to`) is where a plan
    starts sealing."""
    written = [MemoryRef(0, 100, 7), MemoryRef(100, 200, 8)]
    for refs, first in [([], 0), ([], 350), (written, 0), (written, 199), (written, 200), (written, 260)]:
        assert sealed_to(refs, first) == plan_memory(refs, first, first + 1000, 100).memory_from
    assert (sealed_to([], 40), sealed_to(written, 150), sealed_to(written, 250)) == (40, 200, 250)


def test_a_memory_smaller_than_a_segment_never_writes_one_whole() -> None:
    """The oldest ids are forgotten before a segment fills: it is sealed with what is held."""
    plan = plan_memory([], first=180, end=300, size=100)
    assert plan.seal == [(180, 280)] and plan.memory_from == 180
    plan = plan_memory([], first=350, end=400, size=100)  # after a restore with a smaller memory
    assert plan.seal == [] and plan.memory_from == 350


def test_retired_segments_are_deleted_once_older_checkpoints_may_be_compacted() -> None:
    a, b = MemoryRef(0, 100, 7), MemoryRef(100, 200, 8)
    listed, expired = expire_retired([(a, 1000.0)], [b], now=1030.0, keep_s=60.0)
    assert listed == [(a, 1000.0), (b, 1030.0)] and expired == []
    listed, expired = expire_retired(listed, [], now=1070.0, keep_s=60.0)
    assert expired == [a] and listed == [(a, 1000.0), (b, 1030.0)]  # listed until deleted


def test_segments_round_trip_and_check_what_they_are() -> None:
    ids = [f"alerts:0:{i}" for i in range(100)]
    ref = MemoryRef(100, 200, 12)
    data = encode_segment(3, 100, 200, ids)
    assert decode_segment(data, 3, ref) == ids
    assert decode_segment(encode_segment(3, 100, 200, ids[40:]), 3, ref) == ids[40:]  # oldest forgotten
    for partition, other in ((4, ref), (3, MemoryRef(0, 100, 12)), (3, MemoryRef(100, 150, 12))):
        with pytest.raises(SnapshotError):
            decode_segment(data, partition, other)


@pytest.mark.parametrize(
    "data",
    [
        None,  # a tombstone
        b"",
        b"\x00\x00\x00\x02{}",
        b"\x00\x00\x00\x01[",
        encode_segment(3, 100, 200, [])[:-3],  # truncated
        encode_segment(3, 100, 200, [str(i) for i in range(101)]),  # more ids than positions
    ],
)
def test_a_bad_segment_raises_snapshot_error_only(data: bytes | None) -> None:
    with pytest.raises(SnapshotError):
        decode_segment(data, 3, MemoryRef(100, 200, 12))


def test_checkpoints_carry_their_segments() -> None:
    memory = (MemoryRef(0, 100, 7, 900), MemoryRef(100, 200, 8, 950))
    checkpoint = Checkpoint(3, 120, {"out:0": 7}, b"state", 5.0, memory, ((MemoryRef(0, 50, 2, 400), 4.0),))
    assert Checkpoint.decode(checkpoint.encode()) == checkpoint


@pytest.mark.parametrize(
    "memory",
    [
        [[0, 100, 7, 10], [150, 200, 8, 10]],  # a gap
        [[0, 100, 7, 10], [50, 200, 8, 10]],  # an overlap
        [[100, 100, 7, 10]],  # empty
        [[0, 100, 7]],
        [[0, -1, 7, 10]],
        [[0, 100, 7, "10"]],
        "segments",
        7,
    ],
)
def test_a_checkpoint_with_bad_segment_references_is_corrupt(memory: object) -> None:
    good = Checkpoint(3, 120, {}, b"state").encode()
    size = int.from_bytes(good[:4], "big")
    head = orjson.loads(good[4 : 4 + size])
    head["memory"] = memory
    raw = orjson.dumps(head)
    with pytest.raises(SnapshotError):
        Checkpoint.decode(len(raw).to_bytes(4, "big") + raw + good[4 + size :])
