"""Driving a running stream from outside: wait until the inputs are decoded, end the input.

`socnoc run` and the integration tests replay a finite scenario through Kafka. When the
producer is done and the decode group has caught up, `end_of_input` appends a flush marker
to every correlation partition, after everything already routed there: each engine then
decides its waiting alerts exactly as `socnoc replay` does at the end of its files.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.rules import default_rules, load_rules
from streams.kafka import client_options, high_watermarks
from streams.records import FlushItem, Item, RulesItem, encode_item
from streams.settings import Settings

__all__ = ["decode_lag", "wait_decoded", "end_of_input", "broadcast", "current_rules"]


async def decode_lag(settings: Settings) -> int:
    """Input records not yet committed by the decode group (all input and context topics)."""
    group = AIOKafkaConsumer(
        **client_options(settings),
        group_id=f"{settings.app_id}-decode",
        enable_auto_commit=False,
    )
    reader = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    producer = AIOKafkaProducer(**client_options(settings))
    await group.start()
    await reader.start()
    await producer.start()
    try:
        tps: list[TopicPartition] = []
        for topic in [*settings.inputs, *settings.context_topics()]:
            parts = await producer.partitions_for(topic)
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        ends = await high_watermarks(reader, tps)
        lag = 0
        for tp in tps:
            committed = await group.committed(tp)
            lag += max(0, ends[tp] - int(committed or 0))
        return lag
    finally:
        await producer.stop()
        await reader.stop()
        await group.stop()


async def wait_decoded(settings: Settings, timeout_s: float, *, poll_s: float = 0.2) -> None:
    """Return once the decode group has committed every input record; TimeoutError if not."""
    deadline = time.monotonic() + timeout_s
    while True:
        lag = await decode_lag(settings)
        if lag == 0:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the decode stage is still {lag} records behind")
        await asyncio.sleep(poll_s)


async def end_of_input(settings: Settings) -> None:
    """Append a flush marker to every correlation partition."""
    await broadcast(settings, FlushItem())


async def broadcast(settings: Settings, item: Item) -> None:
    """Append an item to every correlation partition, after what is already there."""
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", max_request_size=16 * 1024 * 1024
    )
    await producer.start()
    try:
        topic = settings.internal_topic()
        parts = await producer.partitions_for(topic)
        encoded = encode_item(item)
        for p in sorted(parts):
            await producer.send_and_wait(topic, encoded.value, partition=p, headers=encoded.headers)
    finally:
        await producer.stop()


def current_rules(settings: Settings) -> RulesItem:
    """The rule set the settings name: the default pack (unless disabled) and the files."""
    rules = list(default_rules()) if settings.default_rules else []
    for path in settings.rules:
        rules.extend(load_rules(path))
    return RulesItem(tuple(rules))
