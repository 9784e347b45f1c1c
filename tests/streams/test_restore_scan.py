"""Where a restore starts its scan of the outputs (`streams.checkpoints.scan_from`).

A restore reads the outputs published since its checkpoints, to skip what is already out.
Only partitions with records past their checkpoint can have published anything since; an old
checkpoint at the end of its log (every partition but 0 with `partition_by=single`) must not
pull the scan back.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.checkpoints import Checkpoint, scan_from


def _checkpoint(partition: int, offset: int, **ends: int) -> Checkpoint:
    return Checkpoint(partition, offset, {k.replace("_", ":"): v for k, v in ends.items()}, None)


def test_a_partition_at_the_end_of_its_log_does_not_pull_the_scan_back() -> None:
    checkpoints = {
        0: _checkpoint(0, 5_000, decisions_0=90_000, incidents_0=700),
        1: _checkpoint(1, 1, decisions_0=10, incidents_0=3),  # an old one, nothing after it
    }
    lowest, behind = scan_from(checkpoints, {0: 5_200, 1: 1})
    assert (lowest, behind) == ({"decisions:0": 90_000, "incidents:0": 700}, {0})


def test_partitions_with_records_past_their_checkpoint_take_the_lowest_ends() -> None:
    checkpoints = {
        0: _checkpoint(0, 5_000, decisions_0=90_000, incidents_0=700),
        1: _checkpoint(1, 1, decisions_0=10, incidents_0=3),
    }
    lowest, behind = scan_from(checkpoints, {0: 5_200, 1: 2})  # one record past partition 1's
    assert (lowest, behind) == ({"decisions:0": 10, "incidents:0": 3}, {0, 1})


def test_nothing_past_any_checkpoint_needs_no_scan() -> None:
    checkpoints = {p: _checkpoint(p, 7, decisions_0=p) for p in range(4)}
    assert scan_from(checkpoints, dict.fromkeys(range(4), 7)) == ({}, set())


@given(
    st.dictionaries(
        st.integers(0, 7),
        st.tuples(st.integers(0, 50), st.integers(0, 5), st.lists(st.integers(0, 1_000), min_size=2, max_size=2)),
        min_size=1,
    )
)
def test_the_scan_covers_every_partition_that_may_have_published(
    parts: dict[int, tuple[int, int, list[int]]],
) -> None:
    checkpoints = {p: _checkpoint(p, offset, a_0=ends[0], b_0=ends[1]) for p, (offset, _, ends) in parts.items()}
    log_ends = {p: offset + past for p, (offset, past, _) in parts.items()}
    lowest, behind = scan_from(checkpoints, log_ends)
    assert behind == {p for p, (_, past, _) in parts.items() if past > 0}
    for p in behind:  # it starts no later than any of their ends
        for key, offset in checkpoints[p].out_ends.items():
            assert lowest[key] <= offset
    if behind:  # and at one of them
        for key in ("a:0", "b:0"):
            assert lowest[key] in {checkpoints[p].out_ends[key] for p in behind}
    else:
        assert lowest == {}
