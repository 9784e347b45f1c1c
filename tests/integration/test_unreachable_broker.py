"""An unreachable cluster: a clear log line, retries with backoff (no crash loop), `/health`
says so; once the broker is there the worker connects and processes by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import EmbeddedBroker, free_port
from tests.integration.conftest import Names, Tail, WorkerProcess, until
from tests.integration.datasets import wazuh_lines

pytestmark = pytest.mark.integration


async def test_worker_waits_for_an_unreachable_broker_then_runs(
    workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    port = free_port()
    names = Names(f"127.0.0.1:{port}", "unreachable")
    worker = workers(names.worker_env(SOCNOC_IDLE_TIMEOUT="1"))

    async def reports_down() -> bool:
        got = await worker.health()
        return got is not None and got[0] == 503 and got[1]["broker"].startswith("unreachable")

    await until(reports_down, 30, "/health reporting the broker unreachable", worker)
    await asyncio.sleep(3)
    assert worker.alive()
    log = worker.log_text()
    assert f"Kafka at 127.0.0.1:{port} is unreachable" in log
    attempts = log.count("retrying")
    assert 1 <= attempts <= 12, f"{attempts} attempts in ~4 s: not backing off"
    assert "socnoc_broker_up 0.0" in await worker.metrics()

    with EmbeddedBroker(port, log_path=tmp_path / "late-broker.log") as broker:
        started = time.monotonic()

        async def healthy() -> bool:
            got = await worker.health()
            return got is not None and got[0] == 200

        await until(healthy, 60, "the worker to connect once the broker is up", worker)
        assert time.monotonic() - started < 30
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            line = wazuh_lines()[0]
            async with Tail(broker.bootstrap, names.decisions) as tail:
                await producer.send_and_wait(names.alerts, line)
                # the engine holds a first alert in its window: the idle watermark decides it
                await until(lambda: tail.records[names.decisions], 30, "a decision", worker)
        finally:
            await producer.stop()
        assert "socnoc_broker_up 1.0" in await worker.metrics()
