"""A corrupt checkpoint is the newest one: the restarted worker falls back to an older one.

A worker is killed mid-stream; then, for every correlation partition, a truncated copy of its
last checkpoint (a readable header with a broken state) and a record of garbage are appended
to the checkpoint topic. The next worker passes over them (a clear log line, the
`socnoc_checkpoint_restore_failures_total` counter), resumes from the previous valid checkpoint
and replays from there: every input still gets exactly one decision, nothing is repeated.
The last resort (no usable checkpoint: the log from its start) is checked on the store itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.errors import SnapshotError
from streams.checkpoints import Checkpoint, CheckpointStore, checkpoint_key
from streams.kafka import TopicSpec, ensure_topics, high_watermarks
from streams.partition import Processor, Snapshotter
from tests.integration.checks import assert_decided_once, assert_incidents_whole
from tests.integration.conftest import Names, Tail, WorkerProcess, ensure_topic_partitions, until
from tests.integration.datasets import aitads_rows, produce_paced

pytestmark = pytest.mark.integration


_NO_SNAPSHOT = Snapshotter(lambda c, f: b"", lambda b, e: None)  # type: ignore[arg-type,return-value]


async def _last_records(bootstrap: str, topic: str, partitions: int) -> dict[int, bytes]:
    """The newest checkpoint of each partition of `topic` (memory segments, written between
    checkpoints under keys of their own, can come after it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        last: dict[int, bytes] = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if record.value is not None and record.key == checkpoint_key(tp.partition):
                        last[tp.partition] = record.value
        return last
    finally:
        await consumer.stop()


async def _real_ends(bootstrap: str, keys: set[str]) -> dict[str, int]:
    """Exact end offsets (from fetch responses) of `topic:partition` keys."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(k.rpartition(":")[0], int(k.rpartition(":")[2])) for k in sorted(keys)]
        ends = await high_watermarks(consumer, tps)
        return {f"{tp.topic}:{tp.partition}": int(end) for tp, end in ends.items()}
    finally:
        await consumer.stop()


async def test_corrupt_newest_checkpoint_falls_back_and_loses_or_repeats_nothing(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
        SOCNOC_BATCH_MAX_RECORDS="200",
        SOCNOC_PARTITION_BY="asset",  # several partitions to restore
        SOCNOC_IDLE_TIMEOUT="2",
    )
    checkpoint_topic = names.settings(**env).checkpoint_topic()
    first = workers(env, "first")
    await first.wait_partitions()
    _, rows = aitads_rows()
    sent: list[str] = []
    sending = asyncio.create_task(produce_paced(producer, names.alerts, [r for _, r in rows], sent, 6000))

    async with Tail(names.bootstrap, names.decisions, names.incidents, names.dlq) as tail:
        half = len(rows) // 2
        await until(lambda: len(tail.records[names.decisions]) >= half, 90, "half decided", first)
        first.kill9()
        killed_at = len(tail.records[names.decisions])

        # the newest checkpoint of every partition becomes unreadable
        partitions = await ensure_topic_partitions(names.bootstrap, checkpoint_topic)
        last = await _last_records(names.bootstrap, checkpoint_topic, partitions)
        assert last, "the first worker wrote no checkpoint"
        # a checkpoint's output bound is at or before each output partition's real end
        bounds = [Checkpoint.decode(value).out_ends for value in last.values()]
        real = await _real_ends(names.bootstrap, {k for bound in bounds for k in bound})
        assert all(offset <= real[key] for bound in bounds for key, offset in bound.items()), (bounds, real)
        assert any(offset > 0 for bound in bounds for offset in bound.values())
        for p, value in sorted(last.items()):
            good = Checkpoint.decode(value)
            assert good.state is not None, p
            key = str(p).encode()
            await producer.send_and_wait(checkpoint_topic, b"\x00\x00\x00\x07garbage!", key=key, partition=p)
            truncated = value[: len(value) - len(good.state) // 2]
            with pytest.raises(SnapshotError):  # the header reads, the state does not
                Processor.load(Checkpoint.decode(truncated).state or b"", _NO_SNAPSHOT)
            await producer.send_and_wait(checkpoint_topic, truncated, key=key, partition=p)

        second = workers(env, "second")
        await second.wait_partitions()
        await sending
        assert len(sent) == len(rows)
        expected = set(sent)

        def all_decided() -> bool:
            return expected <= {r.key.decode() for r in tail.records[names.decisions] if r.key}

        await until(all_decided, 180, "a decision for every input", second)
        await asyncio.sleep(3)  # a few checkpoint intervals: anything repeated shows up
        decisions = tail.values(names.decisions)
        events = tail.values(names.incidents)
        metrics = await second.metrics()

    assert 0 < killed_at < len(rows), "the kill did not happen mid-stream"
    assert_decided_once(decisions, expected)
    assert events, "the slice holds an attack: expected incident events"
    assert_incidents_whole(events)

    def failures(what: str) -> float:
        found = re.search(rf'^socnoc_checkpoint_restore_failures_total{{what="{what}"}} (\S+)$', metrics, re.M)
        return float(found.group(1)) if found else 0.0

    assert failures("state") == len(last)
    assert failures("envelope") == len(last)
    log = second.log_text()
    assert "corrupt checkpoint of partition" in log and "passed over, trying an older one" in log
    assert "restored from an older checkpoint" in log
    # Whether outputs were re-run depends on where the kill fell relative to the older
    # checkpoint (under load it can fall right after one): conservation above is what holds.
    assert second.alive()


async def test_no_usable_checkpoint_restarts_from_the_beginning(names: Names, producer: AIOKafkaProducer) -> None:
    """Last resort: every checkpoint of a partition is corrupt -> its log from the start, with
    the output scan bound at the outputs' beginning (so everything published is recognised)."""
    topic, outputs = f"{names.prefix}.checkpoints", [names.decisions, names.incidents]
    await ensure_topics(names.settings(), [TopicSpec(name, 1) for name in (topic, *outputs)])
    for name in outputs:
        await producer.send_and_wait(name, b"{}", partition=0)  # published before the crash
    bad = Checkpoint(0, 5, {}, b"x\x9cnot zlib at all").encode()
    for value in (bad, b"\xff" * 9, bad[:12]):
        await producer.send_and_wait(topic, value, partition=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=names.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    failed: list[str] = []
    try:
        store = CheckpointStore(consumer, producer, topic=topic, output_topics=outputs)

        async def load(state: bytes, earlier: object) -> bytes:
            raise SnapshotError("corrupt")

        checkpoint, state = await store.restore(0, 3, load, failed.append)
        ends_after = await store.output_ends()
    finally:
        await consumer.stop()
    assert state is None
    assert checkpoint.offset == 3 and checkpoint.state is None
    assert checkpoint.out_ends == {f"{t}:0": 0 for t in outputs}
    assert sorted(failed) == ["envelope", "envelope", "state"]
    assert ends_after == {f"{t}:0": 1 for t in outputs}  # the last resort writes no checkpoint
