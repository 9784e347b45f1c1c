"""Pieces of the correlate stage that need no broker."""

from __future__ import annotations

import pytest

from streams.correlate_stage import phase_kept


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
