"""Kafka benchmarks on the embedded broker: the raw pipeline, the socnoc worker, latency.

Everything runs on one embedded Tansu broker; `bench.run` gives each run fresh topics
(Tansu slows down as a partition grows). The raw pipeline
(`bench.rawpipe`) and the worker (`socnoc worker`) each run in their own process, never at
the same time, and are fed the very same JSON records by a producer in this process; a
group-less consumer here tails their output topic. Throughput is each pipeline at full
speed, from the moment its input is available to the last output received here: the
worker (ready and idle) gets the records produced live — it is far slower than the
producer — while the raw pipeline, which is about as fast as the producer, is started on
the records already produced. Latency is measured per alert from just before its `send` to
the arrival here of its decision, for the alerts whose decision is due on arrival (see
`latency_run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench.data import KAFKA_MAP, Records
from bench.procs import cpu_seconds, die_with_parent
from bench.rawpipe import internal_topic
from streams.broker import free_port
from streams.kafka import BatchSender, high_watermarks, key_partition
from streams.records import KIND_HEADER, SRC_HEADER, header
from streams.testing import Tail, WaitTimeout, commit_offsets, create_topics, settings_from_env, until

__all__ = [
    "KafkaBench",
    "WorkerProcess",
    "E2EResult",
    "RawProcess",
    "LatencyResult",
    "due_on_arrival",
    "harness_gc_paused",
    "Arrivals",
    "PauseHistogram",
    "caps_hit",
]

ROOT = Path(__file__).resolve().parents[1]
_ROUND_S = 0.005  # the paced producer's shortest round
# an alert's hops: producer -> internal record (decode stage), internal -> decision record
# (correlate stage), decision record -> read by the benchmark's consumer
HOPS = ("decode", "correlate", "deliver")
_PRODUCER: dict[str, Any] = {"acks": "all", "linger_ms": 5, "max_batch_size": 1024 * 1024}


async def ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Exact end offset of every partition of `topic` (waits until the topic exists)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="bench-ends")
    await consumer.start()
    try:

        async def parts() -> set[int] | None:
            await consumer.topics()
            found: set[int] | None = consumer.partitions_for_topic(topic)
            return found

        partitions = await until(parts, 60, f"topic {topic}", interval_s=0.2)
        found = await high_watermarks(consumer, [TopicPartition(topic, p) for p in sorted(partitions)])
        return {tp.partition: offset for tp, offset in found.items()}
    finally:
        await consumer.stop()


def _tail(bootstrap: str, topic: str, offsets: dict[int, int], on_batch: Callable[[list[Any], float], None]) -> Tail:
    """A reader of `topic` from `offsets` in the background; `on_batch(records, now)` sees every
    record with the moment its fetch returned. `fetch_max_wait_ms` is small so that the stamp is
    at most a few milliseconds after the record became readable."""
    reader = Tail(
        bootstrap,
        topic,
        client_id="bench-tail",
        keep=False,
        offsets={topic: offsets},
        max_records=20_000,
        poll_ms=100,
        fetch_max_wait_ms=5,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    reader.on_batch = lambda _topic, records: on_batch(records, reader.now)
    return reader


def caps_hit(metrics: str) -> dict[str, int]:
    """Each state cap reached (`socnoc_caps_hit_total{cap}` in a /metrics page) and how often."""
    found: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "socnoc_caps_hit_total" and sample.value > 0:
                found[sample.labels["cap"]] = int(sample.value)
    return found


@dataclass
class PauseHistogram:
    """A worker's checkpoint pauses: how many, their total, and the cumulative count at each
    bucket's upper bound (seconds)."""

    count: int = 0
    total_s: float = 0.0
    buckets: dict[float, int] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, metrics: str) -> PauseHistogram:
        """The pauses in a /metrics page (`socnoc_checkpoint_duration_seconds`)."""
        found = cls()
        for family in text_string_to_metric_families(metrics):
            if family.name != "socnoc_checkpoint_duration_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    found.count = int(sample.value)
                elif sample.name.endswith("_sum"):
                    found.total_s = sample.value
                elif sample.name.endswith("_bucket"):
                    found.buckets[float(sample.labels["le"])] = int(sample.value)
        return found

    def mean_ms(self) -> float | None:
        """Their mean (None: no pause)."""
        return self.total_s / self.count * 1000 if self.count else None

    def longest_le_s(self) -> float | None:
        """The smallest bucket bound no pause went over (None: no pause, or one past the last)."""
        within = [le for le, n in sorted(self.buckets.items()) if n >= self.count and le != math.inf]
        return within[0] if self.count and within else None

    def over(self, seconds: float) -> int:
        """Pauses longer than `seconds` (a bucket bound)."""
        return self.count - self.buckets.get(seconds, self.count)


