"""Integration fixtures: one embedded Tansu broker per session, workers as real processes.

Every test gets its own topic names and app id (`names`), so tests share the broker without
seeing each other's records. Workers run `socnoc worker` in a subprocess (their own process
group) with group settings tuned for a quick join on Tansu.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from streams.broker import EmbeddedBroker, free_port
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"
_counter = itertools.count(1)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    instance = EmbeddedBroker(log_path=log_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@dataclass
class Names:
    """Topic names and settings of one test, isolated from the others on the broker."""

    bootstrap: str
    prefix: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.soc.alerts"

    @property
    def events(self) -> str:
        return f"{self.prefix}.noc.events"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}.decisions"

    @property
    def incidents(self) -> str:
        return f"{self.prefix}.incidents"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def assets(self) -> str:
        return f"{self.prefix}.ctx.assets"

    def worker_env(self, **overrides: str) -> dict[str, str]:
        env = {
            "SOCNOC_KAFKA_BOOTSTRAP": self.bootstrap,
            "SOCNOC_APP_ID": self.prefix,
            "SOCNOC_INPUTS": orjson.dumps(
                {self.alerts: {"format": "auto"}, self.events: {"format": "auto"}}
            ).decode(),
            "SOCNOC_ASSETS_TOPIC": self.assets,
            "SOCNOC_CHANGES_TOPIC": f"{self.prefix}.ctx.changes",
            "SOCNOC_FEEDBACK_TOPIC": f"{self.prefix}.ctx.feedback",
            "SOCNOC_DECISIONS_TOPIC": self.decisions,
            "SOCNOC_INCIDENTS_TOPIC": self.incidents,
            "SOCNOC_DLQ_TOPIC": self.dlq,
            "SOCNOC_PARTITIONS": "4",
            "SOCNOC_GROUP_SESSION_TIMEOUT": "2",
            "SOCNOC_GROUP_HEARTBEAT_INTERVAL": "0.3",
            "SOCNOC_GROUP_REBALANCE_TIMEOUT": "10",
            "SOCNOC_CHECKPOINT_INTERVAL": "1",
            "SOCNOC_IDLE_TIMEOUT": "3600",
            "SOCNOC_KAFKA_RETRY_MAX": "2",
        }
        env.update(self.env)
        env.update(overrides)
        return env

    def settings(self, **overrides: str) -> Settings:
        env = self.worker_env(**overrides)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return Settings()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def names(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Names:
    short = request.node.name.replace("test_", "")[:20].replace("[", "-").replace("]", "")
    return Names(broker.bootstrap, f"t{next(_counter)}-{short}")


class WorkerProcess:
    """`socnoc worker` in its own process group, with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "SOCNOC_WEB_PORT": str(self.port)}
        self.env["SOCNOC_WEB_HOST"] = "127.0.0.1"
        self.env["PYTHONPATH"] = str(ROOT)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from streams.cli import main; sys.exit(main(['worker']))",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    async def health(self) -> tuple[int, dict[str, Any]] | None:
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{self.port}/health"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    return resp.status, await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.port}/metrics"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return await resp.text()

    async def wait_partitions(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until healthy and owning correlation partitions (or the decode group)."""

        async def ready() -> dict[str, Any] | None:
            got = await self.health()
            if got is None:
                return None
            status, body = got
            stages = body.get("stages", {})
            if status == 200 and stages.get("decode", {}).get("partitions"):
                return body
            return None

        return await until(ready, timeout_s, f"worker {self.port} healthy", self)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str = "worker") -> WorkerProcess:
        proc = WorkerProcess(env, tmp_path / f"{name}-{len(started)}.log").start()
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill9() if proc.alive() else proc._close()


async def until(
    probe: Callable[[], Any], timeout_s: float, what: str, worker: WorkerProcess | None = None
) -> Any:
    """Poll an (async) probe until it returns something truthy, or fail with a clear message."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if worker is not None and not worker.alive():
            raise AssertionError(f"worker died while waiting for {what}:\n{worker.log_text()[-4000:]}")
        if time.monotonic() >= deadline:
            detail = f"\n{worker.log_text()[-4000:]}" if worker is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{detail}")
        await asyncio.sleep(0.1)


class Tail:
    """Reads every partition of some topics from the beginning, in the background."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: dict[str, list[ConsumerRecord[bytes, bytes]]] = {t: [] for t in topics}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Tail:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        tps: list[TopicPartition] = []
        for topic in self.topics:
            parts = await until(
                lambda t=topic: consumer.partitions_for_topic(t), 60, f"topic {topic}"
            )
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, records in batch.items():
                self.records[tp.topic].extend(records)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.records[topic] if r.value is not None]


@pytest.fixture
async def producer(broker: EmbeddedBroker) -> AsyncIterator[AIOKafkaProducer]:
    instance = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", max_request_size=16 * 1024 * 1024
    )
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


async def ensure_topic_partitions(bootstrap: str, topic: str) -> int:
    """How many partitions a (worker-created) topic has; waits until it exists."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:

        async def probe() -> set[int] | None:
            await consumer.topics()
            return consumer.partitions_for_topic(topic)

        return len(await until(probe, 60, f"topic {topic}"))
    finally:
        await consumer.stop()
