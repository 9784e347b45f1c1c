"""Checkpoints of correlation partitions, and what a restarted partition already published.

A checkpoint is one record on `<app_id>.checkpoints`, partition = the correlation partition,
holding the partition's state together with the next internal offset to process and the end
offsets of the output topics when it was written. Restoring reads the latest one, then scans
the outputs written since (`published_since`) for records that came from this partition: the
deterministic replay of the log regenerates exactly those, and they are not published again.
Tansu has no transactions (InitProducerId fails), so this is how outputs stay exactly-once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.kafka import high_watermarks
from streams.records import OID_HEADER, SRC_HEADER, header

__all__ = ["Checkpoint", "Published", "CheckpointStore", "parse_src"]

log = logging.getLogger(__name__)

_FORMAT = 1
_READ_TIMEOUT_S = 30.0


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
        size = int.from_bytes(data[:4], "big")
        head = orjson.loads(data[4 : 4 + size])
        if head.get("format") != _FORMAT:
            raise ValueError(f"unknown checkpoint format {head.get('format')!r}")
        body = data[4 + size :]
        return cls(
            partition=int(head["partition"]),
            offset=int(head["offset"]),
            out_ends={str(k): int(v) for k, v in head["out_ends"].items()},
            state=body if head.get("has_state") else None,
            written_at=float(head.get("written_at", 0.0)),
        )


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
        consumer = self._consumer
        tps = {p: TopicPartition(self.topic, p) for p in partitions}
        ends = await high_watermarks(consumer, tps.values())
        begins = await consumer.beginning_offsets(list(tps.values()))
        return {p: await self._latest(tp, ends[tp], int(begins[tp])) for p, tp in tps.items()}

    async def _latest(self, tp: TopicPartition, end: int, begin: int) -> Checkpoint | None:
        window = 4
        while True:
            start = max(begin, end - window)
            best: Checkpoint | None = None
            for offset, value in await self._read(tp, start, end):
                try:
                    checkpoint = Checkpoint.decode(value or b"")
                except (ValueError, KeyError, orjson.JSONDecodeError) as exc:
                    log.error(
                        "unreadable checkpoint: %s",
                        exc,
                        extra={"topic": self.topic, "partition": tp.partition, "offset": offset},
                    )
                    continue
                if checkpoint.partition == tp.partition:
                    best = checkpoint
            if best is not None or start <= begin:
                return best
            window *= 4

    async def _read(self, tp: TopicPartition, start: int, end: int) -> list[tuple[int, bytes | None]]:
        consumer = self._consumer
        consumer.assign([tp])
        consumer.seek(tp, start)
        out: list[tuple[int, bytes | None]] = []
        if start >= end:
            return out
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {tp.topic}:{tp.partition} up to {end}")
            batch = await consumer.getmany(tp, timeout_ms=500)
            out.extend((r.offset, r.value) for r in batch.get(tp, []) if r.offset < end)
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
        return found
