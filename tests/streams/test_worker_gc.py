"""The collector settings a worker process runs with (`streams.worker.tune_gc`)."""

from __future__ import annotations

import gc

from streams.worker import GC_THRESHOLDS, freeze_survivors, tune_gc


def test_a_worker_process_collects_less_often_and_leaves_its_start_up_objects_alone() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]  # fewer young collections than the default
        frozen = gc.get_freeze_count()
        assert frozen > 1_000  # the modules loaded so far are out of the collector's reach
        survivor = [object()]  # made after the freeze: collected as usual
        assert gc.is_tracked(survivor)
        assert gc.get_freeze_count() == frozen
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # a cycle made after it is still found
    finally:
        gc.callbacks.remove(freeze_survivors)
        gc.unfreeze()
        gc.set_threshold(*before)


def test_what_survives_a_collection_is_left_alone_by_the_next_ones() -> None:
    """The state a storm of new assets builds is walked by one collection, not by every later
    middle and full one (`freeze_survivors`); it is still freed when no longer referenced."""
    before = gc.get_threshold()
    try:
        tune_gc()
        tune_gc()  # (installed once)
        assert gc.callbacks.count(freeze_survivors) == 1
        frozen = gc.get_freeze_count()
        state = [[i] for i in range(10_000)]  # tracked containers, as an engine's state
        survivor = state[0]
        gc.collect(0)
        assert gc.get_freeze_count() >= frozen + 10_000  # survived, and out of reach now
        gc.collect()
        assert gc.get_freeze_count() >= frozen + 10_000  # a full collection walked past them
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # garbage made since is still found
        freed = gc.get_freeze_count()
        del state
        assert gc.get_freeze_count() <= freed - 9_999  # reference counting frees frozen objects
        assert survivor == [0]
    finally:
        while freeze_survivors in gc.callbacks:
            gc.callbacks.remove(freeze_survivors)
        gc.unfreeze()
        gc.set_threshold(*before)
