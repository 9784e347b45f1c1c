"""A supervised consuming stage: sessions that restart with backoff, never a dead loop.

A session owns its Kafka clients. Whatever ends it (the broker going away, a failed produce,
a bug) is logged, counted in `/health`, and followed by a new session after a backoff; a
new session resumes from committed offsets or checkpoints, which is the same path as a
restarted worker. Only `stop` ends `run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.health import Health, StageHealth
from streams.kafka import BROKER_ERRORS
from streams.settings import Settings

__all__ = ["Stage", "start_clients", "stop_clients", "drop_task"]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


async def start_clients(*clients: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Start clients in order, each within a deadline."""
    for client in clients:
        await asyncio.wait_for(client.start(), _START_TIMEOUT_S)


async def stop_clients(*clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    """Stop every client, ignoring errors (the cluster may be gone).

    With the broker down, aiokafka's consumer `stop()` can raise a stray CancelledError from
    its own heartbeat task; that must not leave the other clients open. A cancellation of
    the calling task itself is passed on once every client is stopped.
    """
    cancelled = False
    for client in clients:
        if client is None:
            continue
        try:
            await asyncio.wait_for(client.stop(), _STOP_TIMEOUT_S)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            cancelled = cancelled or bool(task is not None and task.cancelling())
        except Exception as exc:
            log.debug("stopping a Kafka client failed: %r", exc)
    if cancelled:
        raise asyncio.CancelledError


async def drop_task(task: asyncio.Future[Any]) -> None:
    """Cancel a background task (if still running) and wait for it, without raising its error."""
    if not task.done():
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.debug("a background task failed: %r", task.exception())


class Stage(ABC):
    """Base of the decode and correlate stages."""

    name = "stage"

    def __init__(self, settings: Settings, health: Health) -> None:
        self.settings = settings
        self.health = health
        self.state: StageHealth = health.stage(self.name)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask the stage to finish its current batch and end."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Sessions until `stop()`; errors restart the session after a backoff."""
        delay = 0.5
        cap = max(delay, self.settings.kafka_retry_max.total_seconds())
        while not self._stop.is_set():
            try:
                await self.session()
                delay = 0.5
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                # a stray cancellation from inside a client library: not ours, restart
                self._failed(exc)
                log.warning("%s stage: a client was cancelled; new session in %.1f s", self.name, delay)
            except BROKER_ERRORS as exc:
                self._failed(exc)
                log.warning(
                    "%s stage: Kafka at %s failed (%s: %s); new session in %.1f s",
                    self.name,
                    self.settings.kafka_bootstrap,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            except Exception as exc:
                self._failed(exc)
                log.exception("%s stage failed; new session in %.1f s", self.name, delay)
            finally:
                self.state.running = False
                self.state.partitions = []
            if self._stop.is_set():
                break
            await self._sleep(delay)
            delay = min(cap, delay * 2)

    def _failed(self, exc: BaseException) -> None:
        self.state.errors += 1
        self.state.last_error = f"{type(exc).__name__}: {exc}"[:300]

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def guarded(self, what: str, work: Awaitable[None]) -> None:
        """Await `work`; a non-broker error is logged and counted, not raised."""
        try:
            await work
        except BROKER_ERRORS:
            raise
        except Exception as exc:
            self._failed(exc)
            log.exception("%s stage: %s failed", self.name, what)

    @abstractmethod
    async def session(self) -> None:
        """One life of the stage's clients; returns when `stop()` was called."""
