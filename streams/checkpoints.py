"""Checkpoints of correlation partitions, and what a restarted partition already published.

A checkpoint is one record on `<app_id>.checkpoints`, partition = the correlation partition,
holding the partition's state together with the next internal offset to process and the end
offsets of the output topics when it was written. Restoring reads the latest one, then scans
the outputs written since (`published_since`) for records that came from this partition: the
deterministic replay of the log regenerates exactly those, and they are not published again.
Tansu has no transactions (InitProducerId fails), so this is how outputs stay exactly-once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.errors import SnapshotError
from streams.kafka import high_watermarks
from streams.records import OID_HEADER, SRC_HEADER, header

__all__ = ["Checkpoint", "Published", "CheckpointStore", "parse_src"]

log = logging.getLogger(__name__)

_FORMAT = 1
_READ_TIMEOUT_S = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class Checkpoint:
    """A partition's state as of `offset` (the next internal record to process)."""

    partition: int
    offset: int
    out_ends: dict[str, int]
    state: bytes | None
    written_at: float = 0.0

    def encode(self) -> bytes:
        head = orjson.dumps(
            {
                "format": _FORMAT,
                "partition": self.partition,
                "offset": self.offset,
                "out_ends": self.out_ends,
                "written_at": self.written_at,
                "has_state": self.state is not None,
            }
        )
        return len(head).to_bytes(4, "big") + head + (self.state or b"")

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        """Inverse of `encode`; anything else raises `SnapshotError` (and nothing else)."""
        try:
            size = int.from_bytes(data[:4], "big")
            head = orjson.loads(data[4 : 4 + size])
            if not isinstance(head, dict) or head.get("format") != _FORMAT:
                raise SnapshotError(f"unknown checkpoint format: {str(head)[:60]}")
            body = data[4 + size :]
            out_ends = head["out_ends"]
            if not isinstance(out_ends, dict):
                raise SnapshotError("corrupt checkpoint: out_ends is not an object")
            checkpoint = cls(
                partition=_count(head["partition"]),
                offset=_count(head["offset"]),
                out_ends={str(k): _count(v) for k, v in out_ends.items()},
                state=body if head.get("has_state") is True else None,
                written_at=float(head.get("written_at", 0.0)),
            )
        except SnapshotError:
            raise
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
            raise SnapshotError(f"corrupt checkpoint: {type(exc).__name__}: {exc}"[:300]) from exc
        if head.get("has_state") is True and not body:
            raise SnapshotError("corrupt checkpoint: the state is missing")
        return checkpoint


def _count(x: object) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise SnapshotError(f"corrupt checkpoint: expected an offset, got {x!r:.40}")
    return x


@dataclass
class Published:
    """Identities of outputs a partition published after its checkpoint."""

    ids: set[str] = field(default_factory=set)
    last_src_offset: int = -1


def parse_src(value: bytes | None) -> tuple[int, int] | None:
    """`<partition>:<offset>` of the `socnoc-src` header."""
    if not value:
        return None
    try:
        part, _, off = value.decode().partition(":")
        return int(part), int(off)
    except ValueError:
        return None


def tp_key(tp: TopicPartition) -> str:
    """`topic:partition`, as stored in a checkpoint's `out_ends`."""
    return f"{tp.topic}:{tp.partition}"


