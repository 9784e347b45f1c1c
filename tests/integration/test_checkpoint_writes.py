"""Checkpoints reach the log in the order they were taken, and a clean stop writes the last.

A new owner restores the newest checkpoint of each partition, so they must reach the log in
the order they were taken (newer offsets later), and a clean stop must leave one behind that
covers every record the worker decided, and loads. With a checkpoint every 0.4 s, several
are written while the alerts go through (3 s of them); each partition's at its own times
(staggered over the interval), not all partitions' in one pause. (At 50 ms the stage's pauses
under load came further apart than the interval, every partition was due in each of them, and
the stagger could not show.) They are written behind, while the stage processes on (one at
a time, each after the outputs sent before it are acknowledged); stop 17's first try of that
failed `test_soak.py`'s cut-off test in 5 of 33 runs, which were the cut-off worker's outputs
landing late, fenced since by the group lease (`streams/lease.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.checkpoints import Checkpoint, CheckpointStore, parse_src
from streams.correlator import snapshotter, worker_context
from streams.partition import Processor
from streams.records import SRC_HEADER, header
from tests.integration.checks import assert_decided_once
from tests.integration.conftest import Names, Tail, WorkerProcess, until
from tests.integration.datasets import aitads_rows, produce_paced

pytestmark = pytest.mark.integration


async def test_checkpoints_reach_the_log_in_order_and_a_stop_writes_the_last(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    last, caused, _ = await _decide(names, workers, producer)
    settings = names.settings()
    snap = snapshotter(settings, worker_context(settings))
    written = 0
    pauses: dict[int, set[float]] = {}  # partition -> when its checkpoints were taken
    for p, newest_first in (await _histories(names, producer)).items():
        pauses[p] = {c.written_at for c in newest_first[1:-1]}  # (not the first, nor the stop's)
        offsets = [c.offset for c in newest_first]
        assert offsets == sorted(offsets, reverse=True), (p, offsets)  # taken order = log order
        if p in last:  # the stop's checkpoint covers every record that was decided, and loads
            assert newest_first and newest_first[0].offset > last[p], (p, offsets[:3], last[p])
            Processor.load(newest_first[0].state or b"", snap)
        # what a restore relies on: every output caused after a checkpoint's offset is at or
        # after the output ends it recorded (read ahead of it), so the restore's scan sees it
        for checkpoint in newest_first:
            for where, offset, _, src_offset in (c for c in caused if c[2] == p):
                if src_offset >= checkpoint.offset:
                    assert offset >= checkpoint.out_ends.get(where, 0), (p, checkpoint.offset, where, offset)
        written += len(newest_first)
    assert written > 2 * settings.partitions  # written while processing, not only at the stop
    # staggered: a pause checkpoints the partitions that are due, not every partition at once
    shared = set.intersection(*pauses.values())
    assert len(shared) < min(len(taken) for taken in pauses.values()), pauses


async def test_a_partition_whose_state_is_slow_to_encode_is_checkpointed_less_often(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """`SOCNOC_CHECKPOINT_MAX_SHARE`: a partition is checkpointed again no sooner than its last
    encoding's CPU time over the share, and no later than half of what compaction keeps older
    checkpoints (a minute here). At 1/100,000,000 of the time every state is due 30 s after its
    first checkpoint, where the same run with the default share checkpoints every 0.4 s (the
    test above; 6 a partition with a share of 1): one checkpoint a partition in the run's few
    seconds at most, then the stop's, which still covers everything decided."""
    last, _, _ = await _decide(names, workers, producer, {"SOCNOC_CHECKPOINT_MAX_SHARE": "0.00000001"})
    settings = names.settings()
    snap = snapshotter(settings, worker_context(settings))
    for p, newest_first in (await _histories(names, producer)).items():
        assert len(newest_first[1:-1]) <= 1, (p, [c.offset for c in newest_first])
        if p in last:
            assert newest_first[0].offset > last[p]
            Processor.load(newest_first[0].state or b"", snap)


