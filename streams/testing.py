"""Harness for running workers against a real broker: tests/integration and `make soak`.

Topic names of one isolated run (`Names`), `socnoc worker` subprocesses (`WorkerProcess`),
group-less output readers (`Tail`), and topic and consumer-group helpers; broker outages
are `streams.faultproxy`. Where no broker runs (unit tests, `python -m bench.instructions`),
`AckingProducer` and `NullConsumer` stand in for the clients. Nothing here is used by the worker itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import OffsetAndMetadata, RecordMetadata

from streams.broker import free_port
from streams.settings import Settings

__all__ = [
    "ROOT",
    "DATA",
    "WaitTimeout",
    "until",
    "Names",
    "settings_from_env",
    "WorkerProcess",
    "Tail",
    "Produced",
    "AckingProducer",
    "NullConsumer",
    "ensure_topic_partitions",
    "create_topics",
    "committed_offsets",
    "commit_offsets",
    "rewind_group",
]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"


class WaitTimeout(AssertionError):
    """A condition awaited with `until` did not hold in time (an AssertionError for pytest)."""


async def until(
    probe: Callable[[], Any],
    timeout_s: float,
    what: str,
    worker: WorkerProcess | None = None,
    interval_s: float = 0.1,
) -> Any:
    """Poll a (sync or async) probe until it returns something truthy, or fail clearly."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if worker is not None and not worker.alive():
            raise WaitTimeout(f"worker died while waiting for {what}:\n{worker.log_text()[-4000:]}")
        if time.monotonic() >= deadline:
            detail = f"\n{worker.log_text()[-4000:]}" if worker is not None else ""
            raise WaitTimeout(f"timed out after {timeout_s} s waiting for {what}{detail}")
        await asyncio.sleep(interval_s)


@dataclass
class Names:
    """Topic names and worker settings of one run, isolated from others on the same broker."""

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
        """`SOCNOC_*` variables of a worker of this run (quick group joins on Tansu)."""
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
        """The `Settings` a worker with `worker_env(**overrides)` would build."""
        return settings_from_env(self.worker_env(**overrides))


def settings_from_env(env: dict[str, str]) -> Settings:
    """The `Settings` a process with these `SOCNOC_*` variables would build (ours untouched)."""
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


class WorkerProcess:
    """`socnoc worker` in its own process group, with its log in a file; restartable."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "SOCNOC_WEB_PORT": str(self.port)}
        self.env["SOCNOC_WEB_HOST"] = "127.0.0.1"
        self.env["PYTHONPATH"] = str(ROOT)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the process (again, after `kill9` or `terminate`)."""
        self._close()
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
        """Status and body of `GET /health`, or None if the worker does not answer."""
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{self.port}/health"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    return resp.status, await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def metrics(self) -> str:
        """The worker's `/metrics` text."""
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.port}/metrics"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return await resp.text()

    async def wait_partitions(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until healthy and owning decode partitions; the health body."""

        async def ready() -> dict[str, Any] | None:
            got = await self.health()
            if got is None:
                return None
            status, body = got
            stages = body.get("stages", {})
            if status == 200 and stages.get("decode", {}).get("partitions"):
                return body
            return None

        result: dict[str, Any] = await until(ready, timeout_s, f"worker {self.port} healthy", self)
        return result

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole process group, at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (a clean stop: the worker leaves its groups), SIGKILL after `timeout_s`."""
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


class Tail:
    """Reads every partition of some topics in the background (no group), from the beginning
    or from given offsets (`offsets`: topic -> partition -> offset, every partition named).

    `on_batch(topic, records)` sees each fetched batch; `now` is when the fetch that brought
    it returned (`time.perf_counter()`, stamped before any callback: a reader timing arrivals
    uses it). `consumer_options` go to the consumer (`fetch_max_wait_ms`...).
    """

    def __init__(
        self,
        bootstrap: str,
        *topics: str,
        client_id: str = "socnoc-test-tail",
        keep: bool = True,
        offsets: dict[str, dict[int, int]] | None = None,
        max_records: int = 10_000,
        poll_ms: int = 200,
        **consumer_options: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.client_id = client_id
        self.keep = keep  # False: only `on_batch` sees the records (long runs)
        self.offsets = offsets
        self.max_records = max_records
        self.poll_ms = poll_ms
        self.consumer_options = consumer_options
        self.records: dict[str, list[ConsumerRecord[bytes, bytes]]] = {t: [] for t in topics}
        self.on_batch: Callable[[str, list[ConsumerRecord[bytes, bytes]]], None] | None = None
        self.count = 0  # records read, on every topic
        self.now = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Tail:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            client_id=self.client_id,
            **self.consumer_options,
        )
        await consumer.start()
        if self.offsets is not None:
            starts = {TopicPartition(t, p): o for t in self.topics for p, o in sorted(self.offsets[t].items())}
            consumer.assign(list(starts))
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
        else:
            tps: list[TopicPartition] = []
            for topic in self.topics:

                async def parts(t: str = topic) -> set[int] | None:
                    found: set[int] | None = consumer.partitions_for_topic(t)
                    if not found:
                        await consumer.topics()
                    return found

                found = await until(parts, 60, f"topic {topic}")
                tps.extend(TopicPartition(topic, p) for p in sorted(found))
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name=f"tail-{','.join(self.topics)}")
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records)
            self.now = time.perf_counter()
            for tp, records in batch.items():
                self.count += len(records)
                if self.keep:
                    self.records[tp.topic].extend(records)
                if self.on_batch is not None:
                    self.on_batch(tp.topic, records)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    def values(self, topic: str) -> list[dict[str, Any]]:
        """The JSON values read so far on `topic`."""
        return [orjson.loads(r.value) for r in self.records[topic] if r.value is not None]