class CheckpointStore:
    """Writes and reads checkpoints, and scans outputs, with a group-less consumer."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        *,
        topic: str,
        output_topics: Iterable[str],
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self.topic = topic
        self.output_topics = tuple(output_topics)
        self._output_tps: list[TopicPartition] | None = None

    async def output_partitions(self) -> list[TopicPartition]:
        if self._output_tps is None:
            tps: list[TopicPartition] = []
            for topic in self.output_topics:
                parts = await self._producer.partitions_for(topic)
                tps.extend(TopicPartition(topic, p) for p in sorted(parts))
            self._output_tps = tps
        return self._output_tps

    async def output_ends(self) -> dict[str, int]:
        """End offsets of every output partition now (a lower bound on Tansu, which is enough:
        outputs published after this call are at or after these offsets)."""
        tps = await self.output_partitions()
        ends = await self._consumer.end_offsets(tps)
        return {tp_key(tp): int(off) for tp, off in ends.items()}

    async def output_begins(self) -> dict[str, int]:
        """First offsets still held by every output partition (what a scan from scratch reads)."""
        tps = await self.output_partitions()
        begins = await self._consumer.beginning_offsets(tps)
        return {tp_key(tp): int(off) for tp, off in begins.items()}

    async def write(self, checkpoint: Checkpoint) -> None:
        """Append a checkpoint and wait for the broker's acknowledgement."""
        await self._producer.send_and_wait(
            self.topic,
            checkpoint.encode(),
            key=str(checkpoint.partition).encode(),
            partition=checkpoint.partition,
        )

    async def latest(self, partitions: list[int]) -> dict[int, Checkpoint | None]:
        """The newest readable checkpoint of each partition (None: never checkpointed)."""
        found: dict[int, Checkpoint | None] = {}
        for p in partitions:
            found[p] = None
            async with contextlib.aclosing(self.history(p)) as checkpoints:
                async for checkpoint in checkpoints:
                    found[p] = checkpoint
                    break
        return found

    async def history(
        self, partition: int, on_unreadable: Callable[[str], None] | None = None
    ) -> AsyncGenerator[Checkpoint, None]:
        """The partition's readable checkpoints, newest first (read backwards in growing chunks);
        `on_unreadable` hears about each corrupt record passed over."""
        consumer = self._consumer
        tp = TopicPartition(self.topic, partition)
        end = (await high_watermarks(consumer, [tp]))[tp]
        begin = int((await consumer.beginning_offsets([tp]))[tp])
        window = 4
        while end > begin:
            start = max(begin, end - window)
            records = await self._read(tp, start, end)
            for offset, value in reversed(records):
                try:
                    checkpoint = Checkpoint.decode(value or b"")
                except SnapshotError as exc:
                    log.error(
                        "unreadable checkpoint at offset %d passed over: %s",
                        offset,
                        exc,
                        extra={"topic": self.topic, "partition": partition, "offset": offset},
                    )
                    if on_unreadable is not None:
                        on_unreadable("envelope")
                    continue
                if checkpoint.partition == partition:
                    yield checkpoint
            end = start
            window *= 4

    async def restore(
        self,
        partition: int,
        begin: int,
        load: Callable[[bytes], Awaitable[T]],
        on_failure: Callable[[str], None] | None = None,
    ) -> tuple[Checkpoint, T | None]:
        """The checkpoint to resume `partition` from and its loaded state (None: start empty).

        The newest checkpoint whose state `load` accepts wins; a corrupt one (`SnapshotError`)
        is logged, counted through `on_failure` and passed over for the one before it. When
        none is usable the partition starts from scratch at `begin` with no output bound, so
        the whole log is replayed and everything it already published is recognised by
        identity (`published_since`). A partition never checkpointed gets a first, empty
        checkpoint written now, which bounds later output scans.
        """
        passed = 0

        def failed(what: str) -> None:
            nonlocal passed
            passed += 1
            if on_failure is not None:
                on_failure(what)

        async with contextlib.aclosing(self.history(partition, failed)) as checkpoints:
            async for checkpoint in checkpoints:
                if checkpoint.state is None:
                    return checkpoint, None
                try:
                    state = await load(checkpoint.state)
                except SnapshotError as exc:
                    log.error(
                        "corrupt checkpoint of partition %d (offset %d) passed over, trying an older one: %s",
                        partition,
                        checkpoint.offset,
                        exc,
                        extra={"topic": self.topic, "partition": partition},
                    )
                    failed("state")
                    continue
                if passed:
                    log.warning(
                        "partition %d restored from an older checkpoint (offset %d) after %d corrupt ones",
                        partition,
                        checkpoint.offset,
                        passed,
                        extra={"topic": self.topic, "partition": partition},
                    )
                return checkpoint, state
        if passed:
            log.error(
                "partition %d has no usable checkpoint (%d corrupt): starting from scratch at offset %d, "
                "replaying the whole log; outputs already published are not repeated",
                partition,
                passed,
                begin,
                extra={"topic": self.topic, "partition": partition},
            )
            return Checkpoint(partition, begin, await self.output_begins(), None), None
        first = Checkpoint(partition, begin, await self.output_ends(), None)
        await self.write(first)
        return first, None

    async def _read(self, tp: TopicPartition, start: int, end: int) -> list[tuple[int, bytes | None]]:
        consumer = self._consumer
        out: list[tuple[int, bytes | None]] = []
        if start >= end:
            return out
        consumer.assign([tp])
        try:
            consumer.seek(tp, start)
            deadline = time.monotonic() + _READ_TIMEOUT_S
            while await consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read {tp.topic}:{tp.partition} up to {end}")
                batch = await consumer.getmany(tp, timeout_ms=500)
                out.extend((r.offset, r.value) for r in batch.get(tp, []) if r.offset < end)
        finally:
            self._release()
        return out

    async def published_since(
        self, out_ends: dict[str, int], partitions: set[int]
    ) -> dict[int, Published]:
        """Outputs of `partitions` written at or after `out_ends` (one pass over the topics)."""
        found = {p: Published() for p in partitions}
        consumer = self._consumer
        tps = await self.output_partitions()
        ends = await high_watermarks(consumer, tps)
        todo = {tp: ends[tp] for tp in tps if ends[tp] > out_ends.get(tp_key(tp), 0)}
        if not todo:
            return found
        consumer.assign(list(todo))
        try:
            for tp in todo:
                consumer.seek(tp, out_ends.get(tp_key(tp), 0))
            deadline = time.monotonic() + max(_READ_TIMEOUT_S, len(todo) * 5.0)
            while todo:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read outputs {sorted(map(tp_key, todo))} in time")
                batch = await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
                for records in batch.values():
                    for record in records:
                        src = parse_src(header(record.headers, SRC_HEADER))
                        if src is not None and src[0] in found:
                            oid = header(record.headers, OID_HEADER)
                            entry = found[src[0]]
                            if oid:
                                entry.ids.add(oid.decode())
                            entry.last_src_offset = max(entry.last_src_offset, src[1])
                for tp in list(todo):
                    if await consumer.position(tp) >= todo[tp]:
                        del todo[tp]
        finally:
            self._release()
        return found

    def _release(self) -> None:
        """Pause the reader's partitions once a read is done. An active partition keeps the
        consumer fetching in the background: it would read every output (or checkpoint) the
        worker writes back into memory, and each `output_ends` would queue behind a pending
        fetch on the broker connection (15-53 ms of every checkpoint pause, measured). The
        next read assigns afresh, which resumes fetching."""
        consumer = self._consumer
        consumer.pause(*consumer.assignment())
