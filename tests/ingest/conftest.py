"""Fixtures of the ingest-edge tests: a real embedded Tansu broker and helpers around it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from streams.broker import broker_binary, kafka_ready
from tests.ingest.stack import Procs
from tests.programs import free_port, require_binary, stop_process, wait_for_port

__all__ = ["Broker", "consume", "free_port", "require_binary", "stop_process", "wait_for_port"]


@dataclass
class Broker:
    """A Tansu broker (memory storage) on a fixed free port, restartable on the same port.

    Not streams/broker.py's EmbeddedBroker: its start() refuses a port that was just freed
    (a bind without SO_REUSEADDR fails during TIME_WAIT), which an outage test needs, and
    its stop() sends SIGTERM, on which Tansu drains connections for 5 s (SIGINT: at once).
    """

    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not kafka_ready("127.0.0.1", self.port, timeout_s=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"Tansu did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig=signal.SIGINT)
            self.proc = None


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker(free_port())
    b.start()
    try:
        yield b
    finally:
        b.stop()


async def consume(bootstrap: str, topic: str, count: int, deadline_s: float = 20.0
                  ) -> list[ConsumerRecord[bytes, bytes]]:
    """The first `count` records of `topic`, or fail at the deadline with what arrived."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                metadata_max_age_ms=500)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(deadline_s):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for recs in batch.values():
                    records.extend(recs)
    except TimeoutError:
        raise AssertionError(
            f"{len(records)} of {count} records on {topic} within {deadline_s}s"
        ) from None
    finally:
        await consumer.stop()
    return records


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Processes a test starts; all stopped at teardown, logs kept in tmp_path."""
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop()
