"""The redelivery memory in segments, on a real broker: a worker whose memory outgrows a
segment writes segments beside its checkpoints, each checkpoint refers to the ones it needs,
and a restore reads them back into exactly the memory the worker had.

With `SOCNOC_MEMORY_SEGMENT_IDS=64` and `SOCNOC_REDELIVERY_MEMORY=400` the ~750 alerts of a
partition fill several segments and forget the oldest ones, so a checkpoint lists some as
retired. (Only a segment written while the memory still held its ids can be retired: the
alerts are sent paced, once the worker correlates, so no partition's share goes through
between two of its checkpoints.) (That the memory restored this way keeps a restart from repeating decisions is
`test_crash.py`, run with segments too.)
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from correlators.engine import Engine
from correlators.types import Earlier
from schemas.errors import SnapshotError
from streams.checkpoints import Checkpoint, CheckpointStore, MemoryRef, encode_segment, parse_src
from streams.correlator import snapshotter, worker_context
from streams.kafka import TopicSpec, ensure_topics, high_watermarks
from streams.partition import Processor
from streams.records import SRC_HEADER, header
from tests.integration.checks import assert_decided_once
from tests.integration.conftest import Names, Tail, WorkerProcess, until
from tests.integration.datasets import aitads_rows, produce_paced

pytestmark = pytest.mark.integration

SEGMENT = 64
MEMORY = 400


async def test_a_checkpoint_stores_the_memory_in_segments_and_a_restore_reads_it_back(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
        SOCNOC_CHECKPOINT_INTERVAL="0.05",
        SOCNOC_MEMORY_SEGMENT_IDS=str(SEGMENT),
        SOCNOC_REDELIVERY_MEMORY=str(MEMORY),
        SOCNOC_BATCH_MAX_RECORDS="100",  # a checkpoint is due every 50 ms: a few batches apart
        SOCNOC_IDLE_TIMEOUT="2",
    )
    worker = workers(env)
    await worker.wait_partitions()

    async def correlating() -> bool:  # no backlog at the start, processed in one batch
        got = await worker.health()
        return got is not None and bool(got[1].get("stages", {}).get("correlate", {}).get("partitions"))

    await until(correlating, 60, "the correlate stage assigned", worker)
    _, rows = aitads_rows()
    values = [row for _, row in rows[:3000]]
    sent: list[str] = []
    decided: dict[int, set[str]] = defaultdict(set)  # by the partition that decided
    async with Tail(names.bootstrap, names.decisions) as tail:
        await produce_paced(producer, names.alerts, values, sent, 3000)
        await until(lambda: len(tail.records[names.decisions]) >= len(values), 120, "every alert decided", worker)
        for record in tail.records[names.decisions]:
            src = parse_src(header(record.headers, SRC_HEADER))
            assert src is not None and record.key is not None
            decided[src[0]].add(record.key.decode())
        assert_decided_once(tail.values(names.decisions), set(sent))
    assert worker.terminate() == 0

    settings = names.settings().model_copy(update={"redelivery_memory": MEMORY, "memory_segment_ids": SEGMENT})
    snap = snapshotter(settings, worker_context(settings))
    reader = AIOKafkaConsumer(bootstrap_servers=names.bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        store = CheckpointStore(reader, producer, topic=settings.checkpoint_topic(), output_topics=[])
        retired = 0
        for p, ids in decided.items():
            unreadable: list[str] = []
            newest = await _newest(store, p, unreadable.append)
            assert not unreadable, "segment records are not checkpoints: passed over, not counted"
            if len(ids) < 2 * SEGMENT:
                continue
            assert newest.memory, f"partition {p}: {len(ids)} ids and no segment"
            retired += len(newest.retired)
            earlier = await store.memory(newest)
            assert earlier is not None and earlier.end == newest.memory[-1].end
            state = zlib.decompress(newest.state or b"")
            size = int.from_bytes(state[:4], "big")
            own = orjson.loads(state[4 + size + 1 :])["seen"]  # (after the snapshot's tag byte)
            # the ids no segment it refers to holds: the newest, and those of the segments
            # written beside it (referred to from the next checkpoint on)
            assert len(own) < 2 * SEGMENT

            engine = Processor.load(newest.state or b"", snap, earlier).correlator
            assert isinstance(engine, Engine)
            first, end = engine.memory_span()
            assert end == len(ids) and end - first == min(MEMORY, len(ids))
            assert set(engine.memory_ids(first, end)) <= ids
            with pytest.raises(SnapshotError, match="missing"):  # not without its segments
                Processor.load(newest.state or b"", snap, None)
        assert retired, "the memory forgot ids: some segment must be retired"

        # a retired segment is deleted with a tombstone, which readers pass over
        p = next(p for p in decided if len(decided[p]) >= SEGMENT)
        newest = await _newest(store, p, lambda what: pytest.fail(what))
        ref = (newest.retired or [(newest.memory[0], 0.0)])[0][0]
        await store.delete_segment(p, ref)
        tp = TopicPartition(settings.checkpoint_topic(), p)
        end = (await high_watermarks(reader, [tp]))[tp]
        last = await store._read(tp, end - 1, end)
        assert last == [(end - 1, ref.key(p), None)]
        assert (await _newest(store, p, lambda what: pytest.fail(what))) == newest
    finally:
        await reader.stop()


async def test_segments_are_written_as_they_fill_between_checkpoints(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """No checkpoint falls due in this run (an hour apart): the memory's segments are written
    as they fill all the same, and the stop's checkpoint refers to them instead of holding
    their ids, so a checkpoint pause encodes and writes only the newest ids."""
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
        SOCNOC_CHECKPOINT_INTERVAL="3600",
        SOCNOC_MEMORY_SEGMENT_IDS=str(SEGMENT),
        SOCNOC_IDLE_TIMEOUT="2",
    )
    worker = workers(env)
    await worker.wait_partitions()
    _, rows = aitads_rows()
    values = [row for _, row in rows[:1000]]
    sent: list[str] = []
    settings = names.settings().model_copy(update={"memory_segment_ids": SEGMENT})
    reader = AIOKafkaConsumer(bootstrap_servers=names.bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        store = CheckpointStore(reader, producer, topic=settings.checkpoint_topic(), output_topics=[])
        tp = TopicPartition(settings.checkpoint_topic(), 0)  # the engine of `partition_by=single`

        async def records() -> list[tuple[int, bytes | None, bytes | None]]:
            end = (await high_watermarks(reader, [tp]))[tp]
            return await store._read(tp, 0, end) if end else []

        async with Tail(names.bootstrap, names.decisions) as tail:
            await produce_paced(producer, names.alerts, values, sent, 2000)
            await until(lambda: len(tail.records[names.decisions]) >= len(values), 120, "every alert decided", worker)
            assert_decided_once(tail.values(names.decisions), set(sent))

        async def sealed() -> bool:  # every full segment, written before the stop
            keys = [key for _, key, _ in await records() if key is not None and b"/seen/" in key]
            return len(keys) == len(values) // SEGMENT

        await until(sealed, 30, "the full segments written", worker)
        before_stop = await records()
        segments = {key for _, key, _ in before_stop if key is not None and b"/seen/" in key}
        checkpoints = [key for _, key, _ in before_stop if key is not None and b"/seen/" not in key]
        assert len(checkpoints) <= 1  # (the one an assignment may write): none fell due
        assert worker.terminate() == 0

        newest = await _newest(store, 0, lambda what: pytest.fail(what))
        assert {ref.key(0) for ref in newest.memory} == segments
        state = zlib.decompress(newest.state or b"")
        size = int.from_bytes(state[:4], "big")
        own = orjson.loads(state[4 + size + 1 :])["seen"]
        assert len(own) < 2 * SEGMENT  # (only the ids after the segments it refers to)
        snap = snapshotter(settings, worker_context(settings))
        engine = Processor.load(newest.state or b"", snap, await store.memory(newest)).correlator
        assert isinstance(engine, Engine)
        first, end = engine.memory_span()
        assert (first, end) == (0, len(values))
        assert set(engine.memory_ids(first, end)) == set(sent)
    finally:
        await reader.stop()


async def _newest(store: CheckpointStore, partition: int, on_unreadable: Callable[[str], None]) -> Checkpoint:
    async with contextlib.aclosing(store.history(partition, on_unreadable)) as checkpoints:
        async for checkpoint in checkpoints:
            return checkpoint
    raise AssertionError(f"partition {partition} has no checkpoint")


def _alert(alert_id: str, i: int) -> bytes:
    """A canonical alert (format `alert`) with its own id: sent twice, it is one alert."""
    return orjson.dumps(
        {
            "id": alert_id,
            "source": "edr",
            "domain": "security",
            "time": 1_767_225_600 + i,
            "asset": f"host-{i % 20}",
            "signature": f"sig-{i % 7}",
        }
    )


async def _send(producer: AIOKafkaProducer, topic: str, ids: list[str]) -> None:
    sent = []
    for i, alert_id in enumerate(ids):
        sent.append(await producer.send(topic, _alert(alert_id, i), key=f"host-{i % 20}".encode()))
    await asyncio.gather(*sent)


async def test_alerts_sent_again_after_a_restart_get_no_second_decision(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """The whole memory comes back, the ids in segments included: an alert sent again after
    a restart (a shipper retrying, ids of its own) gets no second decision."""
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "alert"}}).decode(),
        SOCNOC_MEMORY_SEGMENT_IDS=str(SEGMENT),
        SOCNOC_IDLE_TIMEOUT="1",
    )
    first_ids = [f"dup-{i}" for i in range(800)]
    later_ids = [f"new-{i}" for i in range(20)]
    first = workers(env, "first")
    await first.wait_partitions()  # (it creates the topics)
    async with Tail(names.bootstrap, names.decisions) as tail:

        def decided(ids: list[str]) -> Callable[[], bool]:
            return lambda: set(ids) <= {r.key.decode() for r in tail.records[names.decisions] if r.key}

        await _send(producer, names.alerts, first_ids)
        await until(decided(first_ids), 120, "the first alerts decided", first)
        assert first.terminate() == 0  # a clean stop: checkpoints with segments

        second = workers(env, "second")
        await second.wait_partitions()
        resent = [*first_ids, *later_ids]
        await _send(producer, names.alerts, resent)
        await until(decided(later_ids), 120, "the new alerts decided", second)
        await asyncio.sleep(3)  # a repeated decision would have shown by now
        assert_decided_once(tail.values(names.decisions), set(resent))


async def test_a_checkpoint_whose_segment_is_gone_is_passed_over(names: Names, producer: AIOKafkaProducer) -> None:
    """Compaction removed a segment a checkpoint refers to (or it was never there): that
    checkpoint cannot be restored whole, so the one before it is used, and it is counted."""
    async with _checkpoint_store(names, producer) as (store, topic):
        ids = [f"a-{i}" for i in range(10)]
        ref = await store.write_segment(0, 0, 10, encode_segment(0, 0, 10, ids))
        assert ref.size > 0
        await store.write(Checkpoint(0, 5, {}, b"older", memory=(ref,)))
        await producer.send_and_wait(topic, b"not a segment", key=b"0/seen/10", partition=0)
        bad = (MemoryRef(10, 20, ref.offset + 2, 50), MemoryRef(20, 30, 999_999, 50))  # wrong record, none
        await store.write(Checkpoint(0, 9, {}, b"newer", memory=(ref, *bad)))

        load = _Loads()
        failures: list[str] = []
        checkpoint, state = await store.restore(0, 0, load, failures.append)
        assert (checkpoint.offset, state) == (5, b"older")
        assert load.loaded == [(b"older", ids)] and failures == ["memory"]


async def test_a_segment_compacted_away_is_read_from_its_later_copy(names: Names, producer: AIOKafkaProducer) -> None:
    """A segment written twice (again after a restore, or by an expelled worker) holds the same
    ids, and compaction keeps only the newest record of its key: a checkpoint that refers to
    the older offset restores from the newer copy. A tombstone after the copy (the segment was
    retired) leaves it missing, and that checkpoint is passed over. (Tansu does not compact:
    the checkpoints here refer to offsets that hold other records, as a reader finds them
    after compaction.)"""
    async with _checkpoint_store(names, producer) as (store, _):
        first = [f"a-{i}" for i in range(10)]
        second = [f"b-{i}" for i in range(10)]
        kept = await store.write_segment(0, 0, 10, encode_segment(0, 0, 10, first))
        await store.write(Checkpoint(0, 3, {}, b"oldest", memory=(kept,)))
        # what a reader finds where the first copy of 0/seen/10 was, once compacted: another record
        gone = MemoryRef(10, 20, kept.offset + 1, 50)
        twin = await store.write_segment(0, 10, 20, encode_segment(0, 10, 20, second))
        assert twin.offset > gone.offset
        await store.write(Checkpoint(0, 7, {}, b"middle", memory=(kept, gone)))

        load = _Loads()
        failures: list[str] = []
        checkpoint, state = await store.restore(0, 0, load, failures.append)
        assert (checkpoint.offset, state) == (7, b"middle")
        assert load.loaded == [(b"middle", first + second)] and failures == []

        # retired since: its tombstone is the key's last record, so the copy no longer counts
        await store.delete_segment(0, twin)
        load.loaded.clear()
        checkpoint, state = await store.restore(0, 0, load, failures.append)
        assert (checkpoint.offset, state) == (3, b"oldest")
        assert load.loaded == [(b"oldest", first)] and failures == ["memory"]


@contextlib.asynccontextmanager
async def _checkpoint_store(names: Names, producer: AIOKafkaProducer) -> AsyncIterator[tuple[CheckpointStore, str]]:
    """A store on this test's checkpoint topic (one partition), and the topic."""
    settings = names.settings()
    topic = settings.checkpoint_topic()
    await ensure_topics(settings, [TopicSpec(topic, 1)])
    reader = AIOKafkaConsumer(bootstrap_servers=names.bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        yield CheckpointStore(reader, producer, topic=topic, output_topics=[]), topic
    finally:
        await reader.stop()


class _Loads:
    """A `load` for `CheckpointStore.restore` that keeps what it was given."""

    def __init__(self) -> None:
        self.loaded: list[tuple[bytes, list[str] | None]] = []

    async def __call__(self, state: bytes, earlier: Earlier | None) -> bytes:
        self.loaded.append((state, earlier.ids if earlier is not None else None))
        return state
