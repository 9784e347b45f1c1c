"""Checkpoints of correlation partitions, and what a restarted partition already published.

A checkpoint is one record on `<app_id>.checkpoints`, partition = the correlation partition,
holding the partition's state together with the next internal offset to process and the end
offsets of the output topics when it was written. Restoring reads the latest one, then scans
the outputs written since (`published_since`) for records that came from this partition: the
deterministic replay of the log regenerates exactly those, and they are not published again.
Tansu has no transactions (InitProducerId fails), so this is how outputs stay exactly-once.

The engine's redelivery memory (the ids of the alerts it decided, up to `max_seen_ids`) is
most of a long-running partition's state. A checkpoint holds only its newest ids; older ones
go, `SOCNOC_MEMORY_SEGMENT_IDS` at a time, into segment records of their own on the same
topic partition (key `<partition>/seen/<first position>`), each written once, before the
first checkpoint that refers to it. A checkpoint lists the segments it needs (`MemoryRef`);
one the memory no longer holds is tombstoned once the checkpoints that may still be restored
from (compaction keeps older ones a while, `keep_s`) no longer refer to it. A segment written
again holds the same ids, so one compacted away under a checkpoint is read from its later copy.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from correlators.types import Earlier
from schemas.errors import SnapshotError
from streams.kafka import high_watermarks
from streams.records import OID_HEADER, SRC_HEADER, header

__all__ = [
    "Checkpoint",
    "Published",
    "CheckpointStore",
    "MemoryRef",
    "MemoryPlan",
    "plan_memory",
    "sealed_to",
    "expire_retired",
    "encode_segment",
    "decode_segment",
    "parse_src",
]

log = logging.getLogger(__name__)

_FORMAT = 1
_READ_TIMEOUT_S = 30.0
T = TypeVar("T")


def checkpoint_key(partition: int) -> bytes:
    """The key of a partition's checkpoints."""
    return str(partition).encode()


def segment_key(partition: int, start: int) -> bytes:
    """The key of a partition's memory segment starting at position `start`."""
    return f"{partition}/seen/{start}".encode()


@dataclass(frozen=True, slots=True)
class MemoryRef:
    """A segment of a partition's redelivery memory: the ids remembered at positions
    `[start, end)` (or the newest of them: older ones may have been forgotten before it was
    written), in the record at `offset` of the checkpoint topic partition."""

    start: int
    end: int
    offset: int
    size: int = 0  # bytes of the record's value

    def key(self, partition: int) -> bytes:
        return segment_key(partition, self.start)


