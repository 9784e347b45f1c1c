"""The collector settings a worker process runs with (`streams.worker.tune_gc`)."""

from __future__ import annotations

import gc

from streams.worker import GC_THRESHOLDS, tune_gc


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
        gc.unfreeze()
        gc.set_threshold(*before)
