"""Fencing a cut-off worker (`streams.lease`), on the real broker behind the fault proxy.

A producer cut off from the broker keeps what it was sending and delivers it when the network
comes back: for the correlate stage that is after another worker took its partitions over, so
the outputs are published twice. `abandon_producer` must make sure none of it lands; the group
lease must see the coordinator stop accepting the member, and again once it rejoins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams.broker import EmbeddedBroker, free_port
from streams.faultproxy import FaultProxy
from streams.kafka import high_watermarks
from streams.lease import GroupLease, LeaseLost, ProducerFence
from tests.integration.conftest import until

pytestmark = pytest.mark.integration


@dataclass
class Cut:
    """A broker that advertises a fault proxy in front of it, and that proxy."""

    broker: EmbeddedBroker
    proxy: FaultProxy

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.proxy.listen_port}"


@pytest.fixture
async def cut(tmp_path: Path) -> AsyncIterator[Cut]:
    port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised=f"127.0.0.1:{port}")
    broker.start()
    proxy = await FaultProxy(port, ("127.0.0.1", broker.port)).start()
    try:
        yield Cut(broker, proxy)
    finally:
        await proxy.stop()
        broker.stop()


async def _producer(address: str, client_id: str) -> tuple[AIOKafkaProducer, ProducerFence]:
    producer = AIOKafkaProducer(
        bootstrap_servers=address, client_id=client_id, acks="all", linger_ms=0, request_timeout_ms=30_000
    )
    fence = ProducerFence(producer)  # (before it starts, as the correlate stage does)
    await producer.start()
    return producer, fence


async def _values(address: str, topic: str) -> list[bytes]:
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=address, client_id="reader", auto_offset_reset="earliest")
    await consumer.start()
    try:
        end = (await high_watermarks(consumer, [tp]))[tp]
        consumer.assign([tp])
        consumer.seek(tp, 0)
        values: list[bytes] = []
        while len(values) < end:
            got = await consumer.getmany(tp, timeout_ms=1000)
            values += [r.value for r in got.get(tp, [])]
        return values
    finally:
        await consumer.stop()


async def test_an_abandoned_producer_delivers_nothing_it_held_when_the_network_returns(cut: Cut) -> None:
    topic = "fence-out"
    kept, kept_fence = await _producer(cut.address, "kept")
    dropped, fence = await _producer(cut.address, "dropped")
    try:
        await kept.send_and_wait(topic, b"kept-before", partition=0)
        await dropped.send_and_wait(topic, b"dropped-before", partition=0)
        cut.proxy.cut("drop")  # both lose the broker: what they send now waits
        held = [
            await kept.send(topic, b"kept-held", partition=0),
            await dropped.send(topic, b"dropped-held", partition=0),
        ]
        await asyncio.sleep(0.5)
        assert kept_fence.holds_undelivered() and fence.holds_undelivered()
        assert not any(f.done() for f in held)
        fence.abandon(LeaseLost("fenced by the test"))
        await asyncio.sleep(0.2)
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(held[1], 5)
        assert not fence.holds_undelivered()
        with pytest.raises(LeaseLost):  # nothing new is taken either
            await dropped.send(topic, b"dropped-after", partition=0)
        cut.proxy.heal()
        # the producer left alone retries its record once the network is back: the zombie case
        await asyncio.wait_for(held[0], 30)
        await asyncio.sleep(1.0)  # (room for anything of the abandoned one to land)
        with pytest.raises(KafkaError):  # it connects no more
            await asyncio.wait_for(dropped.client.fetch_all_metadata(), 10)
        assert await _values(cut.address, topic) == [b"kept-before", b"dropped-before", b"kept-held"]
        started = time.monotonic()
        await asyncio.wait_for(dropped.stop(), 5)  # waits for nothing it held
        assert time.monotonic() - started < 2
    finally:
        await kept.stop()
        await dropped.stop()


async def test_the_group_lease_lapses_while_cut_off_and_is_renewed_on_rejoining(cut: Cut) -> None:
    topic = "fence-in"
    session_s = 2.0
    seed, _ = await _producer(cut.address, "seed")
    await seed.send_and_wait(topic, b"x", partition=0)
    await seed.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=cut.address,
        client_id="member",
        group_id="fence-group",
        session_timeout_ms=int(session_s * 1000),
        heartbeat_interval_ms=300,
        rebalance_timeout_ms=10_000,
        enable_auto_commit=False,
    )
    await consumer.start()
    lease = GroupLease(session_s)
    try:
        assert not lease.valid()  # nothing accepted yet
        lease.attach(consumer)
        fetching = asyncio.ensure_future(consumer.getmany(timeout_ms=30_000))
        await until(lease.valid, 30, "the lease renewed by the join")
        await lease.gate()  # returns at once
        await asyncio.sleep(1.0)
        assert lease.valid(), "heartbeats keep it"

        cut.proxy.cut("drop", only="member")
        cutting = time.monotonic()
        await until(lambda: not lease.valid(), 5, "the lease to lapse")
        assert lease.renewed_at <= cutting, "nothing accepted since the cut"
        assert time.monotonic() >= lease.renewed_at + session_s * 0.5
        with pytest.raises(LeaseLost):
            await lease.gate()  # no heartbeat accepted within a session
        assert time.monotonic() > lease.fence_at

        cut.proxy.heal()
        fetching.cancel()
        # expelled meanwhile: the consumer rejoins, and the join renews the lease
        await until(lambda: consumer.assignment() and lease.valid(), 60, "the lease renewed after rejoining")
        await lease.gate()
    finally:
        await consumer.stop()
