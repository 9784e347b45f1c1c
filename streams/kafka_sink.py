"""A Kafka producer for the ingest edges that knows whether Kafka is reachable.

The gateway answers 503 and the syslog listener buffers while Kafka is down, so sending
must fail fast with `KafkaUnavailable` rather than wait out aiokafka's own retries. The
sink keeps (re)connecting in the background and probes the cluster while it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.errors import SocnocError

__all__ = ["KafkaUnavailable", "OutRecord", "Delivered", "KafkaSink", "start_client"]

log = logging.getLogger(__name__)


async def start_client(client: Any) -> None:
    """Start an aiokafka producer or consumer; if cancelled meanwhile, let the start finish
    and stop the client, since aiokafka leaks its bootstrap connection when a start is
    cancelled halfway. aiokafka's own `request_timeout_ms` bounds the start."""
    task = asyncio.ensure_future(client.start())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        with contextlib.suppress(Exception):
            await client.stop()
        raise


class KafkaUnavailable(SocnocError):
    """Kafka cannot take records right now; the caller should answer 503 or retry later."""


@dataclass(frozen=True)
class OutRecord:
    """One record to produce."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Delivered:
    """Where a record landed; `record_id` is the id adapters derive alert ids from."""

    topic: str
    partition: int
    offset: int

    @property
    def record_id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


class KafkaSink:
    """Produce batches to Kafka with a deadline; track whether the cluster is reachable."""

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout_s: float = 5.0,
        retry_s: float = 1.0,
        probe_s: float = 5.0,
        client_options: Mapping[str, Any] | None = None,
        client_id: str = "socnoc-ingest",
    ) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._probe_s = probe_s
        self._options = dict(client_options or {})
        self._client_id = client_id
        self._producer: Any = None
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """True while the last connection attempt, probe or send succeeded."""
        return self._up.is_set()

    async def start(self) -> None:
        """Start connecting in the background; returns at once (Kafka may be down)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="kafka-sink")

    async def wait_up(self, timeout_s: float) -> bool:
        """Wait until connected, at most `timeout_s`; return whether it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout_s)
        return self.up

    async def stop(self) -> None:
        """Stop the supervisor and the producer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_producer()

    async def send(self, records: Sequence[OutRecord]) -> list[Delivered]:
        """Produce `records` and wait for all acks, or raise `KafkaUnavailable` in time."""
        producer = self._producer
        if producer is None or not self.up:
            raise KafkaUnavailable("not connected to Kafka")
        try:
            return await asyncio.wait_for(self._send_all(producer, records), self._timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("produce failed, marking Kafka down: %s", type(exc).__name__)
            self._mark_down()
            raise KafkaUnavailable(f"Kafka did not acknowledge in time ({type(exc).__name__})") from exc

    @staticmethod
    async def _send_all(producer: Any, records: Sequence[OutRecord]) -> list[Delivered]:
        futures = [await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers)) for r in records]
        metadata = await asyncio.gather(*futures)
        return [Delivered(m.topic, m.partition, m.offset) for m in metadata]

    def _mark_down(self) -> None:
        if self._up.is_set():
            self._up.clear()
            self._down.set()

    async def _supervise(self) -> None:
        while True:
            if self._producer is None:
                await self._connect()
            if self._producer is None:
                await asyncio.sleep(self._retry_s)
                continue
            # Connected: wake on a failed send, or probe the cluster now and then.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._down.wait(), self._probe_s)
            if self.up and not await self._probe():
                log.warning("Kafka metadata probe failed, marking Kafka down")
                self._mark_down()
            if not self.up:
                await self._close_producer()

    async def _connect(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            request_timeout_ms=int(self._timeout_s * 1000),
            **self._options,
        )
        try:
            await start_client(producer)
        except (KafkaError, OSError) as exc:
            log.info("Kafka not reachable at %s (%s); retrying", self._bootstrap,
                     type(exc).__name__)
            await self._stop_quietly(producer)
            return
        self._producer = producer
        self._down.clear()
        self._up.set()
        log.info("connected to Kafka at %s", self._bootstrap)

    async def _probe(self) -> bool:
        producer = self._producer
        if producer is None:
            return False
        try:
            updated = await asyncio.wait_for(producer.client.force_metadata_update(), self._timeout_s)
        except (KafkaError, TimeoutError, OSError):
            return False
        return bool(updated)

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        self._mark_down()
        if producer is not None:
            # Pending sends fail here instead of being delivered late after a 503.
            await self._stop_quietly(producer)

    async def _stop_quietly(self, producer: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), self._timeout_s)
