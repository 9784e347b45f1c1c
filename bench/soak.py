"""`make soak`: conservation under faults, counted by an independent checker.

Starts an embedded broker that advertises a fault proxy, two `socnoc worker` processes that
reach the broker only through that proxy, a producer that publishes real data (AIT-ADS,
Wazuh, Huawei alarms, see `bench.soak_data`) with 1% garbage, out-of-order and late
records, and a fault scheduler: `kill -9` of a worker at random moments (restarted after a
moment), rebalances (the second worker leaves or joins), broker outages (the proxy drops
all worker traffic for `SOAK_OUTAGE_SECONDS`) and redelivery (the decode group's committed
offsets rewound while the workers are down). After `SOAK_SECONDS` the input ends, the
pipeline drains, and a checker that reads the output topics from the beginning with its
own group-less consumer counts them against the producer's manifest (the ids of what was
acknowledged). Progress goes to stderr; stdout gets the one JSON line of DESIGN.md.

Environment: SOAK_SECONDS (300), SOAK_SEED (random, printed), SOAK_RATE (records/s, 500),
SOAK_OUTAGE_SECONDS (30), SOAK_DIR (build/soak: worker, proxy and broker logs, manifest),
SOAK_ISOLATE=1 (also cut one worker off while the other goes on: a partition, which the
README lists as not covered without broker transactions).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from bench.soak_data import ALARM_COLUMNS, ALARM_MAP, Record, records
from streams.broker import EmbeddedBroker, free_port
from streams.control import end_of_input
from streams.faultproxy import ProxyProcess
from streams.kafka import high_watermarks
from streams.records import SRC_HEADER, header
from streams.testing import (
    ROOT,
    Names,
    Tail,
    WorkerProcess,
    committed_offsets,
    create_topics,
    rewind_group,
    until,
)

EXEMPT = "soak-"  # client id prefix of the producer and the checker: never cut off by the proxy
FAULT_KINDS = ("kill", "rebalance", "outage", "redeliver")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} soak: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Fault:
    """One fault at `at` seconds into the run; `arg` is a duration or a rewind size."""

    at: float
    kind: str
    arg: float = 0.0
    mode: str = "drop"


@dataclass
class SoakConfig:
    """What to run: how long, how fast, which faults."""

    seconds: float = 300.0
    seed: int = 0
    rate: float = 500.0
    outage_s: float = 30.0
    garbage: float = 0.01
    swap: float = 0.02  # share of records published after their successor (out of order)
    late: float = 0.003  # share held back and published hundreds of records later
    window: tuple[int, int] | None = None  # a slice of the data (tests); None: all of it
    max_records: int | None = None
    plan: list[Fault] | None = None  # None: random faults from the seed
    partitions: int = 4
    checkpoint_s: float = 2.0
    session_s: float = 2.0
    drain_timeout_s: float = 600.0
    isolate: bool = False  # also cut one worker off while the other runs (a network partition)
    out_dir: Path = field(default_factory=lambda: ROOT / "build" / "soak")


@dataclass
class Counts:
    """What the run did (the faults go into the JSON line, the rest to stderr)."""

    kills: int = 0
    rebalances: int = 0
    outages: int = 0
    redeliveries: int = 0
    isolations: int = 0
    redelivered: int = 0
    produced: int = 0
    garbage: int = 0
    swapped: int = 0
    late: int = 0
    send_errors: int = 0


def random_plan(cfg: SoakConfig) -> list[Fault]:
    """Faults at random moments: an outage about every 90 s, the other kinds in between."""
    rng = random.Random(cfg.seed)
    outages: list[float] = []
    at = rng.uniform(10, 40)
    while at + cfg.outage_s < cfg.seconds - 10:
        outages.append(at)
        at += cfg.outage_s + rng.uniform(45, 80)
    kinds = ("kill", "rebalance", "redeliver", "isolate") if cfg.isolate else ("kill", "rebalance", "redeliver")
    weights = (50, 25, 10, 15) if cfg.isolate else (55, 30, 15)
    others = list(kinds)
    rng.shuffle(others)  # each kind at least once, early
    plan: list[Fault] = []
    at = rng.uniform(3, 8)
    while at < cfg.seconds - 5:
        if outages and at >= outages[0]:
            plan.append(Fault(outages.pop(0), "outage", cfg.outage_s, rng.choice(("drop", "drop", "reset"))))
            at = plan[-1].at + cfg.outage_s + rng.uniform(2, 6)
            continue
        kind = others.pop(0) if others else rng.choices(kinds, weights=weights)[0]
        if kind == "isolate":
            plan.append(Fault(at, kind, rng.uniform(3, 15), rng.choice(("drop", "reset"))))
            at += plan[-1].arg
        elif kind == "kill":
            plan.append(Fault(at, kind, rng.uniform(0.2, 3.0)))
        elif kind == "redeliver":
            plan.append(Fault(at, kind, float(rng.randint(50, 1000))))
        else:
            plan.append(Fault(at, kind))
        at += rng.uniform(4, 12)
    return plan


# -- the checker ---------------------------------------------------------------------------


class Checker:
    """Counts the output topics as read by its own consumer, against the manifest."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.decisions: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()
        self.opened: Counter[str] = Counter()
        self.versions: dict[str, Counter[int]] = {}
        self.dispositions: Counter[str] = Counter()
        self.last_progress = time.monotonic()
        # where each decision was read: (record partition, offset, timestamp ms, socnoc-src),
        # the first copy of every alert id and every copy of a repeated one, to tell which
        # internal partitions and which moments the repeats came from
        self._first: dict[str, tuple[int, int, int, str]] = {}
        self.repeats: dict[str, list[tuple[int, int, int, str]]] = {}

    def feed(self, topic: str, batch: list[ConsumerRecord[bytes, bytes]]) -> None:
        self.last_progress = time.monotonic()
        for rec in batch:
            if rec.value is None:
                continue
            value = orjson.loads(rec.value)
            if topic == self.names.decisions:
                alert_id = str(value["alert_id"])
                self.decisions[alert_id] += 1
                self.dispositions[str(value["disposition"])] += 1
                src = (header(rec.headers, SRC_HEADER) or b"").decode(errors="replace")
                where = (rec.partition, rec.offset, rec.timestamp, src)
                first = self._first.setdefault(alert_id, where)
                if first is not where:
                    self.repeats.setdefault(alert_id, [first]).append(where)
            elif topic == self.names.dlq:
                self.dead[f"{value['topic']}:{value['partition']}:{value['offset']}"] += 1
            elif topic == self.names.incidents:
                incident = str(value["incident_id"])
                self.versions.setdefault(incident, Counter())[int(value["version"])] += 1
                if value["event"] == "opened":
                    self.opened[incident] += 1

    def decided(self) -> set[str]:
        return set(self.decisions) | set(self.dead)

    def result(self, manifest: set[str], counts: Counts) -> dict[str, Any]:
        decided = manifest & self.decided()
        repeated = {i for i, n in self.decisions.items() if n > 1} | {i for i, n in self.dead.items() if n > 1}
        return {
            "in": len(manifest),
            "decided": len(decided),
            "lost": len(manifest) - len(decided),
            "duplicate_decisions": len(repeated),
            "duplicate_incident_opens": sum(1 for n in self.opened.values() if n > 1),
            "dlq": len(set(self.dead)),
            "faults": {"kills": counts.kills, "rebalances": counts.rebalances, "broker_outages": counts.outages},
        }

    def details(self, manifest: set[str]) -> dict[str, Any]:
        """What the JSON line does not say, for the log."""
        repeated_versions = sum(1 for c in self.versions.values() for n in c.values() if n > 1)
        gaps = sum(1 for c in self.versions.values() if sorted(c) != list(range(1, len(c) + 1)))
        lost = sorted(manifest - self.decided())
        again = [where for copies in self.repeats.values() for where in copies[1:]]  # not the first copy
        times = [timestamp for _, _, timestamp, _ in again]
        return {
            "decision_records": sum(self.decisions.values()),
            "dispositions": dict(self.dispositions),
            "incidents": len(self.versions),
            "incident_events": sum(sum(c.values()) for c in self.versions.values()),
            "repeated_incident_versions": repeated_versions,
            "incidents_with_version_gaps": gaps,
            "decided_outside_manifest": len(self.decided() - manifest),
            "lost_sample": lost[:10],
            # the copies of a few repeated decisions, and the internal partitions (from
            # socnoc-src) and time span of every repeated copy
            "repeat_sample": {k: self.repeats[k] for k in sorted(self.repeats)[:5]},
            "repeats_by_src_partition": dict(Counter(src.partition(":")[0] for *_, src in again)),
            "repeats_time_span_ms": [min(times, default=None), max(times, default=None)],
        }


