"""Decode stage: input and context topics -> the internal by-asset topic, in batches.

Consumes `soc.alerts`, `noc.events` (any configured inputs) and the context topics in one
consumer group with aiokafka batches, produces each record's items (alerts keyed by
canonical asset, invalid inputs keyed by id, context and ticks to every partition), waits
for the acknowledgements, then commits. A crash repeats at most the uncommitted batch; the
correlation engine ignores alert ids it has already seen, so a repeat decides nothing twice.
(Deferring a batch's acknowledgements and commit past the next batch, as the correlate stage
does, left `tests/integration/test_event_order.py` without its last decisions: not done here.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from correlators.identity import Identity
from schemas.context import Asset, Change, Feedback
from schemas.epoch import epoch_seconds
from streams.decoder import Decoder, put_routed, written
from streams.health import Health
from streams.kafka import BatchSender, Sent, make_consumer, make_producer
from streams.metrics import Metrics
from streams.records import Item, Local, TickItem, encode_item
from streams.settings import Settings
from streams.stage import Stage, drop_task, start_clients, stop_clients

__all__ = ["DecodeStage", "SourceClock"]

log = logging.getLogger(__name__)

_TICK_INTERVAL_S = 1.0


@dataclass
class SourceClock:
    """Event-time progress of one input partition, and how long it has been silent.

    Times are monotonic seconds, except `wall` in `due` (epoch seconds): an idle source's
    watermark is wall clock minus the idle timeout, the one place the wall clock enters.
    """

    last_record: float
    watermark: float | None = None
    sent: float | None = None
    last_tick: float = 0.0
    idle_since_tick: float | None = None
    quiet_sent: bool = True  # nothing new since the last quiet (or idle) tick
    next_offset: int | None = None  # after the last record decoded
    announced: bool = False  # the correlating side knows this decoder took the source on

    def observe(self, now: float, event_time: float | None) -> None:
        """A record arrived (with an alert of this event time, if any)."""
        self.last_record = now
        self.idle_since_tick = None
        self.quiet_sent = False
        if event_time is not None and (self.watermark is None or event_time > self.watermark):
            self.watermark = event_time

    def due(
        self, now: float, idle_after: float, wall: float, quiet_after: float, high: int | None = None
    ) -> TickItem | None:
        """The tick to broadcast now (source left blank for the caller), if any; `high` is the
        partition's high watermark as last fetched: a source is quiet when it has nothing
        queued (its records are all decoded) and nothing new came for `quiet_after`."""
        silent = now - self.last_record
        if silent >= idle_after:
            if self.idle_since_tick is None or now - self.idle_since_tick >= idle_after:
                return TickItem("", wall - idle_after, idle=True)
            return None
        caught_up = high is not None and self.next_offset is not None and self.next_offset >= high
        if not self.quiet_sent and silent >= quiet_after and caught_up:
            # A partition taken over in a rebalance with nothing new on it has no watermark
            # here: 0 says "quiet" without claiming any progress.
            return TickItem("", self.watermark if self.watermark is not None else 0.0, quiet=True)
        if self.watermark is None:
            return None
        if self.watermark != self.sent and now - self.last_tick >= _TICK_INTERVAL_S:
            return TickItem("", self.watermark)
        return None

    def ticked(self, now: float, tick: TickItem) -> None:
        """`tick` was broadcast."""
        self.last_tick = now
        if tick.idle:
            self.idle_since_tick = now
        else:
            self.sent = tick.watermark
        if tick.idle or tick.quiet:
            self.quiet_sent = True


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, stage: DecodeStage) -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._stage.lock:  # the batches in flight are acknowledged and committed first
            await self._stage.settle()
            self._stage.sources.clear()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        now = time.monotonic()
        inputs = self._stage.settings.inputs
        self._stage.sources = {
            # quiet_sent=False: once caught up, say so, or the partition's alerts held by
            # the correlating side would wait for it until the idle timeout
            f"{tp.topic}:{tp.partition}": SourceClock(last_record=now, last_tick=now, quiet_sent=False)
            for tp in assigned
            if tp.topic in inputs
        }
        self._stage.state.partitions = sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)
        self._stage.expect_others = True
        log.info("decode stage assigned %s", ", ".join(f"{t.topic}:{t.partition}" for t in assigned))


class DecodeStage(Stage):
    """Inputs -> internal topic; never stops on bad input."""

    name = "decode"

    def __init__(
        self,
        settings: Settings,
        health: Health,
        metrics: Metrics,
        identity: Identity,
    ) -> None:
        super().__init__(settings, health)
        self.metrics = metrics
        context: Mapping[str, type[Asset] | type[Change] | type[Feedback]] = {
            settings.assets_topic: Asset,
            settings.changes_topic: Change,
            settings.feedback_topic: Feedback,
        }
        self.decoder = Decoder(
            settings.inputs,
            context_topics=context,
            identity=identity,
            default_tz=settings.tz(),
            max_record_bytes=settings.max_record_bytes,
            dlq_max_raw_bytes=settings.dlq_max_raw_bytes,
            single_partition=settings.partition_by == "single",
        )
        self.lock = asyncio.Lock()
        self.sources: dict[str, SourceClock] = {}
        # the input partitions other decoders own are still to be named (`_announce`)
        self.expect_others = False
        self._internal = settings.internal_topic()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[int] = []
        # sent, not yet acknowledged: each entry's acks, the offsets to commit after them, and
        # its tagged requests (`handoff`)
        self._inflight: list[
            tuple[list[asyncio.Future[Any]], dict[TopicPartition, OffsetAndMetadata], list[Sent]]
        ] = []
        self._commit: asyncio.Task[None] | None = None
        # The correlate stage of this process, if it runs here: it is handed every internal
        # record once acknowledged, with its offset (see `CorrelateStage.offer`).
        self.handoff: Callable[[list[Local]], None] | None = None

    async def session(self) -> None:
        settings = self.settings
        consumer = make_consumer(
            settings,
            name="decode",
            group=f"{settings.app_id}-decode",
            max_poll_records=settings.batch_max_records,
        )
        producer = make_producer(settings, name="decode")
        try:
            await start_clients(producer, consumer)
            self._producer, self._consumer = producer, consumer
            self._inflight, self._commit = [], None
            parts = producer.client.cluster.partitions_for_topic(self._internal)
            if not parts:
                await producer.client.force_metadata_update()
                parts = producer.client.cluster.partitions_for_topic(self._internal)
            if not parts:
                raise RuntimeError(f"topic {self._internal} does not exist")
            self._partitions = sorted(parts)
            topics = [*settings.inputs, *settings.context_topics()]
            consumer.subscribe(topics, listener=_Listener(self))
            self.state.running = True
            log.info("decode stage consuming %s", ", ".join(topics))
            while not self.stopping:
                batch = await consumer.getmany(
                    timeout_ms=200, max_records=settings.batch_max_records
                )
                async with self.lock:
                    if batch:
                        await self._process(consumer, producer, batch)
                    else:
                        await self.settle(wait_commit=False)
                    await self._ticks(producer, consumer)
            async with self.lock:
                await self.settle()
        finally:
            self._producer = self._consumer = None
            self._inflight = []
            commit, self._commit = self._commit, None
            if commit is not None:
                await drop_task(commit)
            await stop_clients(consumer, producer)

    async def settle(self, *, wait_commit: bool = True) -> None:
        """Wait for the acknowledgements of what was sent and commit the offsets they
        complete, after any commit still in flight (`wait_commit=False`: in the background)."""
        consumer = self._consumer
        if consumer is None:
            return
        done, self._inflight = self._inflight, []
        commits: dict[TopicPartition, OffsetAndMetadata] = {}
        acked: list[Sent] = []
        for futures, offsets, sent in done:
            if futures:
                await asyncio.gather(*futures)
            commits.update(offsets)
            acked.extend(sent)
        if acked and self.handoff is not None:
            self.handoff(written(acked))
        if commits or wait_commit:
            previous, self._commit = self._commit, None
            if previous is not None:
                await previous  # commits go one at a time, in order
        if commits:
            self._commit = asyncio.create_task(self._commit_offsets(consumer, commits))
            if wait_commit:
                commit, self._commit = self._commit, None
                await commit

    async def _commit_offsets(
        self, consumer: AIOKafkaConsumer, commits: dict[TopicPartition, OffsetAndMetadata]
    ) -> None:
        for tp, offset in commits.items():
            high = consumer.highwater(tp)
            if high is not None:
                self.metrics.set_consumer_lag(tp.topic, tp.partition, int(high) - offset.offset)
        try:
            await consumer.commit(commits)
        except CommitFailedError as exc:  # rebalanced: the new owner repeats the batch
            log.warning("decode commit failed (%s); the batch will be seen again", exc)

    async def _process(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        batch: dict[TopicPartition, list[Any]],
    ) -> None:
        sender = BatchSender(producer, tagged=self.handoff is not None)
        await self._announce(sender)
        commits: dict[TopicPartition, OffsetAndMetadata] = {}
        now = time.monotonic()
        inputs = self.settings.inputs
        for tp, records in batch.items():
            source = f"{tp.topic}:{tp.partition}"
            clock = self.sources.get(source) if tp.topic in inputs else None
            if tp.topic in inputs:
                self.metrics.observe_input(tp.topic, len(records))
            routed, latest = self.decoder.decode_fetched(records, self.metrics.alerts.counts)
            i, n = 0, len(routed)
            while i < n:  # (the records into batches compiled, no coroutine a record)
                # (the internal topic's partitions as the session found them: they never
                # change under a running worker, or keyed routing would move assets between
                # engines)
                i = put_routed(sender, self._internal, len(self._partitions), routed, i)
                if sender.queued:
                    await sender.drain()
                if i < n and routed[i].broadcast:
                    await self._broadcast(sender, routed[i].item)
                    i += 1
            if records:
                commits[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
                if clock is not None:  # (one call a batch: each record's would set the same)
                    clock.observe(now, None if latest is None else epoch_seconds(latest))
                    clock.next_offset = records[-1].offset + 1
            self.state.records += len(records)
        self._inflight.append((await sender.send(), commits, sender.take_sent()))
        await self.settle()
        self.state.last_batch_at = time.monotonic()

    async def _broadcast(self, sender: BatchSender, item: Item) -> None:
        encoded = encode_item(item)
        tag = (item, encoded.value)
        for p in self._partitions:
            sender.put(self._internal, encoded.value, p, headers=encoded.headers, tag=tag)
        await sender.drain()

    async def _announce(self, sender: BatchSender) -> None:
        """Tell every partition about input partitions newly taken on, before any of their
        alerts: the correlating side waits for them (`streams.reorder`). After an assignment,
        also name the input partitions other decoders own (`expect`): one whose decoder has
        not announced it yet would otherwise not hold this decoder's first fetch back."""
        for name, clock in self.sources.items():
            if not clock.announced:
                clock.announced = True
                await self._broadcast(sender, TickItem(name, 0.0, start=True))
        if self.expect_others and self._consumer is not None:
            others = _unowned(self._consumer, self.settings.inputs, self.sources)
            if others is not None:  # (None: metadata not there yet; the next batch tries again)
                self.expect_others = False
                for name in others:
                    await self._broadcast(sender, TickItem(name, 0.0, expect=True))

    async def _ticks(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> None:
        """Broadcast the sources' event-time progress (and idleness) to every partition."""
        if not self.sources:
            return
        now = time.monotonic()
        idle_after = self.settings.idle_timeout.total_seconds()
        quiet_after = self.settings.order_wait.total_seconds()
        sender = BatchSender(producer, tagged=self.handoff is not None)
        await self._announce(sender)
        wall = time.time()
        for name, clock in self.sources.items():
            topic, _, partition = name.rpartition(":")
            tp = TopicPartition(topic, int(partition))
            high = consumer.highwater(tp)
            if clock.next_offset is None and high is not None and not clock.quiet_sent:
                clock.next_offset = await _position(consumer, tp)
            tick = clock.due(now, idle_after, wall, quiet_after, None if high is None else int(high))
            if tick is None:
                continue
            tick = TickItem(name, tick.watermark, tick.idle, tick.quiet)
            clock.ticked(now, tick)
            await self._broadcast(sender, tick)
        futures = await sender.send()
        if futures:
            self._inflight.append((futures, {}, sender.take_sent()))
            # handed over now, not after the next poll (up to 200 ms on an idle input): the
            # correlate stage's consumer would fetch them first, and go on fetching partitions
            # whose records could come from memory (`CorrelateStage._unpause_idle`)
            await self.settle(wait_commit=False)


def _unowned(consumer: AIOKafkaConsumer, inputs: Mapping[str, object], owned: Mapping[str, object]) -> list[str] | None:
    """The input partitions the cluster metadata lists that this decoder does not own, as
    sources (`topic:partition`); None while a topic's metadata is missing."""
    names: list[str] = []
    for topic in sorted(inputs):
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return None
        names += [name for p in sorted(parts) if (name := f"{topic}:{p}") not in owned]
    return names


async def _position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The partition's fetch position if the consumer knows it already (None otherwise)."""
    try:
        return int(await asyncio.wait_for(consumer.position(tp), 0.05))
    except (TimeoutError, KafkaError, IllegalStateError, AssertionError):
        return None
