"""`kill -9` of a worker mid-stream, then a restart: every input still has exactly one
decision, no dead letter is repeated, and no incident is opened twice or skips a version."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.checkpoints import CheckpointStore
from tests.integration.checks import assert_decided_once, assert_incidents_whole
from tests.integration.conftest import Names, Tail, WorkerProcess, until
from tests.integration.datasets import aitads_rows, produce_paced

pytestmark = pytest.mark.integration

GARBAGE_EVERY = 1000


@pytest.mark.parametrize(
    "segment",
    [
        "1000000",  # the whole memory in each checkpoint (no segment fills)
        "64",  # most of it in memory segments, read back on the restore
    ],
    ids=["memory-in-checkpoints", "memory-in-segments"],
)
async def test_kill9_mid_stream_then_restart_loses_and_repeats_nothing(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer, segment: str
) -> None:
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
        SOCNOC_BATCH_MAX_RECORDS="200",
        SOCNOC_PARTITION_BY="asset",  # several partitions to restore
        SOCNOC_IDLE_TIMEOUT="2",
        SOCNOC_MEMORY_SEGMENT_IDS=segment,
    )
    first = workers(env, "first")
    await first.wait_partitions()
    _, rows = aitads_rows()
    sent: list[str] = []
    sending = asyncio.create_task(
        produce_paced(producer, names.alerts, [r for _, r in rows], sent, 6000, GARBAGE_EVERY)
    )

    async with Tail(names.bootstrap, names.decisions, names.incidents, names.dlq) as tail:
        third = len(rows) // 3
        await until(lambda: len(tail.records[names.decisions]) >= third, 60, "a third decided", first)
        first.kill9()
        killed_at = len(tail.records[names.decisions])
        second = workers(env, "second")
        await second.wait_partitions()
        await sending
        assert len(sent) == len(rows)
        expected = set(sent)

        def all_decided() -> bool:
            return expected <= {r.key.decode() for r in tail.records[names.decisions] if r.key}

        await until(all_decided, 180, "a decision for every input", second)
        await asyncio.sleep(2 * 1.0 + 1)  # two checkpoint intervals: anything repeated shows up
        decisions = tail.values(names.decisions)
        events = tail.values(names.incidents)
        letters = tail.values(names.dlq)

    assert 0 < killed_at < len(rows), "the kill did not happen mid-stream"

    def show(repeated: dict[str, int]) -> None:
        dup = next(iter(repeated))
        for r in tail.records[names.decisions]:
            if r.key and r.key.decode() == dup:
                print("DUP", r.partition, r.offset, r.headers, r.value[:300])
        print(second.log_text()[-3000:])

    assert_decided_once(decisions, expected, show)
    garbage = {d["alert_id"] for d in decisions if d["disposition"] == "invalid"}
    assert len(garbage) == len(range(0, len(rows), GARBAGE_EVERY))
    dlq_ids = Counter(f"{d['topic']}:{d['partition']}:{d['offset']}" for d in letters)
    assert set(dlq_ids) == garbage and all(n == 1 for n in dlq_ids.values())

    assert events, "the slice holds an attack: expected incident events"
    incidents = assert_incidents_whole(events)
    in_incidents = {d["incident_id"] for d in decisions if d["incident_id"]}
    assert in_incidents <= incidents
    assert second.alive()


async def test_a_worker_stopped_while_it_skips_what_was_published_leaves_a_checkpoint_that_repeats_nothing(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """A restore that finds outputs already published past its checkpoint skips them until it
    is past them. A checkpoint taken meanwhile must still lead a later restore's scan back to
    those outputs: its output ends were the ends at that moment, past them, and the next worker
    published them again (155 decisions in one `make soak` run)."""
    env = {
        "SOCNOC_INPUTS": orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
        "SOCNOC_PARTITIONS": "1",  # (no other partition's older checkpoint widens the scan)
    }
    # the first worker checkpoints only at its start, then decides everything and is killed
    first = workers(names.worker_env(**env, SOCNOC_CHECKPOINT_INTERVAL="3600"), "first")
    await first.wait_partitions()
    _, rows = aitads_rows()
    sent: list[str] = []
    async with Tail(names.bootstrap, names.decisions) as tail:
        await produce_paced(producer, names.alerts, [r for _, r in rows], sent, 20000)
        expected = set(sent)

        def decided() -> set[str]:
            return {r.key.decode() for r in tail.records[names.decisions] if r.key}

        await until(lambda: expected <= decided(), 180, "every alert decided", first)
        first.kill9()
        # the second restores from that first checkpoint and goes through the whole log again,
        # publishing nothing, checkpointing often (slowly: pure Python, small batches); it is
        # stopped before it is through, and its stop writes a last checkpoint there
        slow = {"SOCNOC_CHECKPOINT_INTERVAL": "0.1", "SOCNOC_PURE_PYTHON": "1", "SOCNOC_BATCH_MAX_RECORDS": "50"}
        second = workers(names.worker_env(**env, **slow), "second")

        async def catching_up() -> bool:
            got = await second.health()
            return got is not None and got[1]["stages"]["correlate"]["records"] > 0

        await until(catching_up, 60, "the second worker going through the log again", second)
        assert second.terminate() == 0
        assert "already published and will not be repeated" in second.log_text()
        stopped_at = await _newest_checkpoint_offset(names, producer)
        assert stopped_at < len(rows), f"the second worker went through the log ({stopped_at}) before its stop"
        # the third restores from the second's last checkpoint
        third = workers(names.worker_env(**env), "third")
        await third.wait_partitions()
        marker: list[str] = []
        await produce_paced(producer, names.alerts, [rows[-1][1]], marker, 100)
        await until(lambda: set(marker) <= decided(), 120, "the third worker through the log", third)
        decisions = tail.values(names.decisions)
    assert_decided_once(decisions, expected | set(marker))


async def _newest_checkpoint_offset(names: Names, producer: AIOKafkaProducer) -> int:
    """The offset of internal partition 0's newest checkpoint."""
    reader = AIOKafkaConsumer(bootstrap_servers=names.bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        store = CheckpointStore(reader, producer, topic=names.settings().checkpoint_topic(), output_topics=[])
        newest = (await store.latest([0]))[0]
    finally:
        await reader.stop()
    assert newest is not None, "no checkpoint of partition 0"
    return newest.offset
