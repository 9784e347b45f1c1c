"""Pieces of the correlate stage that need no broker."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime

import pytest

from correlators.config import EngineConfig
from correlators.engine import Engine
from schemas.models import Alert, DeadLetter, Decision, Disposition, Domain
from streams.checkpoints import MemoryPlan
from streams.correlate_stage import PartitionState, _encode_all, _failure, encode_inline, phase_kept
from streams.partition import Processor
from streams.records import AlertItem, TickItem, encode_item
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


def test_an_alert_the_engine_failed_on_is_invalid_and_dead_letters_its_internal_record() -> None:
    alert = Alert(
        id="a1", source="ids", domain=Domain.SECURITY, time=datetime(2024, 3, 1, tzinfo=UTC),
        asset="web", signature="s", raw="the input record",
    )
    value = encode_item(AlertItem(alert)).value
    decision, letter = _failure(AlertItem(alert), KeyError("boom"), "app.by-asset", 3, 17, value)
    assert isinstance(decision, Decision) and isinstance(letter, DeadLetter)
    assert (decision.alert_id, decision.disposition) == ("a1", Disposition.INVALID)
    assert "CorrelationError" in decision.reason and "KeyError" in decision.reason
    # the record at the coordinates it names: the alert as the engine got it
    assert (letter.topic, letter.partition, letter.offset, letter.error) == ("app.by-asset", 3, 17, "CorrelationError")
    assert base64.b64decode(letter.raw) == value
    assert "alert a1" in letter.reason


def test_small_states_are_encoded_on_the_loop_and_large_ones_in_the_thread() -> None:
    """A checkpoint of partitions that only get ticks takes well under a millisecond to
    encode: handed to a thread, it waited for the GIL behind the decode stage instead."""
    quiet = [PartitionState(p, Processor(Engine(EngineConfig())), 0) for p in range(3)]
    assert not encode_inline(quiet, [None] * 3)  # never encoded: measured in the thread first
    for st in quiet:
        st.processor.feed(TickItem("in:0", 1.7e9))
    encoded = _encode_all(quiet, [None, None, None], _snap())
    assert [Processor.load(state, _snap()).watermark for _, state in encoded] == [1.7e9] * 3
    assert all(0 < st.encode_s < math.inf for st in quiet)  # each one's CPU time, measured
    for st in quiet:
        st.encode_s = 0.0003  # (a tick-only partition took ~0.26 ms here, compiled)
    assert encode_inline(quiet, [None] * 3)
    sealing = MemoryPlan(kept=[], dropped=[], seal=[(0, 64)], memory_from=64)
    assert not encode_inline(quiet, [None, sealing, None])  # segments to seal: the thread
    quiet[0].encode_s = 0.002  # one of them has grown: the thread again
    assert not encode_inline(quiet, [None] * 3)
