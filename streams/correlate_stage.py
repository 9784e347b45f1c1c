"""Correlation stage: the internal by-asset topic -> decisions, incident events, dead letters.

Each assigned partition has its own engine (`partition.Processor`). A batch is fed record by
record and its outputs are produced; their acknowledgements are awaited while the next batch
is fed (a failed one ends the session, which restores from the checkpoints), and every
`SOCNOC_CHECKPOINT_INTERVAL` (less often for a state slow to encode) the partition's state is
checkpointed with the next offset
(`checkpoints.py`), once every output before it is acknowledged. A partition
that moves (rebalance) is checkpointed by its old owner before the new one restores it; a
partition whose owner died is restored from its last checkpoint, its log is processed again
from there, and what had already been published is recognised by identity and not published
twice. So every input gets exactly one decision and no incident event is repeated, without
broker transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Coroutine, Iterable
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from correlators.types import Correlator, Earlier
from schemas.models import Decision, IncidentEvent, IncidentKind
from streams.caps import CapWatch
from streams.checkpoints import (
    Checkpoint,
    CheckpointStore,
    MemoryPlan,
    MemoryRef,
    expire_retired,
    plan_memory,
    sealed_to,
)
from streams.health import Health
from streams.kafka import BatchSender, checkpoint_keep_s, make_consumer, make_producer
from streams.lease import GroupLease, LeaseLost, ProducerFence
from streams.metrics import Metrics
from streams.outputs import Outputs
from streams.partition import Processor, Snapshotter
from streams.partition_state import (
    PACK_INLINE_BYTES,
    PartitionState,
    bounded_ends,
    checkpoint_spacing,
    due_partitions,
    encode_all,
    encode_inline,
    packed,
    phase_kept,
    segment,
)
from streams.records import BadInternalRecord, Emitted, Local, decode_item
from streams.settings import Settings
from streams.stage import Stage, drop_task, start_clients, stop_clients

__all__ = ["CorrelateStage"]

log = logging.getLogger(__name__)


# how often a lapsed lease is checked against what the producers hold
_FENCE_POLL_S = 0.05
# set while `assigned()` runs (in its task only: writes running behind are still gated)
_ASSIGNING: contextvars.ContextVar[bool] = contextvars.ContextVar("assigning", default=False)
# Memory segments encoded and written in one go between checkpoints, at most (~3 ms each to
# encode, on the event loop): a backlog of full segments is caught up over a few rounds.
_SEAL_AT_ONCE = 8


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, stage: CorrelateStage) -> None:
        self._stage = stage

    # aiokafka logs and swallows a callback's exception; the stage must restart instead.
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            await self._stage.revoked()
        except Exception as exc:
            self._stage.broken = exc

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        try:
            await self._stage.assigned([tp.partition for tp in assigned])
        except Exception as exc:
            self._stage.broken = exc


class CorrelateStage(Stage):
    """Internal topic -> outputs, with per-partition engines and checkpoints."""

    name = "correlate"

    def __init__(
        self,
        settings: Settings,
        health: Health,
        metrics: Metrics,
        *,
        new_correlator: Any,
        snapshotter: Snapshotter,
    ) -> None:
        super().__init__(settings, health)
        self.metrics = metrics
        self.caps = CapWatch(metrics)
        self.outputs = Outputs(settings, metrics, self.caps, self.state)
        self._new: Any = new_correlator
        self._snap = snapshotter
        self.lock = asyncio.Lock()
        self.owned: dict[int, PartitionState] = {}
        self.broken: Exception | None = None
        self._member: str | None = None  # our group member id at the last assignment
        self._topic = settings.internal_topic()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._lease: GroupLease | None = None  # this session's group membership (fencing)
        self._store: CheckpointStore | None = None
        self._unacked: list[list[asyncio.Future[Any]]] = []  # outputs sent, by batch
        self._commit: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None  # the checkpoint written behind
        # the output ends the next checkpoint will record, read ahead of it (`_checkpoint`)
        self._ends_ahead: asyncio.Future[dict[str, int]] | None = None
        self._interval = settings.checkpoint_interval.total_seconds()
        self._max_share = settings.checkpoint_max_share
        self._keep_s = checkpoint_keep_s(settings)
        # the consumer's fetch in progress, awaited beside what the decode stage offers
        self._fetch: asyncio.Future[dict[TopicPartition, list[Any]]] | None = None
        self._local: deque[Local] = deque()
        self._local_ready = asyncio.Event()
        self._local_max = 4 * settings.batch_max_records
        self._handoff = True  # off for good after a mismatch
        self._verify = settings.handoff == "verify"
        # `handoff=memory`: a paused partition is fetched again after this long without a record
        self._idle_s = settings.handoff_idle.total_seconds()
        # the ends of idle paused partitions, asked before fetching them again (`_unpause_idle`),
        # with the `idle_at` each was given when asked
        self._ends_check: asyncio.Future[dict[TopicPartition, int]] | None = None
        self._checking: dict[int, float] = {}
        self._rebalancing = False  # partitions revoked, not assigned again yet
        # the topics a restore scans for what was already published
        topics = [settings.incidents_topic, settings.dlq_topic, *settings.team_topic_names()]
        if settings.publish_decisions:
            topics.insert(0, settings.decisions_topic)
        self._output_topics = topics

    # -- session -----------------------------------------------------------------------
    async def session(self) -> None:
        settings = self.settings
        consumer = make_consumer(
            settings,
            name="correlate",
            group=f"{settings.app_id}-correlate",
            max_poll_records=settings.batch_max_records,
        )
        reader = make_consumer(settings, name="checkpoints", group=None, fetch_wait_floor_ms=50)
        producer = make_producer(settings, name="correlate")
        # Checkpoints and memory segments without the 5 ms linger: a checkpoint pauses its
        # stage until they are acknowledged, and is sent whole (the records a partition's
        # checkpoint writes go in one batch once the first has gone out)
        writer = make_producer(settings, name="checkpoint-writer", linger_ms=0)
        lease = GroupLease(settings.group_session_timeout.total_seconds())
        fences = (ProducerFence(producer), ProducerFence(writer))
        watch: asyncio.Task[None] | None = None
        self.owned = {}
        self.broken = None
        self._unacked = []
        self._fetch = None
        self._rebalancing = False
        try:
            await start_clients(producer, writer, reader, consumer)
            lease.attach(consumer)
            watch = asyncio.create_task(self._fence(lease, fences))
            watch.add_done_callback(self._fence_ended)
            self._consumer, self._producer, self._lease = consumer, producer, lease
            if settings.publish_decisions:
                self.outputs.decision_partitions = len(await producer.partitions_for(settings.decisions_topic))
            self._store = CheckpointStore(
                reader, writer, topic=settings.checkpoint_topic(), output_topics=self._output_topics, gate=self._gate
            )
            consumer.subscribe([self._topic], listener=_Listener(self))
            self.state.running = True
            while not self.stopping:
                if self._fetch is None:
                    self._fetch = asyncio.ensure_future(
                        consumer.getmany(timeout_ms=200, max_records=settings.batch_max_records)
                    )
                if not self._local:
                    await self._wait(self._fetch)
                if self.broken is not None:
                    raise self.broken
                async with self.lock:
                    try:
                        await self._round()
                    except Exception as exc:
                        # before the lock goes: a rebalance waiting for it must not checkpoint
                        # past what failed
                        if self.broken is None:
                            self.broken = exc
                        raise
            async with self.lock:  # a clean stop leaves fresh checkpoints behind
                await self._acked()
                await self._checkpoint(force=True)
        finally:
            if watch is not None:
                await drop_task(watch)
            await self._drop_fetch()
            await self._drop_ends_check()
            self._local.clear()
            self._unacked = []
            writing, self._writing = self._writing, None
            if writing is not None:
                await drop_task(writing)
            ends_ahead, self._ends_ahead = self._ends_ahead, None
            if ends_ahead is not None:
                await drop_task(ends_ahead)
            commit, self._commit = self._commit, None
            if commit is not None:
                await drop_task(commit)
            for st in self.owned.values():
                if st.sealing is not None:
                    await drop_task(st.sealing)
            self._consumer = self._producer = None
            self._lease = None
            self._store = None
            self.owned = {}
            await stop_clients(consumer, reader, writer, producer)

    async def _round(self) -> None:
        """One round of the session's loop, under the lock."""
        self._unpause_idle()
        batch = self._fetched()
        local = bool(self._local)
        if self._rebalancing:  # (the new assignment seeks to what is not done)
            batch, local = {}, False
        late = self._late()
        try:
            if local:  # first: the fetched copies of these records are then skipped
                await self._process_local()
            if batch:
                await self._process(batch)
        finally:  # (counted a round at a time: two lookups a record were ~1% of the stage)
            late = self._late() - late
            if late > 0:
                self.metrics.observe_late(late)
        if not batch and not local:
            await self._acked()
        self._seal_filled()
        await self._checkpoint(force=False)

    async def _gate(self) -> None:
        """Before records go to a producer: wait while the group lease has lapsed, and refuse
        once the coordinator no longer knows the member the partitions were assigned to.
        Not for `assigned()`'s own writes (its restore writes a first checkpoint of a new
        partition): aiokafka sends no heartbeat until it returns, and it follows the
        SyncGroup at once."""
        lease = self._lease
        if lease is None or _ASSIGNING.get():
            return
        if _member_id(self._consumer) != self._member:
            raise LeaseLost("expelled from the group: this member's partitions may have moved")
        await lease.gate()

    async def _fence(self, lease: GroupLease, fences: tuple[ProducerFence, ...]) -> None:
        """Abandon the producers if they still hold records when the group coordinator may
        be about to give our partitions away (`streams.lease`): once it has, the new owner's
        restore looks for our outputs, and anything of ours landing later is published twice.
        The session then ends (`broken`), and a new one restores from the checkpoints."""
        while True:
            wait = lease.fence_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if any(f.holds_undelivered() for f in fences):
                exc = LeaseLost(
                    f"no heartbeat accepted for {time.monotonic() - lease.renewed_at:.1f} s with outputs "
                    f"undelivered: dropped, for the partitions' next owner to publish"
                )
                log.error("fencing: %s", exc)
                for f in fences:
                    f.abandon(exc)
                lease.lose(exc)
                self.broken = exc
                self._local_ready.set()  # (the loop may be waiting for a fetch)
                return
            await asyncio.sleep(_FENCE_POLL_S)

    def _fence_ended(self, task: asyncio.Task[None]) -> None:
        """Without its watch, a session is not fenced: it ends."""
        if task.cancelled() or task.exception() is None:
            return
        if self.broken is None:
            self.broken = cast(Exception, task.exception())
        self._local_ready.set()

    # -- rebalance ---------------------------------------------------------------------
    async def revoked(self) -> None:
        """Checkpoint everything owned before anyone else takes it over, and process nothing
        more until the new assignment: what a partition's next owner restores is this
        checkpoint, and outputs published after it (the decode stage keeps offering records
        during the rebalance) might escape the new owner's scan and be published twice."""
        async with self.lock:
            self._rebalancing = True
            self._local.clear()
            for st in self.owned.values():
                st.paused = False  # (a new assignment fetches every partition it gets)
            self.state.paused = 0
            await self._drop_fetch()
            await self._drop_ends_check()
            if self._store is None or not self.owned:
                return
            if _member_id(self._consumer) != self._member:
                # The coordinator no longer knows us (expelled: cut off past the session
                # timeout): another worker may have taken our partitions over and moved them
                # on. A checkpoint of our state now would be the newest, yet behind theirs, and
                # its output bound would hide what they published. The new assignment restores.
                log.warning("expelled from the group: not checkpointing %s", sorted(self.owned))
                await self._drop_writes()
                return
            try:
                if self.broken is not None:  # (a write or an output failed: nothing is checkpointed)
                    raise self.broken
                await self._checkpoint(force=True)
            except BaseException:
                # what was sent lands (or fails) before the partitions go: else it could land
                # after the next owner's scan, and be published again
                await self._settle()
                raise

    async def assigned(self, partitions: list[int]) -> None:
        """Keep what stayed, restore what is new, seek everything to its next offset."""
        async with self.lock:
            assigning = _ASSIGNING.set(True)
            try:
                await self._assign(partitions)
            finally:
                _ASSIGNING.reset(assigning)

    async def _assign(self, partitions: list[int]) -> None:
        """`assigned()`, under the lock."""
        # A new member id means we were expelled (cut off for longer than the session
        # timeout) and joined again: another worker may have owned and advanced our
        # partitions meanwhile, so nothing in memory is kept; restoring scans the outputs.
        member = _member_id(self._consumer)
        expelled = self._member is not None and member != self._member
        self._member = member
        if expelled and self.owned:
            log.warning("rejoined the group as a new member: restoring %s", sorted(self.owned))
        if expelled:
            await self._drop_writes()
        kept = {} if expelled else {p: st for p, st in self.owned.items() if p in partitions}
        for p in set(self.owned) - set(kept):
            with contextlib.suppress(KeyError):  # no lag series yet
                self.metrics.forget_partition(self._topic, p)
            self.caps.forget(p)
        new = sorted(set(partitions) - set(kept))
        self.owned = kept
        await self._drop_fetch()  # it read from before the seeks below
        if new:
            self.owned.update(await self._restore(new))
        consumer = self._consumer
        assert consumer is not None
        for p, st in self.owned.items():
            tp = TopicPartition(self._topic, p)
            consumer.seek(tp, st.next_offset)
            consumer.resume(tp)  # (a hand-off pause is not meant to outlive the assignment)
            st.handed.clear()  # the consumer does not read below next_offset again
            st.paused = False
        self.state.partitions = [f"{self._topic}:{p}" for p in sorted(self.owned)]
        self.state.paused = 0
        self._stagger()
        self._rebalancing = False
        log.info(
            "correlate stage owns partitions %s (restored %s)",
            sorted(self.owned),
            new,
        )

    async def _restore(self, partitions: list[int]) -> dict[int, PartitionState]:
        store, consumer = self._store, self._consumer
        assert store is not None and consumer is not None
        tps = [TopicPartition(self._topic, p) for p in partitions]
        begins = await consumer.beginning_offsets(tps)
        restored: dict[int, PartitionState] = {}
        checkpoints: dict[int, Checkpoint] = {}


        took = [math.inf]  # CPU seconds the last load took (the one restored from, if any)

        def timed_load(state: bytes, earlier: Earlier | None) -> Processor:
            began = time.thread_time()
            try:
                return Processor.load(state, self._snap, earlier)
            finally:
                took[0] = time.thread_time() - began

        async def load(state: bytes, earlier: Earlier | None) -> Processor:
            return await asyncio.to_thread(timed_load, state, earlier)

        for p in partitions:
            # the newest checkpoint that loads; corrupt ones are passed over (logged, counted)
            checkpoint, loaded = await store.restore(
                p,
                int(begins[TopicPartition(self._topic, p)]),
                load,
                self.metrics.observe_checkpoint_restore_failure,
            )
            checkpoints[p] = checkpoint
            processor = loaded if loaded is not None else Processor(self._new())
            restored[p] = PartitionState(p, processor, checkpoint.offset)
            if loaded is not None:
                restored[p].memory = list(checkpoint.memory)
                # Until its first checkpoint measures it, its encoding is taken to cost what its
                # restore did (more, as measured: 9.9 s against 3.8-4.0 for 100,000 assets), so a
                # big state is not encoded again one interval after it was restored.
                restored[p].encode_s = took[0]
            restored[p].retired = list(checkpoint.retired)
            restored[p].open = {
                i.incident_id: i.kind
                for i in processor.correlator.incidents()
                if i.resolved_at is None and i.merged_into is None
            }
        lowest: dict[str, int] = {}
        for checkpoint in checkpoints.values():
            for key, offset in checkpoint.out_ends.items():
                lowest[key] = min(offset, lowest.get(key, offset))
        published = await store.published_since(lowest, set(partitions))
        for p, found in published.items():
            st = restored[p]
            if found.last_src_offset >= st.next_offset:
                st.suppress = found.ids
                st.suppress_until = found.last_src_offset
                st.scan_from = dict(lowest)
                log.warning(
                    "partition %d resumes at offset %d; %d outputs up to offset %d were "
                    "already published and will not be repeated",
                    p,
                    st.next_offset,
                    len(found.ids),
                    found.last_src_offset,
                    extra={"topic": self._topic, "partition": p},
                )
        return restored

    # -- processing --------------------------------------------------------------------
    def offer(self, written: list[Local]) -> None:
        """Internal records this process's decode stage wrote, acknowledged, in log order per
        partition. Each is processed from memory if it is its partition's next offset when
        its turn comes; otherwise (another decoder wrote in between, or the consumer got
        there first) it is dropped and the record comes from Kafka as any other. Either way
        the engine sees its partition's log, in order, once. This saves reading an alert back
        and the wait for the fetch. With `handoff=memory` the partition is not fetched while
        its records come from memory (`_pause`); with `handoff=verify` the consumer reads
        them too, and each one's bytes are compared with the record processed (`_handed_back`)."""
        if not self._handoff or self._rebalancing:
            return
        room = self._local_max - len(self._local)
        kept = [local for local in written if local.partition in self.owned][: max(0, room)]
        if kept:
            self._local.extend(kept)
            self._local_ready.set()
            # a paused partition with records waiting to be processed is not idle
            idle_at = time.monotonic() + self._idle_s
            for p in {local.partition for local in kept}:
                self.owned[p].idle_at = idle_at

    async def _drop_fetch(self) -> None:
        """Cancel the fetch in progress (its records, if any, are read again after a seek)."""
        fetch, self._fetch = self._fetch, None
        if fetch is not None:
            await drop_task(fetch)

    def _fetched(self) -> dict[TopicPartition, list[Any]]:
        """The records of the fetch, if it is done (a fresh one starts on the next round)."""
        fetch = self._fetch
        if fetch is None or not fetch.done():
            return {}
        self._fetch = None
        return {} if fetch.cancelled() else fetch.result()

    async def _wait(self, fetch: asyncio.Future[Any]) -> None:
        """Until the consumer's fetch returns, the decode stage offers records, or a paused
        partition has had nothing handed over for `handoff_idle`."""
        self._local_ready.clear()
        offered = asyncio.ensure_future(self._local_ready.wait())
        idle = [st.idle_at for st in self.owned.values() if st.paused]
        timeout = max(0.0, min(idle) - time.monotonic()) if idle else None
        waits: list[asyncio.Future[Any]] = [fetch, offered]
        if self._ends_check is not None:
            waits.append(self._ends_check)
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            offered.cancel()

    def _pause(self, st: PartitionState) -> None:
        """Stop fetching a partition whose records come from memory (`handoff=memory`): reading
        them back would only cost this worker and the broker, which on Tansu pays for every
        batch the partition holds on each read."""
        consumer = self._consumer
        assert consumer is not None
        consumer.pause(TopicPartition(self._topic, st.partition))
        st.paused = True
        self.state.paused += 1

    def _unpause(self, st: PartitionState) -> None:
        """Fetch the partition again, from its next offset."""
        consumer = self._consumer
        assert consumer is not None
        tp = TopicPartition(self._topic, st.partition)
        consumer.seek(tp, st.next_offset)
        consumer.resume(tp)
        st.paused = False
        self.state.paused -= 1
        self.state.resumed += 1

    def _unpause_idle(self) -> None:
        """Paused partitions with nothing handed over for `handoff_idle` are fetched again if
        their log has grown past what was processed: another worker's decode stage may be
        writing to them while this one's is idle. Their ends are asked in one request, in the
        background, and asked again every `handoff_idle` while they stay idle. Fetching them
        in the meantime instead cost an idle worker ~70 fetches a second on Tansu (which holds
        an empty fetch for the whole fetch wait), and a busy one the same for every partition
        that only gets the ticks (`SOCNOC_PARTITION_BY=single`: all but one). If the ends cannot
        be read, the partitions are fetched again, as before."""
        check = self._ends_check
        if check is not None:
            if not check.done():
                return
            self._ends_check, checking, self._checking = None, self._checking, {}
            error = None if check.cancelled() else check.exception()
            if error is not None:
                log.warning("could not read the internal partitions' ends (%r): fetching them again", error)
            ends = {} if check.cancelled() or error is not None else check.result()
            for p, asked_at in checking.items():
                st = self.owned.get(p)
                if st is None or not st.paused or st.idle_at != asked_at:
                    continue  # revoked, fetched again, or records were handed over since
                end = ends.get(TopicPartition(self._topic, p))
                if end is None or end > st.next_offset:
                    self._unpause(st)
        now = time.monotonic()
        idle = [st for st in self.owned.values() if st.paused and now >= st.idle_at]
        consumer = self._consumer
        if not idle or consumer is None:
            return
        for st in idle:  # (asked again after another `handoff_idle` if nothing changes)
            st.idle_at = now + self._idle_s
        self._checking = {st.partition: st.idle_at for st in idle}
        self._ends_check = asyncio.ensure_future(
            consumer.end_offsets([TopicPartition(self._topic, st.partition) for st in idle])
        )

    async def _drop_ends_check(self) -> None:
        check, self._ends_check = self._ends_check, None
        self._checking = {}
        if check is not None:
            await drop_task(check)

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        producer = self._producer
        assert producer is not None
        sender = BatchSender(producer, gate=self._gate)
        now_ms = time.time() * 1000
        record = self.outputs.record
        for tp, records in batch.items():
            st = self.owned.get(tp.partition)
            if st is None:
                continue  # revoked while the batch was in flight
            for rec in records:
                if rec.offset < st.next_offset:
                    self.state.read_back += 1
                    if st.handed:
                        self._handed_back(st, rec.offset, rec.value)
                    continue
                try:
                    item = decode_item(rec.value, rec.headers)
                except BadInternalRecord as exc:
                    log.error(
                        "skipping an unreadable internal record: %s",
                        exc,
                        extra={"topic": tp.topic, "partition": tp.partition, "offset": rec.offset},
                    )
                    self.state.errors += 1
                    st.next_offset = rec.offset + 1
                    continue
                rest = record(sender, st, rec.offset, item, rec.value, now_ms)
                if rest is not None:
                    await self._finish(sender, st, rec.offset, rest, now_ms)
                self.state.records += 1
        await self._sent(sender, batch)

    async def _process_local(self) -> None:
        """The records `offer` queued that are next in their partitions."""
        producer = self._producer
        assert producer is not None
        sender = BatchSender(producer, gate=self._gate)
        now_ms = time.time() * 1000
        touched: set[int] = set()
        local = self._local
        n = min(len(local), self.settings.batch_max_records)
        used = 0
        memory = not self._verify
        owned = self.owned
        record = self.outputs.record
        for _ in range(n):
            entry = local.popleft()
            st = owned.get(entry.partition)
            offset = entry.offset
            if st is None or offset != st.next_offset:
                if st is not None and st.paused and offset > st.next_offset:
                    self._unpause(st)  # someone else wrote in between: read it from Kafka
                continue
            if memory:
                if not st.paused:
                    self._pause(st)
            else:
                st.handed[offset] = entry.value
            rest = record(sender, st, offset, entry.item, entry.value, now_ms)
            if rest is not None:
                await self._finish(sender, st, offset, rest, now_ms)
            touched.add(entry.partition)  # (a TopicPartition per record was 0.8% of the worker)
            used += 1
        if memory and touched:  # (the clock read once a batch, not a record)
            idle_at = time.monotonic() + self._idle_s
            for p in touched:
                st = owned.get(p)
                if st is not None:
                    st.idle_at = idle_at
        self.state.records += used
        self.state.from_memory += used
        await self._sent(sender, [TopicPartition(self._topic, p) for p in touched])

    def _handed_back(self, st: PartitionState, offset: int, value: bytes | None) -> None:
        """The consumer delivered a record already processed from memory: it must be the
        record that was. If not, the offsets the broker acknowledged were wrong and what the
        engine saw is not the log: the session ends, the partitions are restored from their
        checkpoints and fed from Kafka, and this process reads everything back from then on.
        (A checkpoint taken in between, within a fetch of the mismatch, may hold the
        difference: this is a guard against a broker that misreports offsets, not a path
        that is expected to run.)"""
        handed = st.handed.pop(offset, None)
        if handed is not None and handed != value:
            self._handoff = False
            raise HandoffMismatch(
                f"internal record {st.partition}:{offset} is not the record processed from memory"
            )

    async def _finish(
        self, sender: BatchSender, st: PartitionState, offset: int, rest: list[Emitted], now_ms: float
    ) -> None:
        """The rest of `Outputs.record`: the outputs left, in order, and the full batches handed over."""
        emit = self.outputs
        arrived = st.processor.arrivals
        for output in rest:
            if isinstance(output, Decision):
                emit.decision(sender, st, offset, output, arrived, now_ms)
            elif isinstance(output, IncidentEvent):
                await emit.incident(sender, st, offset, output)
            else:
                await emit.dead_letter(sender, st, offset, output)
        if sender.queued:
            await sender.drain()
        st.processed(offset)

    async def _sent(self, sender: BatchSender, touched: Iterable[TopicPartition]) -> None:
        futures = await sender.send()
        if futures:  # (a batch of records read back only to be checked sends nothing)
            self._unacked.append(futures)
        await self._acked(keep=1)  # the previous batch's, acknowledged while this one was fed
        self.state.last_batch_at = time.monotonic()
        self._gauges(touched)

    async def _acked(self, keep: int = 0) -> None:
        """Wait for the acknowledgements of the outputs sent, but those of the newest `keep`
        batches; a failed one raises (and the session restarts from the checkpoints)."""
        while len(self._unacked) > keep:
            futures = self._unacked.pop(0)
            if futures:
                await asyncio.gather(*futures)

    def _gauges(self, touched: Iterable[TopicPartition]) -> None:
        consumer = self._consumer
        for tp in touched:
            st = self.owned.get(tp.partition)
            high = consumer.highwater(tp) if consumer is not None else None
            if st is not None and high is not None:
                # (a partition paused for the hand-off has a high watermark from its last fetch)
                lag = max(0, int(high) - st.next_offset)
                self.metrics.set_consumer_lag(tp.topic, tp.partition, lag)
            if st is not None:  # engine caps reached in this batch -> metric, rate-limited log
                self.caps.observe(st.partition, st.processor.correlator)
        self.metrics.set_reorder_held(sum(len(st.processor.reorder) for st in self.owned.values()))
        open_by_kind = Counter(k for st in self.owned.values() for k in st.open.values())
        for kind in IncidentKind:
            self.metrics.set_open_incidents(kind, open_by_kind[kind])

    def _late(self) -> int:
        """Alerts the partitions' engines found too late for their window, so far."""
        return sum(_late(st.processor.correlator) for st in self.owned.values())

    # -- checkpoints -------------------------------------------------------------------
    def _stagger(self) -> None:
        """Spread the partitions' checkpoint times evenly over the interval. A checkpoint
        pauses every partition's processing: one pause for all of them grows with the number
        of partitions a worker owns (eight at once: 48-62 ms in the benchmark's latency runs;
        one at a time: 17-22 ms, with no change in their p99 or throughput, measured)."""
        owned = sorted(self.owned)
        now = time.monotonic()
        for i, p in enumerate(owned):
            self.owned[p].last_checkpoint = now - self._interval * i / len(owned)

    def _spacing(self, st: PartitionState) -> float:
        """How long after its last checkpoint `st` is due again (`checkpoint_spacing`)."""
        return checkpoint_spacing(st.encode_s, self._interval, self._max_share, self._keep_s / 2, len(self.owned))

    def _seal_filled(self) -> None:
        """Write the full segments of a partition's redelivery memory as they fill, between
        checkpoints (one round trip in flight a partition). A checkpoint refers to the
        segments acknowledged before it instead of holding their ids itself: sealed only at
        checkpoints, the ids decided over an interval were encoded and written twice in the
        pause (in the state, and as the segments that the next checkpoint refers to), 1.33 of
        the benchmark engine's 1.45 MB state document.

        A segment is a range of positions of the memory, whose ids never change once
        remembered: written by an expelled worker or again after a restore, it holds the same
        ids. Not while rebalancing, nor once the group no longer knows this member."""
        store = self._store
        if store is None or self._rebalancing or self.broken is not None or _member_id(self._consumer) != self._member:
            return
        size = self.settings.memory_segment_ids
        for st in self.owned.values():
            if st.writing:
                continue  # its memory refs are updated once the checkpoint is written
            if st.sealing is not None:
                if not st.sealing.done():
                    continue
                self._sealed(st)
            span = getattr(st.processor.correlator, "memory_span", None)
            if not callable(span):
                continue
            first, end = span()
            if end - sealed_to(st.memory, first) < size:
                continue  # (the usual case, without planning)
            plan = self._memory_plan(st)
            if plan is None or not plan.seal:
                continue
            writes = [store.write_segment(st.partition, a, b, segment(st, a, b)) for a, b in plan.seal[:_SEAL_AT_ONCE]]
            st.sealing = asyncio.ensure_future(_in_order(writes))

    def _sealed(self, st: PartitionState) -> None:
        """Segment writes between checkpoints ended: acknowledged, the next checkpoint refers
        to them; failed, the next checkpoint writes those ranges itself (`plan_memory`)."""
        task, st.sealing = st.sealing, None
        if task is None or task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.warning(
                "memory segment write failed (the next checkpoint writes it): %r",
                error,
                extra={"partition": st.partition},
            )
            return
        st.memory += task.result()

    def _memory_plan(self, st: PartitionState) -> MemoryPlan | None:
        """What this checkpoint of `st` does with the redelivery memory (None: its correlator
        has none, and its snapshot holds whatever it remembers)."""
        span = getattr(st.processor.correlator, "memory_span", None)
        if not callable(span):
            return None
        first, end = span()
        return plan_memory(st.memory, first, end, self.settings.memory_segment_ids)

    async def _checkpoint(self, *, force: bool) -> None:
        """Checkpoint the partitions that are due (all of them with `force`).

        The stage pauses only while their state is encoded. The output ends it records were
        read before that, right after the previous checkpoint (or during this pause, if that
        read is not back yet or failed): no output sent after the state is taken can be
        before them, so they bound what follows the checkpoint; outputs sent before it land
        before or after them, and a restore's scan sees those after. Reading them in the
        pause cost a round trip to the broker there, on every checkpoint; read ahead, they are
        older by one checkpoint's spacing (the restore scans that much more output). The
        rest is written behind, while the stage goes
        on: the outputs sent before the checkpoint are acknowledged first (a checkpoint
        must not account for an output that then fails), then the sealed segments, the
        checkpoints and the deletions are written, one round trip. One checkpoint is written
        at a time; with `force`, this one is acknowledged before this returns. A failed write
        ends the session (`broken`)."""
        store, consumer = self._store, self._consumer
        if store is None or consumer is None or not self.owned:
            return
        if self.broken is not None:
            raise self.broken
        now = time.monotonic()
        # Only the partitions that are due: their phases are spread over the interval at each
        # assignment (`_stagger`), so each pause serialises one partition's state, not all of
        # them at once (ticks keep every partition dirty). One whose state is slow to encode is
        # due later (`checkpoint_spacing`): in a storm of 100,000 new assets a state took ~4 s
        # to encode, and checkpoints every 5 s left the partition paused nearly all the time.
        dirty = due_partitions(self.owned.values(), now, self._interval, self._spacing, force)
        if not dirty:
            if force:
                await self._written()
            return
        began = time.perf_counter()
        await self._written()  # the previous one (its memory refs are what this one plans from)
        in_flight = [st.sealing for st in dirty if st.sealing is not None]
        if in_flight:  # (acknowledged by now, mostly) a plan never seals what is being written
            await asyncio.wait(in_flight)
            for st in dirty:
                if st.sealing is not None:
                    self._sealed(st)
        ends, self._ends_ahead = self._ends_ahead, None
        if ends is None or (ends.done() and (ends.cancelled() or ends.exception() is not None)):
            ends = asyncio.ensure_future(store.output_ends())
        try:
            plans = [self._memory_plan(st) for st in dirty]
            if encode_inline(dirty, plans):
                encoded = encode_all(dirty, plans, self._snap)
            else:
                encoded = await asyncio.to_thread(encode_all, dirty, plans, self._snap)
        except BaseException:
            ends.cancel()
            await asyncio.gather(ends, return_exceptions=True)
            raise
        out_ends = await ends
        self._ends_ahead = asyncio.ensure_future(store.output_ends())  # for the next one
        # what was sent before the checkpoint: acknowledged before it is written
        sent, self._unacked = self._unacked, []
        written_at = time.time()
        checkpoints: list[Checkpoint] = []
        expired: list[tuple[int, MemoryRef]] = []
        for st, plan, (_, state) in zip(dirty, plans, encoded, strict=True):
            kept = plan.kept if plan is not None else []
            dropped = plan.dropped if plan is not None else []
            retired, due = expire_retired(st.retired, dropped, written_at, self._keep_s)
            expired += [(st.partition, r) for r in due]
            checkpoints.append(
                Checkpoint(
                    st.partition,
                    st.next_offset,
                    bounded_ends(st, out_ends),
                    state,
                    written_at,
                    tuple(kept),
                    tuple(retired),
                )
            )
            st.dirty = False  # (what it processes from now on dirties it again)
            spaced = self._spacing(st) > self._interval  # (its own spacing: no grid to keep)
            st.last_checkpoint = now if spaced else phase_kept(st.last_checkpoint, now, self._interval)
            st.writing = True
        write = asyncio.ensure_future(
            self._write(store, consumer, sent, dirty, checkpoints, [seg for seg, _ in encoded], expired)
        )
        self._writing = write
        if force:
            await self._written()
        else:
            write.add_done_callback(self._write_ended)
        self.metrics.observe_checkpoint(time.perf_counter() - began)  # (the pause)

    async def _write(
        self,
        store: CheckpointStore,
        consumer: AIOKafkaConsumer,
        sent: list[list[asyncio.Future[Any]]],
        dirty: list[PartitionState],
        checkpoints: list[Checkpoint],
        segments: list[list[tuple[int, int, bytes]]],
        expired: list[tuple[int, MemoryRef]],
    ) -> None:
        """The written-behind part of `_checkpoint`."""
        try:
            failed = await _landed(sent)
            if failed is not None:
                raise failed
            # compressed here, after the pause (the stage goes on meanwhile: zlib lets go of
            # the interpreter), ~0.45 s for 100,000 active assets; once the outputs before
            # them landed (a failure here leaves none of them unawaited)
            if sum(len(c.state or b"") for c in checkpoints) < PACK_INLINE_BYTES:
                checkpoints = packed(checkpoints)
            else:
                checkpoints = await asyncio.to_thread(packed, checkpoints)
            # All in one round trip, each acknowledged before this returns: the checkpoints;
            # the segments sealed now (this checkpoint's state still holds their ids: the next
            # one refers to them, by the offsets acknowledged here); and the deletion of
            # segments no checkpoint that may still be restored refers to (listed as retired
            # until deleted).
            sealing = [
                asyncio.gather(*(store.write_segment(st.partition, a, b, value) for a, b, value in own))
                for st, own in zip(dirty, segments, strict=True)
            ]
            sealed, *_ = await asyncio.gather(
                asyncio.gather(*sealing),
                asyncio.gather(*(store.write(c) for c in checkpoints)),
                asyncio.gather(*(store.delete_segment(p, r) for p, r in expired)),
            )
        finally:
            for st in dirty:
                st.writing = False
        gone = set(expired)
        for st, checkpoint, new in zip(dirty, checkpoints, sealed, strict=True):
            st.memory = [*checkpoint.memory, *new]
            st.state_bytes = len(checkpoint.state or b"") + sum(r.size for r in st.memory)
            st.retired = [(r, at) for r, at in checkpoint.retired if (st.partition, r) not in gone]
        self.metrics.set_state(
            tracked_assets=sum(_tracked(st.processor.correlator) for st in self.owned.values()),
            state_bytes=sum(st.state_bytes for st in self.owned.values()),
        )
        offsets = {
            TopicPartition(self._topic, st.partition): OffsetAndMetadata(checkpoint.offset, "")
            for st, checkpoint in zip(dirty, checkpoints, strict=True)
        }
        # For lag monitoring only (checkpoints are what a new owner resumes from): in the
        # background, one at a time.
        previous, self._commit = self._commit, None
        if previous is not None:
            await previous
        self._commit = asyncio.create_task(_commit(consumer, offsets))

    async def _drop_writes(self) -> None:
        """Cancel the checkpoint and segment writes in progress: expelled, this member's state
        is behind whatever another worker did with its partitions meanwhile."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await drop_task(writing)
        for st in self.owned.values():
            sealing, st.sealing = st.sealing, None
            if sealing is not None:
                await drop_task(sealing)
            st.writing = False

    async def _written(self) -> None:
        """Wait for the checkpoint being written behind, if any (raising if it failed, every
        time: a failed write stays until the session ends)."""
        write = self._writing
        if write is None:
            return
        await write
        if self._writing is write:
            self._writing = None

    async def _settle(self) -> None:
        """Wait until every output sent, and the checkpoint being written, has landed or failed."""
        sent, self._unacked = self._unacked, []
        await _landed(sent)
        if self._writing is not None:
            await asyncio.wait([self._writing])

    def _write_ended(self, write: asyncio.Future[None]) -> None:
        """A checkpoint written behind failed: the session ends (a new one restores)."""
        if write.cancelled() or write.exception() is None:
            return
        if self.broken is None:
            self.broken = cast(Exception, write.exception())
        self._local_ready.set()  # (the loop may be waiting for a fetch)


async def _in_order(writes: list[Coroutine[Any, Any, MemoryRef]]) -> list[MemoryRef]:
    """Segment writes in one round trip, their references in the order given."""
    return list(await asyncio.gather(*writes))


async def _landed(sent: list[list[asyncio.Future[Any]]]) -> BaseException | None:
    """Wait until every output sent has landed or failed; the first failure, if any."""
    acks = await asyncio.gather(*(f for futures in sent for f in futures), return_exceptions=True)
    return next((a for a in acks if isinstance(a, BaseException)), None)


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
    try:
        await consumer.commit(offsets)
    except (KafkaError, IllegalStateError, OSError) as exc:
        log.info("offset commit skipped (%s)", type(exc).__name__)


class HandoffMismatch(RuntimeError):
    """A record processed from memory differs from the record at its offset in Kafka."""


def _member_id(consumer: AIOKafkaConsumer | None) -> str | None:
    """The consumer's group member id (aiokafka keeps it on its group coordinator)."""
    member = getattr(getattr(consumer, "_coordinator", None), "member_id", None)
    return member if isinstance(member, str) else None


def _tracked(correlator: Correlator) -> int:
    count = getattr(correlator, "tracked_assets", None)
    return int(count()) if callable(count) else 0


def _late(correlator: Correlator) -> int:
    stats = getattr(correlator, "stats", None)
    return int(getattr(stats, "late", 0)) if stats is not None else 0