@dataclass(frozen=True)
class Checkpoint:
    """A partition's state as of `offset` (the next internal record to process).

    `memory`: the segments of the redelivery memory the state left out, oldest first;
    `retired`: segments no longer needed, with the time they were dropped, to delete later.
    """

    partition: int
    offset: int
    out_ends: dict[str, int]
    state: bytes | None
    written_at: float = 0.0
    memory: tuple[MemoryRef, ...] = ()
    retired: tuple[tuple[MemoryRef, float], ...] = ()

    def key(self) -> bytes:
        return checkpoint_key(self.partition)

    def encode(self) -> bytes:
        head = orjson.dumps(
            {
                "format": _FORMAT,
                "partition": self.partition,
                "offset": self.offset,
                "out_ends": self.out_ends,
                "written_at": self.written_at,
                "has_state": self.state is not None,
                "memory": [[r.start, r.end, r.offset, r.size] for r in self.memory],
                "retired": [[r.start, r.end, r.offset, r.size, at] for r, at in self.retired],
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
            memory = tuple(_ref(r) for r in head.get("memory", []))
            if any(a.end != b.start for a, b in zip(memory, memory[1:], strict=False)):
                raise SnapshotError("corrupt checkpoint: memory segments are not contiguous")
            checkpoint = cls(
                partition=_count(head["partition"]),
                offset=_count(head["offset"]),
                out_ends={str(k): _count(v) for k, v in out_ends.items()},
                state=body if head.get("has_state") is True else None,
                written_at=float(head.get("written_at", 0.0)),
                memory=memory,
                retired=tuple((_ref(r[:4]), float(r[4])) for r in head.get("retired", [])),
            )
        except SnapshotError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, orjson.JSONDecodeError) as exc:
            raise SnapshotError(f"corrupt checkpoint: {type(exc).__name__}: {exc}"[:300]) from exc
        if head.get("has_state") is True and not body:
            raise SnapshotError("corrupt checkpoint: the state is missing")
        return checkpoint


def _count(x: object) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise SnapshotError(f"corrupt checkpoint: expected an offset, got {x!r:.40}")
    return x


def _ref(x: object) -> MemoryRef:
    if not isinstance(x, list) or len(x) != 4:
        raise SnapshotError(f"corrupt checkpoint: a memory segment is {x!r:.60}")
    start, end, offset, size = (_count(v) for v in x)
    if end <= start:
        raise SnapshotError(f"corrupt checkpoint: an empty memory segment {start}..{end}")
    return MemoryRef(start, end, offset, size)


# -- the redelivery memory in segments ----------------------------------------------------


@dataclass(frozen=True)
class MemoryPlan:
    """What a checkpoint does with the memory: the segments it refers to, the ones it drops
    (every id forgotten), the position ranges to write as new segments beside it, and the
    position from which the checkpoint's state holds the ids itself.

    The new segments are written in the same round trip as the checkpoint, so their offsets
    are not known yet: the checkpoint's state still holds their ids (`memory_from` is where
    the segments it refers to end), and the next checkpoint refers to them instead. So a
    checkpoint never refers to a segment that was not acknowledged, and holds fewer than
    twice `size` ids of its own in steady state."""

    kept: list[MemoryRef]
    dropped: list[MemoryRef]
    seal: list[tuple[int, int]]
    memory_from: int


def sealed_to(refs: list[MemoryRef], first: int) -> int:
    """Where the segments still needed end (`refs` in order, the memory from `first` on): the
    next segment starts there."""
    return refs[-1].end if refs and refs[-1].end > first else first


def plan_memory(refs: list[MemoryRef], first: int, end: int, size: int) -> MemoryPlan:
    """`refs`: the segments written and acknowledged so far; the memory holds positions
    `[first, end)`."""
    kept = [r for r in refs if r.end > first]
    dropped = [r for r in refs if r.end <= first]
    memory_from = sealed = sealed_to(refs, first)
    seal: list[tuple[int, int]] = []
    while end - sealed >= size:
        seal.append((sealed, sealed + size))
        sealed += size
    return MemoryPlan(kept, dropped, seal, memory_from)


def expire_retired(
    retired: list[tuple[MemoryRef, float]], dropped: list[MemoryRef], now: float, keep_s: float
) -> tuple[list[tuple[MemoryRef, float]], list[MemoryRef]]:
    """The segments a checkpoint written at `now` lists as retired (those before, plus the
    ones it just `dropped`), and the ones among them to delete now: dropped `keep_s` ago or
    more, so no checkpoint compaction still keeps refers to them. They stay listed until the
    deletion is acknowledged."""
    listed = [*retired, *((r, now) for r in dropped)]
    return listed, [r for r, at in listed if now - at >= keep_s]


def encode_segment(partition: int, start: int, end: int, ids: list[str]) -> bytes:
    """A segment record: the ids remembered at the last `len(ids)` positions before `end`."""
    head = orjson.dumps({"format": _FORMAT, "partition": partition, "start": start, "end": end})
    return len(head).to_bytes(4, "big") + head + zlib.compress(orjson.dumps(ids), 1)


def decode_segment(data: bytes | None, partition: int, ref: MemoryRef) -> list[str]:
    """The ids of the segment `ref` of `partition`; anything else raises `SnapshotError`."""
    try:
        data = data or b""
        size = int.from_bytes(data[:4], "big")
        head = orjson.loads(data[4 : 4 + size])
        if not isinstance(head, dict) or head.get("format") != _FORMAT:
            raise SnapshotError(f"unknown memory segment format: {str(head)[:60]}")
        if (head.get("partition"), head.get("start"), head.get("end")) != (partition, ref.start, ref.end):
            raise SnapshotError(f"memory segment {str(head)[:80]} is not {partition}:{ref.start}..{ref.end}")
        ids = orjson.loads(zlib.decompress(data[4 + size :]))
    except SnapshotError:
        raise
    except (ValueError, TypeError, zlib.error, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"corrupt memory segment: {type(exc).__name__}: {exc}"[:300]) from exc
    if not isinstance(ids, list) or len(ids) > ref.end - ref.start or not all(isinstance(i, str) for i in ids):
        raise SnapshotError(f"corrupt memory segment {partition}:{ref.start}..{ref.end}")
    return ids


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


def _runs(offsets: list[int], gap: int = 256) -> list[tuple[int, int]]:
    """`[start, end)` ranges covering sorted `offsets`, one read each: offsets closer than
    `gap` share a read (the records in between, mostly checkpoints, are read and passed)."""
    runs: list[tuple[int, int]] = []
    for offset in offsets:
        if runs and offset - runs[-1][1] < gap:
            runs[-1] = (runs[-1][0], offset + 1)
        else:
            runs.append((offset, offset + 1))
    return runs


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
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._gate = gate  # awaited before each write (the correlate stage's group lease)
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
        await self._append(checkpoint.encode(), checkpoint.key(), checkpoint.partition)

    async def write_segment(self, partition: int, start: int, end: int, value: bytes) -> MemoryRef:
        """Append a memory segment (`encode_segment`) and wait for its acknowledgement."""
        offset = await self._append(value, segment_key(partition, start), partition)
        return MemoryRef(start, end, offset, len(value))

    async def delete_segment(self, partition: int, ref: MemoryRef) -> None:
        """Tombstone a segment no checkpoint in use refers to any more (compaction drops it)."""
        await self._append(None, ref.key(partition), partition)

    async def _append(self, value: bytes | None, key: bytes, partition: int) -> int:
        """Write one record once the gate lets it through; its offset, once acknowledged."""
        if self._gate is not None:
            await self._gate()
        meta = await self._producer.send_and_wait(self.topic, value, key=key, partition=partition)
        return int(meta.offset)

    async def memory(self, checkpoint: Checkpoint) -> Earlier | None:
        """The redelivery memory `checkpoint`'s state left out, read back from its segments
        (None: it left nothing out). A missing or corrupt segment raises `SnapshotError`."""
        refs = checkpoint.memory
        if not refs:
            return None
        p = checkpoint.partition
        tp = TopicPartition(self.topic, p)
        wanted = {r.offset: r for r in refs}
        got: dict[int, list[str]] = {}
        for start, end in _runs(sorted(wanted)):
            for offset, key, value in await self._read(tp, start, end):
                ref = wanted.get(offset)
                if ref is not None and key == ref.key(p):
                    got[offset] = decode_segment(value, p, ref)
        missing = [r for r in refs if r.offset not in got]
        if missing:
            got.update(await self._rewritten(tp, missing))
            missing = [r for r in refs if r.offset not in got]
        if missing:
            raise SnapshotError(
                f"memory segment {missing[0].start}..{missing[0].end} of partition {p} is gone "
                f"(offset {missing[0].offset}; {len(missing)} of {len(refs)} missing)"
            )
        ids: list[str] = []
        for i, ref in enumerate(refs):
            part = got[ref.offset]
            if i and len(part) != ref.end - ref.start:  # only the oldest may have lost ids
                raise SnapshotError(f"memory segment {ref.start}..{ref.end} of partition {p} holds {len(part)} ids")
            ids.extend(part)
        return Earlier(refs[-1].end, ids)

    async def _rewritten(self, tp: TopicPartition, refs: list[MemoryRef]) -> dict[int, list[str]]:
        """Segments of `refs` not at their offsets, read from a later record of the same key,
        by their offsets in `refs`. A segment holds the ids at fixed positions of the memory,
        so one written again (by the next owner after a restore, or by an expelled worker
        before it noticed) holds the same ids, and compaction keeps only the newest record of
        a key: the one a checkpoint refers to may be gone while its twin is there. The last
        record of the key decides; a tombstone (the segment was retired) leaves it missing."""
        p = tp.partition
        by_key = {r.key(p): r for r in refs}
        end = (await high_watermarks(self._consumer, [tp]))[tp]
        last: dict[bytes, bytes | None] = {}
        for _, key, value in await self._read(tp, min(r.offset for r in refs), end):
            if key in by_key:
                last[key] = value
        found: dict[int, list[str]] = {}
        for key, value in last.items():
            if value is not None:
                ref = by_key[key]
                found[ref.offset] = decode_segment(value, p, ref)
                log.warning(
                    "memory segment %d..%d of partition %d read from a later copy (offset %d is gone)",
                    ref.start,
                    ref.end,
                    p,
                    ref.offset,
                    extra={"topic": tp.topic, "partition": p},
                )
        return found

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
        key = checkpoint_key(partition)
        while end > begin:
            start = max(begin, end - window)
            records = await self._read(tp, start, end)
            for offset, record_key, value in reversed(records):
                if record_key is not None and record_key != key:
                    continue  # a memory segment (or its tombstone)
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
        load: Callable[[bytes, Earlier | None], Awaitable[T]],
        on_failure: Callable[[str], None] | None = None,
    ) -> tuple[Checkpoint, T | None]:
        """The checkpoint to resume `partition` from and its loaded state (None: start empty).

        The newest checkpoint whose state `load` accepts, with the memory segments it refers
        to, wins; a corrupt one, or one whose segments are gone (`SnapshotError`), is logged,
        counted through `on_failure` and passed over for the one before it. When
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
                what = "memory"  # (its segments, read first)
                try:
                    earlier = await self.memory(checkpoint)
                    what = "state"
                    state = await load(checkpoint.state, earlier)
                except SnapshotError as exc:
                    log.error(
                        "corrupt checkpoint of partition %d (offset %d) passed over, trying an older one: %s",
                        partition,
                        checkpoint.offset,
                        exc,
                        extra={"topic": self.topic, "partition": partition},
                    )
                    failed(what)
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

    async def _read(self, tp: TopicPartition, start: int, end: int) -> list[tuple[int, bytes | None, bytes | None]]:
        """(offset, key, value) of the records at `[start, end)` still held."""
        consumer = self._consumer
        out: list[tuple[int, bytes | None, bytes | None]] = []
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
                out.extend((r.offset, r.key, r.value) for r in batch.get(tp, []) if r.offset < end)
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
