"""aiokafka plumbing shared by the worker's stages: client options, topics, reconnection.

TLS and SASL settings pass straight through to aiokafka. An unreachable cluster is logged
once per attempt with the bootstrap address and retried with exponential backoff; the
caller's `Health` says so meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.settings import Settings

__all__ = [
    "TopicSpec",
    "client_options",
    "topic_specs",
    "ensure_topics",
    "make_producer",
    "make_consumer",
    "retry_forever",
    "high_watermarks",
    "BatchSender",
    "Sent",
    "key_partition",
    "murmur2",
    "BROKER_ERRORS",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# What an unreachable or misbehaving cluster raises from aiokafka calls.
BROKER_ERRORS: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)
_MAX_REQUEST = 64 * 1024 * 1024  # checkpoints can be large; the DLQ keeps raw records


@dataclass(frozen=True)
class TopicSpec:
    """A topic socnoc creates if missing."""

    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options common to every aiokafka client (bootstrap, TLS, SASL)."""
    if not settings.kafka_bootstrap:
        raise ValueError("SOCNOC_KAFKA_BOOTSTRAP is not set")
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
        context.check_hostname = settings.kafka_ssl_check_hostname
        if settings.kafka_ssl_certfile is not None:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                settings.kafka_ssl_password.get_secret_value()
                if settings.kafka_ssl_password
                else None,
            )
        opts["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None
        )
    return opts


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes, with the configs socnoc relies on."""
    n = settings.partitions
    compact = (("cleanup.policy", "compact"),)
    big = (("max.message.bytes", str(_MAX_REQUEST)),)
    specs = [TopicSpec(name, n) for name in settings.inputs]
    specs += [TopicSpec(name, settings.context_partitions, compact) for name in settings.context_topics()]
    specs += [
        TopicSpec(settings.internal_topic(), n),
        TopicSpec(settings.checkpoint_topic(), n, compact + big + _keep_older_checkpoints(settings)),
        TopicSpec(settings.decisions_topic, n),
        TopicSpec(settings.incidents_topic, n),
        TopicSpec(settings.dlq_topic, n, big),
    ]
    specs += [TopicSpec(name, n) for name in settings.team_topic_names()]
    return specs


def checkpoint_keep_s(settings: Settings) -> float:
    """How long compaction keeps a partition's older checkpoints: ten intervals, a minute at
    least. A worker that finds the newest one corrupt falls back to one of them, not to a full
    replay; a memory segment they refer to is deleted no sooner."""
    return max(60.0, settings.checkpoint_interval.total_seconds() * 10)


def _keep_older_checkpoints(settings: Settings) -> tuple[tuple[str, str], ...]:
    return (("min.compaction.lag.ms", str(int(checkpoint_keep_s(settings) * 1000))),)


async def ensure_topics(settings: Settings, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(**client_options(settings), client_id=settings.kafka_client_id)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                s.name,
                s.partitions,
                settings.replication_factor,
                topic_configs=dict(s.config) or None,
            )
            for s in specs
            if s.name not in existing
        ]
        if not new:
            return []
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker raced us
            await admin.create_topics(new)
        log.info("created topics %s", ", ".join(t.name for t in new))
        return [t.name for t in new]
    finally:
        await admin.close()


def make_producer(settings: Settings, *, name: str, linger_ms: int = 5) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas (the broker's own durability)."""
    return AIOKafkaProducer(
        **client_options(settings),
        client_id=f"{settings.kafka_client_id}-{name}",
        acks="all",
        linger_ms=linger_ms,
        max_request_size=_MAX_REQUEST,
        max_batch_size=1024 * 1024,
    )