async def test_a_restored_partition_counts_its_restore_as_its_encoding_cost(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """Until its first checkpoint measures it, a restored partition's encoding is taken to cost
    what its restore did: at a share of 1/100,000,000 a second worker, restoring what the first
    left at its stop, writes no checkpoint before its own stop's, where a partition not measured
    yet would be due one interval (0.4 s) after the restore, while its alerts go through."""
    share = {"SOCNOC_CHECKPOINT_MAX_SHARE": "0.00000001"}
    _, _, earlier = await _decide(names, workers, producer, share)
    before = {p: len(history) for p, history in (await _histories(names, producer)).items()}
    last, _, _ = await _decide(names, workers, producer, share, first=3000, earlier=earlier)
    for p, newest_first in (await _histories(names, producer)).items():
        assert len(newest_first) - before[p] <= 1, (p, before[p], [c.offset for c in newest_first])
        if p in last:  # the stop's, which covers everything decided
            assert newest_first[0].offset > last[p]


async def _decide(
    names: Names,
    workers: Callable[..., WorkerProcess],
    producer: AIOKafkaProducer,
    env: dict[str, str] | None = None,
    first: int = 0,
    earlier: frozenset[str] = frozenset(),
) -> tuple[dict[int, int], list[tuple[str, int, int, int]], frozenset[str]]:
    """3,000 AIT-ADS alerts (from row `first` on) through a worker checkpointing every 0.4 s,
    each decided once, then a clean stop: each internal partition's highest offset decided,
    each decision's (decisions partition, offset, internal partition, internal offset), and the
    alerts' ids. The decisions of `earlier` alerts (an earlier run's) are on the topic already."""
    worker = workers(
        names.worker_env(
            SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
            SOCNOC_CHECKPOINT_INTERVAL="0.4",  # several checkpoints while the alerts go through
            SOCNOC_IDLE_TIMEOUT="2",  # windows close once the input stops
            **(env or {}),
        )
    )
    await worker.wait_partitions()
    _, rows = aitads_rows()
    values = [row for _, row in rows[first : first + 3000]]
    sent: list[str] = []
    async with Tail(names.bootstrap, names.decisions) as tail:
        await produce_paced(producer, names.alerts, values, sent, 1000)
        wanted = len(values) + len(earlier)
        await until(lambda: len(tail.records[names.decisions]) >= wanted, 120, "every alert decided", worker)
        decisions = [d for d in tail.values(names.decisions) if d["alert_id"] not in earlier]
        # the internal record each decision came from: partition -> highest offset
        last: dict[int, int] = {}
        caused: list[tuple[str, int, int, int]] = []  # (decisions partition, offset, src partition, src offset)
        for record in tail.records[names.decisions]:
            src = parse_src(header(record.headers, SRC_HEADER))
            assert src is not None
            last[src[0]] = max(src[1], last.get(src[0], -1))
            caused.append((f"{record.topic}:{record.partition}", record.offset, *src))
    assert_decided_once(decisions, set(sent))
    assert worker.terminate() == 0
    return last, caused, frozenset(sent)


async def _histories(names: Names, producer: AIOKafkaProducer) -> dict[int, list[Checkpoint]]:
    """Every partition's checkpoints, newest first."""
    settings = names.settings()
    reader = AIOKafkaConsumer(bootstrap_servers=names.bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        store = CheckpointStore(reader, producer, topic=settings.checkpoint_topic(), output_topics=[])
        return {p: [c async for c in _history(store, p)] for p in range(settings.partitions)}
    finally:
        await reader.stop()


async def _history(store: CheckpointStore, partition: int) -> AsyncIterator[Checkpoint]:
    async with contextlib.aclosing(store.history(partition)) as checkpoints:
        async for checkpoint in checkpoints:
            yield checkpoint