# -- the run -------------------------------------------------------------------------------


class Soak:
    """One soak run: broker, proxy, workers, producer, faults, drain, count."""

    def __init__(self, cfg: SoakConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed + 1)
        self.counts = Counts()
        self.manifest: set[str] = set()
        self.garbage_ids: set[str] = set()
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        self.broker: EmbeddedBroker | None = None
        self.proxy: ProxyProcess | None = None
        self.workers: list[WorkerProcess] = []
        self.names: Names | None = None
        self.details: dict[str, Any] = {}  # the checker's findings beyond the JSON line
        self.topics: dict[str, str] = {}
        self._started = 0.0

    # -- set-up ----------------------------------------------------------------------------
    def _env(self, names: Names) -> dict[str, str]:
        cfg = self.cfg
        inputs = {
            self.topics["aitads"]: {"format": "aitads"},
            self.topics["wazuh"]: {"format": "wazuh"},
            self.topics["alarms"]: {"format": "csv", "map": ALARM_MAP, "columns": ALARM_COLUMNS},
        }
        return names.worker_env(
            SOCNOC_INPUTS=orjson.dumps(inputs).decode(),
            SOCNOC_PARTITIONS=str(cfg.partitions),
            SOCNOC_PARTITION_BY="asset",
            SOCNOC_CHECKPOINT_INTERVAL=str(cfg.checkpoint_s),
            SOCNOC_GROUP_SESSION_TIMEOUT=str(cfg.session_s),
            SOCNOC_BATCH_MAX_RECORDS="500",
            SOCNOC_IDLE_TIMEOUT="3600",
            SOCNOC_KAFKA_RETRY_MAX="2",
        )

    async def _setup(self) -> Names:
        cfg = self.cfg
        proxy_port = free_port()
        self.broker = EmbeddedBroker(log_path=cfg.out_dir / "tansu.log", advertised=f"127.0.0.1:{proxy_port}")
        self.broker.start()
        self.proxy = ProxyProcess(proxy_port, self.broker.bootstrap, [EXEMPT], cfg.out_dir / "proxy.log")
        await self.proxy.wait_ready()
        prefix = f"soak{cfg.seed}"
        names = Names(self.proxy.address, prefix)
        self.topics = {s: f"{prefix}.in.{s}" for s in ("aitads", "wazuh", "alarms")}
        outputs = [names.decisions, names.incidents, names.dlq]
        await create_topics(
            self.proxy.address, {t: cfg.partitions for t in [*self.topics.values(), *outputs]}, client_id="soak-admin"
        )
        env = self._env(names)
        for i in range(2):
            (cfg.out_dir / f"worker-{i}.log").unlink(missing_ok=True)
            own = {**env, "SOCNOC_KAFKA_CLIENT_ID": f"socnoc-w{i}"}  # the proxy can cut off one worker
            self.workers.append(WorkerProcess(own, cfg.out_dir / f"worker-{i}.log"))
        self.workers[0].start()
        await self.workers[0].wait_partitions(60)
        self.names = names
        return names

    async def _teardown(self) -> None:
        for worker in self.workers:
            if worker.alive():
                worker.terminate(10)
        if self.proxy is not None:
            self.proxy.stop()
        if self.broker is not None:
            self.broker.stop()

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    # -- producer --------------------------------------------------------------------------
    def _shuffled(self, source: Iterator[Record]) -> Iterator[tuple[Record, str]]:
        """Records with some swapped with their successor and some held back (late)."""
        cfg, rng = self.cfg, self.rng
        held: list[tuple[int, Record]] = []
        i = 0
        pending: Record | None = None
        for record in source:
            i += 1
            if held and held[0][0] <= i:
                yield held.pop(0)[1], "late"
            if pending is not None:
                yield record, "swapped"
                yield pending, "alert"
                pending = None
                continue
            roll = rng.random()
            if roll < cfg.late:
                held.append((i + rng.randint(200, 2000), record))
                held.sort(key=lambda h: h[0])
            elif roll < cfg.late + cfg.swap:
                pending = record
            else:
                yield record, "alert"
        for _, record in held:
            yield record, "late"

    def _garbage(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(4)
        if kind == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + b"\xff\xfe"
        if kind == 1:
            return b'{"timestamp": "2022-01-2'  # truncated JSON
        if kind == 2:
            return b"not,a,valid,row,at,all"
        return b"\x00" * rng.randint(1, 8)

    async def _produce(self, producer: AIOKafkaProducer, deadline: float) -> None:
        cfg = self.cfg
        source: Iterator[Record] = records(cfg.window)
        start = time.monotonic()
        pending: set[asyncio.Future[Any]] = set()
        n = 0
        for record, how in self._shuffled(source):
            if time.monotonic() >= deadline or (cfg.max_records is not None and n >= cfg.max_records):
                break
            if how == "late":
                self.counts.late += 1
            elif how == "swapped":
                self.counts.swapped += 1
            if self.rng.random() < cfg.garbage:
                topic = self.topics[self.rng.choice(("aitads", "wazuh", "alarms"))]
                fut = await producer.send(topic, self._garbage(), key=b"garbage")
                fut.add_done_callback(lambda f, t=topic: self._acked(f, t, None, garbage=True))
                pending.add(fut)
                fut.add_done_callback(pending.discard)
                n += 1
            topic = self.topics[record.source]
            fut = await producer.send(topic, record.value, key=record.key)
            fut.add_done_callback(lambda f, t=topic, r=record: self._acked(f, t, r.alert_id))
            pending.add(fut)
            fut.add_done_callback(pending.discard)
            n += 1
            if n % 100 == 0:
                ahead = start + n / cfg.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                if n % 20_000 == 0:
                    log(f"{n} records published ({self.elapsed():.0f} s)")
        await producer.flush()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        log(f"input ended: {n} records published, {self.counts.send_errors} failed sends")

    def _acked(self, fut: asyncio.Future[Any], topic: str, alert_id: str | None, garbage: bool = False) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.counts.send_errors += 1
            return
        meta = fut.result()
        record_id = alert_id or f"{topic}:{meta.partition}:{meta.offset}"
        self.manifest.add(record_id)
        self.counts.produced += 1
        if garbage:
            self.garbage_ids.add(record_id)
            self.counts.garbage += 1

    # -- faults ----------------------------------------------------------------------------
    async def _faults(self, plan: list[Fault], deadline: float) -> None:
        for fault in plan:
            wait = self._started + fault.at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.monotonic() >= deadline:
                break
            try:
                await self._inject(fault)
            except Exception as exc:  # a fault that could not be injected is logged, not fatal
                log(f"fault {fault.kind} failed: {exc!r}")

    async def _inject(self, fault: Fault) -> None:
        a, b = self.workers
        if fault.kind == "kill":
            alive = [w for w in self.workers if w.alive()]
            victim = self.rng.choice(alive) if alive else a
            index = self.workers.index(victim)
            victim.kill9()
            self.counts.kills += 1
            log(f"kill -9 worker {index} at {self.elapsed():.1f} s; restart in {fault.arg:.1f} s")
            await asyncio.sleep(fault.arg)
            victim.start()
        elif fault.kind == "rebalance":
            self.counts.rebalances += 1
            if b.alive():
                log(f"worker 1 leaves the group at {self.elapsed():.1f} s")
                await asyncio.to_thread(b.terminate, 30)
            else:
                log(f"worker 1 joins the group at {self.elapsed():.1f} s")
                b.start()
        elif fault.kind == "outage":
            assert self.proxy is not None
            self.counts.outages += 1
            log(f"broker unreachable for the workers ({fault.mode}) for {fault.arg:.0f} s at {self.elapsed():.1f} s")
            self.proxy.cut(fault.mode)
            try:
                await asyncio.sleep(fault.arg)
            finally:
                self.proxy.heal()
            log(f"broker reachable again at {self.elapsed():.1f} s")
        elif fault.kind == "redeliver":
            await self._redeliver(int(fault.arg))
        elif fault.kind == "isolate":
            assert self.proxy is not None
            indexes = [i for i, w in enumerate(self.workers) if w.alive()]
            index = self.rng.choice(indexes) if indexes else 0
            self.counts.isolations += 1
            log(f"worker {index} cut off ({fault.mode}) for {fault.arg:.1f} s at {self.elapsed():.1f} s")
            self.proxy.cut(fault.mode, only=f"socnoc-w{index}-")
            try:
                await asyncio.sleep(fault.arg)
            finally:
                self.proxy.heal()

    async def _redeliver(self, rewind: int) -> None:
        """Kill every worker, rewind the decode group's offsets, restart: inputs come again."""
        assert self.names is not None and self.broker is not None
        alive = [w for w in self.workers if w.alive()] or [self.workers[0]]
        for worker in alive:
            if worker.alive():
                worker.kill9()
                self.counts.kills += 1
        log(f"kill -9 of the workers at {self.elapsed():.1f} s to rewind the decode group by {rewind}")
        try:
            group = f"{self.names.prefix}-decode"
            moved = await rewind_group(
                self.broker.bootstrap, group, list(self.topics.values()), rewind, client_id="soak-rewind"
            )
            self.counts.redelivered += moved
            self.counts.redeliveries += 1
            log(f"decode group rewound at {self.elapsed():.1f} s: {moved} records will be delivered again")
        finally:
            for worker in alive:
                worker.start()

    # -- drain -----------------------------------------------------------------------------
    async def _decode_lag(self) -> int:
        assert self.names is not None and self.broker is not None
        group = f"{self.names.prefix}-decode"
        tps = [TopicPartition(t, p) for t in self.topics.values() for p in range(self.cfg.partitions)]
        reader = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap, group_id=None, client_id="soak-ends")
        await reader.start()
        try:
            ends = await high_watermarks(reader, tps)
        finally:
            await reader.stop()
        done = await committed_offsets(self.broker.bootstrap, group, tps, client_id="soak-offsets")
        return sum(max(0, ends[tp] - int(done[tp] or 0)) for tp in tps)

    async def _drain(self, checker: Checker) -> None:
        assert self.names is not None
        cfg = self.cfg
        if not self.workers[0].alive():
            self.workers[0].start()
        await self.workers[0].wait_partitions(120)
        log(f"draining at {self.elapsed():.1f} s: waiting for the decode group to catch up")
        await until(self._decode_lag_zero, cfg.drain_timeout_s, "the decode group to catch up", interval_s=1.0)
        settings = self.names.settings(**self._env(self.names))
        await end_of_input(settings)
        log(f"end of input marked at {self.elapsed():.1f} s; waiting for every decision")
        deadline = time.monotonic() + cfg.drain_timeout_s
        while time.monotonic() < deadline:
            if self.manifest <= checker.decided():
                break
            if time.monotonic() - checker.last_progress > 120:
                log("no output for 120 s: giving up waiting")
                break
            await asyncio.sleep(0.5)
        # anything published again after a late checkpoint would show up in this time
        await asyncio.sleep(2 * cfg.checkpoint_s + 2)

    async def _decode_lag_zero(self) -> bool:
        lag = await self._decode_lag()
        if lag:
            log(f"decode lag {lag}")
        return lag == 0

    # -- all -------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        plan = cfg.plan if cfg.plan is not None else random_plan(cfg)
        log(f"seed {cfg.seed}, {cfg.seconds:.0f} s at {cfg.rate:.0f} records/s, {len(plan)} faults planned")
        t0 = time.monotonic()
        try:
            names = await self._setup()
            assert self.broker is not None
            checker = Checker(names)
            producer = AIOKafkaProducer(
                bootstrap_servers=self.broker.bootstrap,
                client_id="soak-producer",
                acks="all",
                linger_ms=5,
                request_timeout_ms=60_000,
            )
            await producer.start()
            tail = Tail(
                self.broker.bootstrap, names.decisions, names.incidents, names.dlq, client_id="soak-checker", keep=False
            )
            tail.on_batch = checker.feed
            async with tail:
                self._started = time.monotonic()
                deadline = self._started + cfg.seconds
                try:
                    await asyncio.gather(self._produce(producer, deadline), self._faults(plan, deadline))
                finally:
                    await producer.stop()
                    assert self.proxy is not None
                    self.proxy.heal()
                await self._drain(checker)
                result = checker.result(self.manifest, self.counts)
                details = self.details = checker.details(self.manifest)
        finally:
            await self._teardown()
        (cfg.out_dir / "manifest.txt").write_text("\n".join(sorted(self.manifest)) + "\n")
        log(f"counts: {self.counts}")
        log(f"checker: {orjson.dumps(details).decode()}")
        log(f"wall clock {time.monotonic() - t0:.0f} s (input {cfg.seconds:.0f} s)")
        return result


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def main() -> int:
    seed_text = os.environ.get("SOAK_SEED")
    seed = int(seed_text) if seed_text else random.SystemRandom().randrange(1_000_000)
    cfg = SoakConfig(
        seconds=_env_float("SOAK_SECONDS", 300.0),
        seed=seed,
        rate=_env_float("SOAK_RATE", 500.0),
        outage_s=_env_float("SOAK_OUTAGE_SECONDS", 30.0),
        isolate=os.environ.get("SOAK_ISOLATE", "") not in ("", "0"),
        out_dir=Path(os.environ.get("SOAK_DIR", str(ROOT / "build" / "soak"))),
    )
    log(f"SOAK_SEED={seed}")
    result = asyncio.run(Soak(cfg).run())
    print(orjson.dumps(result).decode(), flush=True)
    ok = result["lost"] == 0 and result["duplicate_decisions"] == 0 and result["duplicate_incident_opens"] == 0
    return 0 if ok else 1


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    """Run a soak in a fresh event loop (for callers without one)."""
    return asyncio.run(Soak(cfg).run())

if __name__ == "__main__":
    sys.exit(main())