class _Child:
    """A benchmark child process in its own process group, with its log in a file."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def _spawn(self, args: list[str], env: dict[str, str], stdout: int | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log,
            start_new_session=True,
            preexec_fn=die_with_parent,  # never outlives the benchmark, even after a kill -9
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group; SIGKILL it if it does not end in time."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None

    def peak_rss_bytes(self) -> int | None:
        """The process's peak resident set size so far (Linux `VmHWM`), if readable."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
        return None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


class WorkerProcess(_Child):
    """`socnoc worker` with the benchmark's settings."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(log_path)
        self.port = free_port()
        self.env = {**os.environ, **env, "SOCNOC_WEB_PORT": str(self.port), "SOCNOC_WEB_HOST": "127.0.0.1"}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

    def start(self) -> WorkerProcess:
        code = "import sys; from streams.cli import main; sys.exit(main(['worker', '--log-level', 'WARNING']))"
        profile = os.environ.get("BENCH_WORKER_PROFILE")
        if profile:  # dev aid: the worker under cProfile, stats written when it stops
            call = "main(['worker', '--log-level', 'WARNING'])"
            out = f"{profile}.{self.port}"
            code = f"import cProfile; from streams.cli import main; cProfile.run({call!r}, {out!r})"
        self._spawn([sys.executable, "-c", code], self.env)
        return self

    async def health(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{self.port}/health"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status != 200:
                        return None
                    body: dict[str, Any] = await resp.json()
                    return body
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def checkpoint_pauses(self) -> tuple[int, float] | None:
        """How many checkpoints this worker took and their mean pause (ms), from /metrics."""
        found = await self.checkpoint_histogram()
        mean = found.mean_ms() if found is not None else None
        return None if found is None or mean is None else (found.count, mean)

    async def metrics_text(self) -> str | None:
        """This worker's /metrics page (None: it did not answer)."""
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{self.port}/metrics"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    return await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def checkpoint_histogram(self) -> PauseHistogram | None:
        """This worker's checkpoint pauses so far (`socnoc_checkpoint_duration_seconds`)."""
        text = await self.metrics_text()
        return None if text is None else PauseHistogram.from_metrics(text)

    async def wait_ready(
        self, internal_partitions: int, timeout_s: float = 90.0, stages: tuple[str, ...] = ("decode", "correlate")
    ) -> None:
        """Healthy, with the decode stage assigned and every correlation partition owned (of
        the `stages` this worker runs)."""

        async def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"the worker exited:\n{self.log_tail()}")
            body = await self.health()
            if body is None:
                return False
            states = body.get("stages", {})
            decode = states.get("decode", {}).get("partitions") or []
            correlate = states.get("correlate", {}).get("partitions") or []
            return ("decode" not in stages or bool(decode)) and (
                "correlate" not in stages or len(correlate) == internal_partitions
            )

        try:
            await until(ready, timeout_s, "the worker to own its partitions", interval_s=0.2)
        except WaitTimeout as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None


class RawProcess(_Child):
    """`python -m bench.rawpipe` reading `source` from `offsets` (`shape`: see bench.rawpipe)."""

    async def start(
        self, bootstrap: str, source: str, target: str, offsets: dict[int, int], shape: str = "raw"
    ) -> RawProcess:
        spec = ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        args = [sys.executable, "-m", "bench.rawpipe", bootstrap, source, target, spec, "--shape", shape]
        self._spawn(args, env, stdout=subprocess.PIPE)
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"the raw pipeline did not start:\n{self.log_tail()}")
        return self