@dataclass(frozen=True)
class Produced:
    """A record an `AckingProducer` was handed, read back from its batch."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class AckingProducer:
    """What `streams.kafka.BatchSender` and the stages ask of `AIOKafkaProducer`, where no
    broker runs: aiokafka's own record batches of `batch_size` bytes (the worker's producer
    makes 1 MiB ones), each acknowledged at once with the offsets a partition's log would
    give, on topics of `partitions` partitions. `requests` has every produce request's
    (topic, partition, records); with `keep=True`, `produced` has every record read back
    from its batch, in the order they were handed over (reading them back costs: the
    benchmark's workloads leave it off)."""

    def __init__(self, partitions: int = 8, *, batch_size: int = 1024 * 1024, keep: bool = False) -> None:
        self.partitions = partitions
        self.batch_size = batch_size
        self.keep = keep
        self.ends: dict[tuple[str, int], int] = {}
        self.requests: list[tuple[str, int, int]] = []
        self.produced: list[Produced] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)  # no compression, as the worker's producer

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[RecordMetadata]:
        count = batch.record_count()
        buffer = batch._build()  # the bytes, as aiokafka's accumulator builds them to send
        base = self._log(topic, partition, count)
        if self.keep:
            self.produced += [
                Produced(topic, partition, base + r.offset, r.key, r.value, list(r.headers))
                for r in DefaultRecordBatch(bytes(buffer))
            ]
        return self._ack(topic, partition, base)

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        if partition is None:
            raise ValueError("AckingProducer.send needs a partition (BatchSender gives one)")
        base = self._log(topic, partition, 1)
        if self.keep:
            self.produced.append(Produced(topic, partition, base, key, value, list(headers or [])))
        return self._ack(topic, partition, base)

    def _log(self, topic: str, partition: int, count: int) -> int:
        base = self.ends.get((topic, partition), 0)
        self.ends[(topic, partition)] = base + count
        self.requests.append((topic, partition, count))
        return base

    @staticmethod
    def _ack(topic: str, partition: int, base: int) -> asyncio.Future[RecordMetadata]:
        ack: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        ack.set_result(RecordMetadata(topic, partition, TopicPartition(topic, partition), base, -1, None, None))
        return ack


class NullConsumer:
    """What the stages' record loops ask of `AIOKafkaConsumer` when their records come from
    elsewhere (a test's, `python -m bench.instructions`'): no high watermark known, pauses and
    commits that do nothing."""

    def highwater(self, tp: TopicPartition) -> None:
        return None

    def pause(self, *tps: TopicPartition) -> None:
        pass

    def resume(self, *tps: TopicPartition) -> None:
        pass

    async def commit(self, offsets: object) -> None:
        pass


async def ensure_topic_partitions(bootstrap: str, topic: str) -> int:
    """How many partitions a (worker-created) topic has; waits until it exists."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:

        async def probe() -> set[int] | None:
            await consumer.topics()
            found: set[int] | None = consumer.partitions_for_topic(topic)
            return found

        return len(await until(probe, 60, f"topic {topic}"))
    finally:
        await consumer.stop()


async def create_topics(bootstrap: str, topics: dict[str, int], client_id: str = "socnoc-test-admin") -> None:
    """Create the topics (name -> partitions) that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(name, n, 1) for name, n in topics.items() if name not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def committed_offsets(
    bootstrap: str, group: str, tps: Iterable[TopicPartition], client_id: str = "socnoc-test-offsets"
) -> dict[TopicPartition, int | None]:
    """A consumer group's committed offsets (None: nothing committed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, client_id=client_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


async def commit_offsets(
    bootstrap: str, group: str, offsets: dict[TopicPartition, int], client_id: str = "socnoc-test-offsets"
) -> None:
    """Set a consumer group's committed offsets from outside the group (rewind: redelivery)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, client_id=client_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


async def rewind_group(
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    rewind: int,
    client_id: str = "socnoc-test-rewind",
    timeout_s: float = 60.0,
) -> int:
    """Move a consumer group's committed offsets `rewind` records back: they are delivered again.

    Joins the group as a member (the broker refuses commits from outside a group that has
    state), so the group's workers should be down; returns how many records were rewound.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=client_id,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        consumer.subscribe(list(topics))

        async def assigned() -> set[TopicPartition]:
            await consumer.getmany(timeout_ms=100)
            found: set[TopicPartition] = consumer.assignment()
            return found

        tps = await until(assigned, timeout_s, f"joining group {group}")
        done = {tp: await consumer.committed(tp) for tp in tps}
        offsets = {tp: OffsetAndMetadata(max(0, c - rewind), "") for tp, c in done.items() if c}
        if offsets:
            await consumer.commit(offsets)
        return sum(int(done[tp] or 0) - o.offset for tp, o in offsets.items())
    finally:
        await consumer.stop()
