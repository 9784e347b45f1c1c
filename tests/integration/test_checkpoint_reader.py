"""The checkpoint store's reader fetches nothing once a read is done.

A group-less consumer keeps fetching whatever it is assigned in the background. The
correlate stage's reader reads checkpoints and scans the outputs when it restores, then
reads the outputs' end offsets at every checkpoint: left assigned, it read every output the
worker wrote back into memory, and each end-offsets request waited behind a pending fetch on
the broker connection (15-53 ms of each checkpoint pause under the benchmark's load).
"""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.checkpoints import Checkpoint, CheckpointStore, tp_key
from streams.kafka import TopicSpec, ensure_topics, high_watermarks
from tests.integration.conftest import Names

pytestmark = pytest.mark.integration


async def _nothing_fetched(consumer: AIOKafkaConsumer) -> None:
    """Every assigned partition is paused, and a read after new records returns none."""
    assigned = consumer.assignment()
    assert consumer.paused() == assigned, (assigned, consumer.paused())
    assert await consumer.getmany(timeout_ms=300) == {}


async def test_reads_leave_the_reader_idle(names: Names, producer: AIOKafkaProducer) -> None:
    topic, outputs = f"{names.prefix}.checkpoints", [names.decisions, names.incidents]
    await ensure_topics(names.settings(), [TopicSpec(name, 2) for name in (topic, *outputs)])
    consumer = AIOKafkaConsumer(bootstrap_servers=names.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        store = CheckpointStore(consumer, producer, topic=topic, output_topics=outputs)
        first = await store.output_ends()
        for p in (0, 1):
            await store.write(Checkpoint(p, 0, first, b"state"))
        headers = [("socnoc-src", b"1:4"), ("socnoc-oid", b"d:a1")]
        await producer.send_and_wait(names.decisions, b"{}", partition=1, headers=headers)

        found = await store.published_since(first, {0, 1})
        assert found[1].ids == {"d:a1"} and found[1].last_src_offset == 4
        assert not found[0].ids
        await producer.send_and_wait(names.decisions, b"{}", partition=1, headers=headers)
        await _nothing_fetched(consumer)

        checkpoint, state = await store.restore(1, 0, _load)
        assert state == b"state" and checkpoint.partition == 1
        await store.write(Checkpoint(1, 9, await store.output_ends(), b"later"))
        await _nothing_fetched(consumer)

        tps = [TopicPartition(names.decisions, p) for p in (0, 1)]
        ends = await high_watermarks(consumer, tps)
        assert {tp_key(tp): end for tp, end in ends.items()} == {f"{names.decisions}:0": 0, f"{names.decisions}:1": 2}
        await producer.send_and_wait(names.decisions, b"{}", partition=0)
        await _nothing_fetched(consumer)
        assert (await store.output_ends())[f"{names.decisions}:0"] == 1
    finally:
        await consumer.stop()


async def _load(state: bytes, earlier: object) -> bytes:
    return state