@dataclass
class LatencyResult:
    """Per-alert latencies of one steady-load run (ms), for alerts decided on arrival."""

    rate: float
    sent: int
    decided: int
    on_arrival: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    achieved_rate: float
    # where the time goes (p50 / p99 ms, from the records' Kafka timestamps): producer ->
    # internal record (decode stage), internal -> decision record (correlate stage),
    # decision record -> read by the benchmark's consumer
    hops: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    # checkpoints the correlating worker took in this run and their mean pause, from its
    # socnoc_checkpoint_duration_seconds
    checkpoints: int | None = None
    checkpoint_pause_ms: float | None = None


@dataclass(frozen=True)
class RawLatency:
    """Send -> read latency (ms) of every record through the raw pipeline at `rate`/s."""

    rate: float
    records: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class E2EResult:
    """Worker throughput of one run (alerts/s): records produced live while it works (the
    producer in this process competing for the cores), and on the backlog left when the
    producer is done (None when under a fifth of the run was left)."""

    live: float
    backlog: float | None
    backlog_alerts: int
    # CPU per alert of the worker process(es) ("pipeline") and of the broker, over the run
    cpu_us_per_alert: dict[str, float | None] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """The backlog rate (the raw pipeline is measured on a backlog too), else the live one."""
        return self.backlog if self.backlog is not None else self.live


def due_on_arrival(env: dict[str, str], records: Records) -> set[str]:
    """Ids of the alerts that the worker's engine decides as it takes them in (not later, when
    a window closes), found by running that engine over the records in order, without Kafka.

    With one input partition the worker's own `socnoc-src` header tells the same; with several,
    an alert the reorder buffer held is decided while a later record is processed, and only
    this finds it (the wait in the buffer is then part of its latency, as it should be)."""
    from correlators.identity import Identity
    from schemas.models import Decision
    from streams.correlator import new_correlator, worker_context
    from streams.decoder import Decoder, InputRecord
    from streams.partition import Processor
    from streams.records import AlertItem

    settings = settings_from_env(env)
    decoder = Decoder(settings.inputs, context_topics={}, identity=Identity(), single_partition=True)
    processor = Processor(new_correlator(settings, worker_context(settings)))
    topic = next(iter(settings.inputs))
    found: set[str] = set()
    for offset, value in enumerate(records.values):
        for routed in decoder.decode(InputRecord(topic, 0, offset, None, value, ())):
            item = routed.item
            if isinstance(item, AlertItem):
                own = item.alert.id
                if any(isinstance(o, Decision) and o.alert_id == own for o in processor.feed(item)):
                    found.add(own)
    return found


class Arrivals:
    """When each alert of a run first arrived here, by its position in the run (and what
    else the reader kept of it): sized before the run, so that nothing grows while it is
    measured. A dict keyed by alert id filled during a run rebuilds its whole table each time
    it grows (CPython does it at once: ~10 ms at 349,525 ids on this machine); three of them
    did, in the paced producer and the reader, at the same alerts of every latency run
    (174,762 and 349,525).
    """

    __slots__ = ("positions", "at", "extra", "count")

    def __init__(self, ids: Sequence[str]) -> None:
        self.positions = {alert_id: i for i, alert_id in enumerate(ids)}
        self.at: list[float | None] = [None] * len(ids)
        self.extra: list[Any] = [None] * len(ids)
        self.count = 0

    def add(self, alert_id: str, now: float, extra: Any = None) -> None:
        """Note an alert's arrival at `now`, unless it is not of the run or arrived before."""
        i = self.positions.get(alert_id)
        if i is not None and self.at[i] is None:
            self.at[i] = now
            self.extra[i] = extra
            self.count += 1

    def complete(self) -> bool:
        """Every alert of the run has arrived."""
        return self.count >= len(self.at)

    def latencies_ms(self, stamps: Sequence[float], positions: Iterable[int]) -> list[float]:
        """Arrival minus stamp (ms) of the alerts at `positions` (all arrived)."""
        at = self.at
        return [(at[i] - stamps[i]) * 1000.0 for i in positions]  # type: ignore[operator]