def make_consumer(
    settings: Settings, *, name: str, group: str | None, fetch_wait_floor_ms: int = 0, **extra: Any
) -> AIOKafkaConsumer:
    """A manually committed consumer; `group=None` for a group-less (assign) reader. Its
    fetch waits `SOCNOC_KAFKA_FETCH_WAIT`, or `fetch_wait_floor_ms` if longer (a consumer that
    need not hurry)."""
    opts: dict[str, Any] = {
        **client_options(settings),
        "client_id": f"{settings.kafka_client_id}-{name}",
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 16 * 1024 * 1024,
        # (Tansu holds a fetch for the whole wait even when records are ready: aiokafka's
        # 500 ms default added ~115 ms to every hop there; 10 ms costs an idle consumer ~70
        # fetches a second, which Kafka, answering as records arrive, does not need)
        "fetch_max_wait_ms": max(fetch_wait_floor_ms, round(settings.kafka_fetch_wait.total_seconds() * 1000)),
        "isolation_level": "read_uncommitted",
    }
    if group is not None:
        opts.update(
            session_timeout_ms=int(settings.group_session_timeout.total_seconds() * 1000),
            heartbeat_interval_ms=int(settings.group_heartbeat_interval.total_seconds() * 1000),
            rebalance_timeout_ms=int(settings.group_rebalance_timeout.total_seconds() * 1000),
        )
    opts.update(extra)
    return AIOKafkaConsumer(**opts)


async def retry_forever(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    settings: Settings,
    on_failure: Callable[[BaseException], None] | None = None,
    first_delay_s: float = 0.5,
) -> T:
    """Run `attempt` until it succeeds, backing off exponentially on broker errors."""
    delay = first_delay_s
    cap = max(first_delay_s, settings.kafka_retry_max.total_seconds())
    while True:
        try:
            return await attempt()
        except BROKER_ERRORS as exc:
            if on_failure is not None:
                on_failure(exc)
            log.warning(
                "%s: Kafka at %s unreachable (%s: %s); retrying in %.1f s",
                what,
                settings.kafka_bootstrap,
                type(exc).__name__,
                exc,
                delay,
            )
        await asyncio.sleep(delay)
        delay = min(cap, delay * 2)


async def high_watermarks(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], timeout_s: float = 30.0
) -> dict[TopicPartition, int]:
    """Exact end offsets, from fetch responses; `consumer` must be group-less (it is assigned
    the partitions, which are paused after the call: it fetches nothing in the background).

    Tansu 0.6 answers ListOffsets(latest) with the base offset of the last record batch plus
    one, which is short of the end when producers batch; `end_offsets()` is only a lower
    bound there. A fetch response's high watermark is right on every broker.
    """
    wanted = list(tps)
    if not wanted:
        return {}
    lower = await consumer.end_offsets(wanted)
    consumer.assign(wanted)
    found: dict[TopicPartition, int] = {}
    try:
        for tp in wanted:
            consumer.seek(tp, max(0, int(lower[tp]) - 1))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(found) < len(wanted):
            if loop.time() > deadline:
                raise TimeoutError("no fetch response for the high watermarks in time")
            missing = [tp for tp in wanted if tp not in found]
            await consumer.getmany(*missing, timeout_ms=200, max_records=1)
            for tp in missing:
                high = consumer.highwater(tp)
                if high is not None:
                    found[tp] = int(high)
    finally:
        consumer.pause(*wanted)
    return found


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (as `aiokafka.partitioner.murmur2`, which it equals on every input),
    reading the 4-byte words with one `struct` call: about half the cost per key."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    if words:
        fmt = _WORDS.get(words)
        if fmt is None:
            fmt = _WORDS[words] = struct.Struct(f"<{words}I")
        for k in fmt.unpack_from(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        base = length & ~3
        if extra >= 3:
            h ^= data[base + 2] << 16
        if extra >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=65536)
