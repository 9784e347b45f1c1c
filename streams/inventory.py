"""Every worker's full view of the inventory topic, for routing alerts by canonical asset.

The decode stage keys each alert by the asset id the inventory resolves it to, so the
worker reads all of `ctx.assets` (no consumer group) before decoding and keeps following it.
The engines get the same assets through the internal topic, in log order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import TopicPartition
from pydantic import ValidationError

from correlators.identity import Identity
from schemas.context import Asset
from streams.health import Health
from streams.kafka import make_consumer
from streams.settings import Settings
from streams.stage import Stage, start_clients, stop_clients

__all__ = ["InventoryReader"]

log = logging.getLogger(__name__)

# How long the broker may hold this reader's fetch open, at least. The inventory changes
# rarely, and Tansu holds a fetch for the whole wait even when records are ready: at the
# consumers' 10 ms an idle reader made ~68 fetches a second, each a few hundred µs of Python
# (of the worker's ~27% of a core at idle, a sixth). On Tansu a new alias is followed up to
# this much later; Kafka answers as soon as it is published.
INVENTORY_FETCH_WAIT_MS = 250


class InventoryReader(Stage):
    """Follows `ctx.assets` from the beginning into an `Identity`; `ready` once caught up."""

    name = "inventory"

    def __init__(self, settings: Settings, health: Health, identity: Identity) -> None:
        super().__init__(settings, health)
        self.identity = identity
        self.ready = asyncio.Event()
        self.assets = 0

    async def session(self) -> None:
        topic = self.settings.assets_topic
        consumer = make_consumer(
            self.settings,
            name="inventory",
            group=None,
            fetch_wait_floor_ms=INVENTORY_FETCH_WAIT_MS,
        )
        try:
            await start_clients(consumer)
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer.topics()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps) if tps else {}
            pending = {tp for tp in tps if ends[tp] > 0}
            self.state.running = True
            self.state.partitions = [f"{topic}:{p}" for p in sorted(parts)]
            while not self.stopping:
                if not pending:
                    self.ready.set()
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for rec in records:
                        self._add(rec.value)
                    self.state.records += len(records)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            await stop_clients(consumer)

    def _add(self, value: bytes | None) -> None:
        if value is None:
            return
        with contextlib.suppress(ValidationError):
            self.identity.add(Asset.model_validate_json(value))
            self.assets += 1
