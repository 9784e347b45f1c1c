"""Every worker follows the whole inventory topic (`streams.inventory.InventoryReader`), so it
routes an alert to its canonical asset even when another worker's decode stage owns the
inventory partition the asset was published to."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from correlators.identity import Identity
from schemas.context import Asset
from schemas.models import Alert, Domain
from streams.health import Health
from streams.inventory import InventoryReader
from streams.kafka import ensure_topics, topic_specs
from tests.integration.conftest import Names, until

pytestmark = pytest.mark.integration


def _alert(hostname: str | None = None, ip: str | None = None) -> Alert:
    return Alert(
        id=f"a-{hostname}-{ip}",
        source="test",
        domain=Domain.SECURITY,
        time=datetime(2024, 1, 1, tzinfo=UTC),
        asset=hostname or ip or "?",
        hostname=hostname,
        ip=ip,
        signature="sig",
    )


async def _publish(producer: AIOKafkaProducer, topic: str, asset: Asset, partition: int) -> None:
    await producer.send_and_wait(topic, asset.model_dump_json().encode(), key=asset.id.encode(), partition=partition)


async def test_the_inventory_is_read_from_the_start_then_followed(names: Names, producer: AIOKafkaProducer) -> None:
    settings = names.settings(SOCNOC_CONTEXT_PARTITIONS="3")  # (one by default: the reader reads them all)
    await ensure_topics(settings, topic_specs(settings))
    partitions = sorted(await producer.partitions_for(names.assets))
    assert len(partitions) == 3
    before = Asset(id="srv-db-7", aliases=("db7.corp.example", "10.20.30.40"))
    await _publish(producer, names.assets, before, partitions[0])
    # garbage and tombstones on the topic are skipped, not fatal
    for bad in (b"not json", b'{"id": ""}', b'{"id": "x", "criticality": 9}', b"\xff\xfe"):
        await producer.send_and_wait(names.assets, bad, key=b"bad", partition=partitions[-1])
    await producer.send_and_wait(names.assets, None, key=b"gone", partition=partitions[-1])

    identity = Identity()
    reader = InventoryReader(settings, Health(), identity)
    running = asyncio.create_task(reader.run())
    try:
        await asyncio.wait_for(reader.ready.wait(), 60)  # caught up with what was there
        assert reader.assets == 1
        assert identity.resolve(_alert(hostname="db7.corp.example")) == "srv-db-7"
        assert identity.resolve(_alert(ip="10.20.30.40")) == "srv-db-7"
        assert identity.resolve(_alert(hostname="unknown-host")) == "unknown-host"

        # published later, to another partition: followed (within the reader's fetch wait)
        after = Asset(id="fw-edge-2", aliases=("fw2", "192.0.2.1"))
        await _publish(producer, names.assets, after, partitions[-1])
        await until(lambda: reader.assets == 2, 30, "the new asset followed")
        assert identity.resolve(_alert(hostname="fw2.site.example")) == "fw-edge-2"
        assert identity.resolve(_alert(ip="192.0.2.1")) == "fw-edge-2"
        assert reader.state.running and reader.state.records == 7
    finally:
        reader.stop()
        await asyncio.wait_for(running, 30)