def _cached_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key` (murmur2, like the JVM)."""
    return _cached_hash(key) % partitions


@dataclass(slots=True)
class _Alone:
    """A record too big for a batch, sent on its own."""

    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]] | None


@dataclass(frozen=True)
class Sent:
    """One produce request's records, by the tags given to `BatchSender.add`: once `ack`
    resolves, the i-th tag's record is at offset `ack.result().offset + i` (a batch's records
    get consecutive offsets from its base offset)."""

    ack: asyncio.Future[Any]
    partition: int
    tags: list[Any]


class BatchSender:
    """Builds per-partition record batches and hands them to the producer in one go.

    `AIOKafkaProducer.send()` costs ~30-40 us a record in Python; appending to a batch and
    `send_batch()` ~7 us. Order within a partition is the order of `put()`/`add()` calls.
    `put()` appends without awaiting (no coroutine a record: the stages call it per record);
    a batch that fills up is closed and queued, and `drain()` hands the queued ones to the
    producer. `send()` hands every queued and open batch to the producer, closed (so it goes
    out at once instead of lingering: the caller already batched) and returns their
    acknowledgements without waiting; `flush()` sends and waits for every acknowledgement
    (raising on a failed batch). With `tagged=True`, every record's `tag` is kept with the
    request it went out in (`take_sent()`), so that its offset is known once that request is
    acknowledged. A `gate`, if given, is awaited before anything is handed to the producer
    (the correlate stage's group lease, `streams.lease`).
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        tagged: bool = False,
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._producer = producer
        self._gate = gate  # awaited before anything is handed to the producer
        self._batches: dict[tuple[str, int], Any] = {}
        self._futures: list[asyncio.Future[Any]] = []
        self._partitions: dict[str, int] = {}
        self._tagged = tagged
        self._tags: dict[tuple[str, int], list[Any]] = {}
        self._sent: list[Sent] = []
        # full batches and records too big for a batch, in the order they were put
        self._queued: list[tuple[tuple[str, int], Any, list[Any], _Alone | None]] = []

    @property
    def queued(self) -> bool:
        """Whether full batches wait for `drain()` (or `send()`)."""
        return bool(self._queued)

    async def partitions(self, topic: str) -> int:
        """How many partitions `topic` has (cached)."""
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = len(await self._producer.partitions_for(topic))
        return count

    async def add(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        tag: Any = None,
    ) -> None:
        """`put()`, with the partition from the key's hash when none is given, and the
        queued batches handed to the producer."""
        if partition is None:
            if key is None:
                raise ValueError("a record needs a key or a partition")
            count = self._partitions.get(topic)
            if count is None:
                count = await self.partitions(topic)
            partition = key_partition(key, count)
        self.put(topic, value, partition, key=key, headers=headers, tag=tag)
        if self._queued:
            await self.drain()

    def put(
        self,
        topic: str,
        value: bytes,
        partition: int,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        tag: Any = None,
    ) -> bool:
        """Append a record to its partition's open batch, without awaiting; True when full
        batches wait for `drain()` (as `queued`, without a property lookup a record)."""
        slot = (topic, partition)
        batch = self._batches.get(slot)
        if batch is None:
            batch = self._batches[slot] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is not None:
            if self._tagged:
                tags = self._tags.get(slot)
                if tags is None:
                    self._tags[slot] = [tag]
                else:
                    tags.append(tag)
            return bool(self._queued)
        # full: queue it and start another; a record bigger than a batch goes alone
        del self._batches[slot]
        if batch.record_count():
            self._queued.append((slot, batch, self._tags.pop(slot, []), None))
        batch = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is not None:
            self._batches[slot] = batch
            if self._tagged:
                self._tags[slot] = [tag]
            return bool(self._queued)
        self._queued.append((slot, None, [tag], _Alone(value, key, headers)))
        return True

    async def drain(self) -> None:
        """Hand the queued (full) batches to the producer, in order."""
        if self._gate is not None and self._queued:
            await self._gate()
        queued, self._queued = self._queued, []
        for slot, batch, tags, alone in queued:
            topic, partition = slot
            if alone is None:
                batch.close()  # ready now: no linger
                ack = await self._producer.send_batch(batch, topic, partition=partition)
            else:
                ack = await self._producer.send(
                    topic, alone.value, key=alone.key, partition=partition, headers=alone.headers
                )
            self._futures.append(ack)
            if self._tagged:
                self._sent.append(Sent(ack, partition, tags))

    async def send(self) -> list[asyncio.Future[Any]]:
        """Hand every queued and open batch to the producer; the acknowledgements of
        everything sent since the last `send()`/`flush()`, not awaited."""
        batches, self._batches = self._batches, {}
        for slot, batch in batches.items():
            self._queued.append((slot, batch, self._tags.pop(slot, []), None))
        await self.drain()
        futures, self._futures = self._futures, []
        return futures

    def take_sent(self) -> list[Sent]:
        """The tagged requests handed to the producer since the last call (`tagged=True`)."""
        sent, self._sent = self._sent, []
        return sent

    async def flush(self) -> None:
        """Send every open batch and wait until the broker acknowledged all of them."""
        futures = await self.send()
        if futures:
            await asyncio.gather(*futures)