@contextlib.contextmanager
def harness_gc_paused() -> Iterator[None]:
    """No garbage collection in this process during a run (one full collection first).

    This process holds every record of the run and stamps each alert; with the collector on,
    a full collection walked all of it every ~5 s and took 58-81 ms, during which the
    producer did not send and the reader did not read: every alert in flight then looked
    60-80 ms slower, whatever the pipeline under test did. A run makes no garbage worth
    collecting for its few tens of seconds.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


@dataclass
class KafkaBench:
    """The embedded broker's topics and the processes measured on them."""

    bootstrap: str
    workdir: Path
    prefix: str = "bench"
    input_partitions: int = 1
    internal_partitions: int = 8
    worker_env: dict[str, str] = field(default_factory=dict)
    worker_peak_rss: list[int] = field(default_factory=list)
    broker_pid: int | None = None  # for CPU accounting
    raw_cpu: list[dict[str, float | None]] = field(default_factory=list)  # per raw run, µs per alert
    # two workers, `SOCNOC_STAGES=decode` and `SOCNOC_STAGES=correlate`: a process (core) each
    split: bool = False
    _worker: WorkerProcess | None = None
    _decoder: WorkerProcess | None = None
    _starts: int = 0

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.soc.alerts"

    @property
    def raw_out(self) -> str:
        return f"{self.prefix}.raw.out"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}.alerts.decisions"

    @property
    def app_id(self) -> str:
        """The current worker's app id: each start gets fresh groups and internal topics."""
        return f"{self.prefix}-w{self._starts}"

    @property
    def internal(self) -> str:
        return f"{self.app_id}.by-asset"  # Settings.internal_topic()

    def env(self) -> dict[str, str]:
        """The worker's settings: this run's topics, quick group forming on Tansu."""
        env = {
            "SOCNOC_KAFKA_BOOTSTRAP": self.bootstrap,
            "SOCNOC_APP_ID": self.app_id,
            "SOCNOC_INPUTS": orjson.dumps({self.alerts: {"format": "jsonl", "map": KAFKA_MAP}}).decode(),
            "SOCNOC_ASSETS_TOPIC": f"{self.prefix}.ctx.assets",
            "SOCNOC_CHANGES_TOPIC": f"{self.prefix}.ctx.changes",
            "SOCNOC_FEEDBACK_TOPIC": f"{self.prefix}.ctx.feedback",
            "SOCNOC_DECISIONS_TOPIC": self.decisions,
            "SOCNOC_INCIDENTS_TOPIC": f"{self.prefix}.incidents",
            "SOCNOC_DLQ_TOPIC": f"{self.prefix}.dlq",
            "SOCNOC_PARTITIONS": str(self.internal_partitions),
            "SOCNOC_GROUP_SESSION_TIMEOUT": "3",
            "SOCNOC_GROUP_HEARTBEAT_INTERVAL": "0.5",
            "SOCNOC_GROUP_REBALANCE_TIMEOUT": "20",
            # Replayed history moves event time far faster than the wall clock; an idle
            # watermark (wall clock minus the timeout) would jump years ahead mid-run.
            "SOCNOC_IDLE_TIMEOUT": "86400",
        }
        env.update(self.worker_env)
        return env

    async def setup(self) -> None:
        """Create the input and raw output topics, and the plumbing shape's internal topic
        (the worker creates its own)."""
        await create_topics(
            self.bootstrap,
            {self.alerts: self.input_partitions, self.raw_out: self.input_partitions, internal_topic(self.raw_out): 1},
            client_id="bench-admin",
        )

    # -- producing -------------------------------------------------------------------
    async def produce(
        self, records: Records, *, rate: float | None = None, stamps: list[float] | None = None
    ) -> float:
        """Produce `records` (as fast as possible, or paced at `rate`/s); returns the first send time.

        Records go out in batches (`BatchSender`, the worker's own: ~7 µs a record instead of
        ~35 µs for `send()`), so that the benchmark's producer takes as little as it can of
        the two cores it shares with the worker and the broker. Paced, a round every 5 ms at
        most sends the records due by then; an alert's stamp is the moment it was due, so the
        wait for its round counts in its latency. `stamps` (one per record, by position) receives
        them.
        """
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, client_id="bench-producer", **_PRODUCER)
        await producer.start()
        try:
            sender = BatchSender(producer)
            partitions = await sender.partitions(self.alerts)
            futures: list[asyncio.Future[Any]] = []
            total = len(records)
            sent = 0
            start = time.perf_counter()
            while sent < total:
                due = total
                if rate is not None:
                    # a round every 5 ms at most (the linger of `send()`): a produce request
                    # per millisecond costs the embedded broker more than a whole core
                    await asyncio.sleep(max(_ROUND_S, start + sent / rate - time.perf_counter()))
                    due = min(total, int((time.perf_counter() - start) * rate) + 1)
                upto = min(due, sent + 5_000)
                now = time.perf_counter()
                for i in range(sent, upto):
                    if stamps is not None:
                        stamps[i] = start + i / rate if rate is not None else now
                    key = records.keys[i]
                    sender.put(self.alerts, records.values[i], key_partition(key, partitions), key=key)
                futures += await sender.send()
                sent = upto
                if rate is None:
                    await asyncio.sleep(0)  # let the acknowledgements in
            if records.closing:
                await sender.add(self.alerts, records.closing, key=b"bench-end-of-run")
                futures += await sender.send()
            await asyncio.gather(*futures)
            return start
        finally:
            await producer.stop()

    # -- raw pipeline ----------------------------------------------------------------
    async def raw_run(self, records: Records, timeout_s: float = 600.0, shape: str = "raw") -> float:
        """Alerts/s of the raw pipeline draining `records` (start -> last output received);
        `shape="plumbing"`: the worker's Kafka traffic without its work (`bench.rawpipe`).

        The records are produced first and the pipeline then starts on them: produced live,
        the producer here (not the pipeline) would set the pace on two cores.
        """
        offsets = await ends(self.bootstrap, self.alerts)
        await self.produce(records)
        out = await ends(self.bootstrap, self.raw_out)
        want = len(records) + (1 if records.closing else 0)
        last = [0.0]

        def seen(batch: list[Any], now: float) -> None:
            last[0] = now

        raw = RawProcess(self.workdir / "raw.log")
        try:
            async with _tail(self.bootstrap, self.raw_out, out, seen) as tail:
                await raw.start(self.bootstrap, self.alerts, self.raw_out, offsets, shape)
                start = time.perf_counter()
                cpu = self._cpu(raw)
                await until(lambda: tail.count >= want or not raw.alive(), timeout_s, "raw outputs")
                if tail.count < want:
                    raise RuntimeError(f"the raw pipeline stopped:\n{raw.log_tail()}")
                self.raw_cpu.append(self._cpu_per_alert(cpu, self._cpu(raw), len(records)))
            return want / (last[0] - start)
        finally:
            raw.stop()

    async def raw_latency_run(self, records: Records, rate: float, timeout_s: float = 600.0) -> RawLatency:
        """The floor under the worker's latency: the raw pipeline (one hop through the broker,
        where the worker makes two) at the same steady rate, timed the same way, send to read."""
        offsets = await ends(self.bootstrap, self.alerts)
        out = await ends(self.bootstrap, self.raw_out)
        arrived = Arrivals(records.ids)
        stamps = [0.0] * len(records)

        def seen(batch: list[Any], now: float) -> None:
            for rec in batch:
                alert_id = orjson.loads(rec.value).get("id") if rec.value else None
                if isinstance(alert_id, str):
                    arrived.add(alert_id, now)

        raw = RawProcess(self.workdir / "raw-latency.log")
        try:
            async with _tail(self.bootstrap, self.raw_out, out, seen):
                await raw.start(self.bootstrap, self.alerts, self.raw_out, offsets)
                await self.produce(records, rate=rate, stamps=stamps)
                await until(lambda: arrived.complete() or not raw.alive(), timeout_s, "raw outputs")
                if not arrived.complete():
                    raise RuntimeError(f"the raw pipeline stopped:\n{raw.log_tail()}")
        finally:
            raw.stop()
        latencies = arrived.latencies_ms(stamps, range(len(records)))
        return RawLatency(rate, len(latencies), percentile(latencies, 0.50), percentile(latencies, 0.99))

    def _cpu(self, *children: _Child | None) -> tuple[float | None, float | None]:
        """CPU seconds used so far by `children` (together) and by the broker."""
        used = [cpu_seconds(c.proc.pid) for c in children if c is not None and c.proc is not None]
        own = None if not used or None in used else sum(u for u in used if u is not None)
        return own, cpu_seconds(self.broker_pid)

    @staticmethod
    def _cpu_per_alert(
        before: tuple[float | None, float | None], after: tuple[float | None, float | None], alerts: int
    ) -> dict[str, float | None]:
        """µs of CPU per alert of the pipeline's processes and of the broker, between two `_cpu`s."""
        return {
            name: None if b is None or a is None or alerts <= 0 else round((a - b) / alerts * 1e6, 1)
            for name, b, a in zip(("pipeline", "broker"), before, after, strict=True)
        }

    # -- the worker ------------------------------------------------------------------
    async def start_worker(self) -> WorkerProcess:
        """A fresh worker (new app id: empty engine, own groups and internal topics).

        Its decode group starts at the input's current end (committed before it joins), not
        at the earliest record, so it sees exactly the records of the run it measures.
        """
        self.stop_worker()
        self._starts += 1
        start = await ends(self.bootstrap, self.alerts)
        # the decode group starts where this run's input starts
        offsets = {TopicPartition(self.alerts, p): o for p, o in start.items()}
        await commit_offsets(self.bootstrap, f"{self.app_id}-decode", offsets, client_id="bench-offsets")
        if not self.split:
            worker = WorkerProcess(self.env(), self.workdir / f"worker-{self._starts}.log").start()
            self._worker = worker
            await worker.wait_ready(self.internal_partitions)
            return worker
        env = self.env()
        log = self.workdir / f"worker-{self._starts}"
        decoder = WorkerProcess({**env, "SOCNOC_STAGES": "decode"}, log.with_suffix(".decode.log")).start()
        worker = WorkerProcess({**env, "SOCNOC_STAGES": "correlate"}, log.with_suffix(".correlate.log")).start()
        self._decoder, self._worker = decoder, worker
        await asyncio.gather(
            decoder.wait_ready(self.internal_partitions, stages=("decode",)),
            worker.wait_ready(self.internal_partitions, stages=("correlate",)),
        )
        return worker

    def workers_alive(self) -> bool:
        """Every process of the current worker(s) is running."""
        return all(w.alive() for w in (self._worker, self._decoder) if w is not None)

    async def worker_metrics(self) -> str | None:
        """The running worker's /metrics page (None: no worker, or it did not answer)."""
        return await self._worker.metrics_text() if self._worker is not None else None

    def workers_log(self, chars: int = 3000) -> str:
        """The end of the running workers' logs (`chars` of each)."""
        return "\n".join(w.log_tail(chars) for w in (self._decoder, self._worker) if w is not None)

    def stop_worker(self) -> None:
        """Stop the worker(s); the peak RSS recorded is that of the process running the engine."""
        if self._decoder is not None:
            self._decoder.stop()
            self._decoder = None
        if self._worker is not None:
            peak = self._worker.peak_rss_bytes()
            if peak is not None:
                self.worker_peak_rss.append(peak)
            self._worker.stop()
            self._worker = None

    async def e2e_run(self, records: Records, timeout_s: float = 900.0) -> E2EResult:
        """Alerts/s through the worker, produced live (first send -> the last input's decision
        received), and on the backlog left when the producer is done (that backlog's decisions
        over the time they took: the worker alone, as the raw pipeline is measured)."""
        await self.start_worker()
        wanted = set(records.ids)
        decided: set[str] = set()
        last = [0.0]
        at_end: list[tuple[int, float]] = []  # decisions received when the producer was done

        def seen(batch: list[Any], now: float) -> None:
            for rec in batch:
                if rec.key is not None:
                    key = rec.key.decode()
                    if key in wanted:
                        decided.add(key)
            last[0] = now

        offsets = await ends(self.bootstrap, self.decisions)
        async with _tail(self.bootstrap, self.decisions, offsets, seen):
            cpu = self._cpu(self._worker, self._decoder)
            start = await self.produce(records)
            at_end.append((len(decided), time.perf_counter()))

            def done() -> bool:
                if not self.workers_alive():
                    raise RuntimeError(f"the worker exited:\n{self.workers_log()}")
                return len(decided) >= len(wanted)

            await until(done, timeout_s, f"decisions for {len(wanted)} alerts")
            used = self._cpu_per_alert(cpu, self._cpu(self._worker, self._decoder), len(records))
        live = len(records) / (last[0] - start)
        backlog, produced_at = len(wanted) - at_end[0][0], at_end[0][1]
        # a backlog of a fifth of the run at least, or the live figure is all there is
        drain = backlog / (last[0] - produced_at) if backlog >= len(wanted) / 5 and last[0] > produced_at else None
        return E2EResult(live=live, backlog=drain, backlog_alerts=backlog, cpu_us_per_alert=used)

    async def latency_run(
        self, records: Records, rate: float, timeout_s: float = 900.0, dump: Path | None = None
    ) -> LatencyResult:
        """Steady load at `rate`/s; latency of each alert whose decision is due on arrival.

        An alert's decision is due on arrival when the worker emits it while processing that
        alert's own internal record (its `socnoc-src` header names that record) — rather than
        later, when an evidence window opens or closes. The internal topic is read after the
        run to map records to alert ids. `dump`: a file to write each timed alert's latency to.
        """
        await self.start_worker()
        stamps = [0.0] * len(records)
        # the decision's socnoc-src, its record timestamp and the epoch ms it was read at
        arrived = Arrivals(records.ids)
        wanted = arrived.positions  # the run's alert ids

        def seen(batch: list[Any], now: float) -> None:
            epoch_ms = time.time() * 1000
            for rec in batch:
                if rec.key is not None:
                    arrived.add(rec.key.decode(), now, (header(rec.headers, SRC_HEADER), rec.timestamp, epoch_ms))

        internal_from = await ends(self.bootstrap, self.internal)
        offsets = await ends(self.bootstrap, self.decisions)
        async with _tail(self.bootstrap, self.decisions, offsets, seen):
            start = await self.produce(records, rate=rate, stamps=stamps)
            sent_s = time.perf_counter() - start

            def done() -> bool:
                if not self.workers_alive():
                    raise RuntimeError(f"the worker exited:\n{self.workers_log()}")
                return arrived.complete()

            await until(done, timeout_s, f"decisions for {len(wanted)} alerts")
        pauses = await self._worker.checkpoint_pauses() if self._worker is not None else None
        internal_ts: dict[str, int] = {}
        own = await self._internal_sources(internal_from, wanted, internal_ts)
        sent_ts = await self._input_times(wanted)
        ids, read = records.ids, arrived.extra
        if self.input_partitions == 1:
            mine = [i for i, a in enumerate(ids) if read[i][0] is not None and own.get(read[i][0]) == a]
        else:
            due = await asyncio.to_thread(due_on_arrival, self.env(), records)
            mine = [i for i, a in enumerate(ids) if a in due]
        latencies = arrived.latencies_ms(stamps, mine)
        # each timed alert's hops (ms, from the records' timestamps), when its records were found
        by_hop: list[tuple[float, float, float] | None] = []
        for i in mine:
            a = ids[i]
            found = a in sent_ts and a in internal_ts
            by_hop.append(
                (internal_ts[a] - sent_ts[a], read[i][1] - internal_ts[a], read[i][2] - read[i][1]) if found else None
            )
        hops = {
            name: (percentile(v, 0.50), percentile(v, 0.99))
            for k, name in enumerate(HOPS)
            for v in ([each[k] for each in by_hop if each is not None],)
        }
        if dump is not None:
            self._dump_latencies(dump, [stamps[i] - start for i in mine], latencies, by_hop)
        return LatencyResult(
            rate=rate,
            sent=len(records),
            decided=arrived.count,
            on_arrival=len(latencies),
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            max_ms=max(latencies) if latencies else None,
            achieved_rate=len(records) / sent_s if sent_s > 0 else 0.0,
            hops=hops,
            checkpoints=pauses[0] if pauses else None,
            checkpoint_pause_ms=pauses[1] if pauses else None,
        )

    @staticmethod
    def _dump_latencies(
        path: Path, due: list[float], latencies: list[float], by_hop: list[tuple[float, float, float] | None]
    ) -> None:
        """A latency run's timed alerts, one line each: seconds into the run it was due, its
        latency and its hops (ms; empty when not found) — to see when the slow ones came and where."""
        with open(path, "w") as out:
            out.write("due_s\tlatency_ms\t" + "\t".join(f"{hop}_ms" for hop in HOPS) + "\n")
            for at, ms, hop in zip(due, latencies, by_hop, strict=True):
                spans = "\t".join(f"{each:.1f}" for each in hop) if hop is not None else "\t\t"
                out.write(f"{at:.4f}\t{ms:.2f}\t{spans}\n")

    async def _input_times(self, wanted: Collection[str]) -> dict[str, int]:
        """Alert id -> Kafka timestamp (ms) of its input record (the producer's create time)."""
        found: dict[str, int] = {}
        end = await ends(self.bootstrap, self.alerts)

        def record(rec: Any) -> None:
            alert_id = orjson.loads(rec.value).get("id") if rec.value else None
            if isinstance(alert_id, str) and alert_id in wanted:
                found[alert_id] = rec.timestamp

        # the run's records are the last len(wanted)+1 of the topic
        await self._read(self.alerts, {p: max(0, o - len(wanted) - 1) for p, o in end.items()}, end, record)
        return found

    async def _internal_sources(
        self, start: dict[int, int], wanted: Collection[str], stamps: dict[str, int] | None = None
    ) -> dict[bytes, str]:
        """`<partition>:<offset>` -> alert id of the internal alert records since `start`
        (and, into `stamps`, each alert's internal record timestamp)."""
        found: dict[bytes, str] = {}

        def record(rec: Any) -> None:
            if header(rec.headers, KIND_HEADER) == b"alert" and rec.value:
                alert_id = orjson.loads(rec.value).get("id")
                if alert_id in wanted:
                    found[f"{rec.partition}:{rec.offset}".encode()] = alert_id
                    if stamps is not None:
                        stamps[alert_id] = rec.timestamp

        await self._read(self.internal, start, await ends(self.bootstrap, self.internal), record)
        return found

    async def _read(
        self, topic: str, start: dict[int, int], end: dict[int, int], record: Callable[[Any], None]
    ) -> None:
        """Every record of `topic` from `start` to `end` (offsets by partition), to `record`."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, client_id="bench-read", enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(end)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, start.get(tp.partition, 0))
            pending = {tp for tp in tps if end[tp.partition] > start.get(tp.partition, 0)}
            deadline = time.monotonic() + 120
            while pending and time.monotonic() < deadline:
                batch = await consumer.getmany(*pending, timeout_ms=200, max_records=20_000)
                for tp, recs in batch.items():
                    for rec in recs:
                        record(rec)
                        if rec.offset + 1 >= end[tp.partition]:
                            pending.discard(tp)
        finally:
            await consumer.stop()
