"""`make bench` / `python -m bench.run`: every benchmark in one run, then ONE JSON line.

Phases, each repeated `BENCH_RUNS` times (default 3) and reported as the median:

1. core on AIT-ADS — adapters + engine on the real file (`bench.core`, fresh process each),
   counted per CPU second of that single-threaded process: its cost on one core, however
   busy the machine (the wall-clock figure is in report.json);
2. core on the synthetic stream (default 1M alerts, see `bench.data`) — also gives the
   cumulative per-alert cost at 10k, 100k and 1M alerts and the peak RSS;
3. state — RSS growth of an engine while 100k assets become active;
4. Kafka — on one embedded Tansu broker: the raw aiokafka pipeline and the socnoc worker
   fed the same records on the same topic (a fresh one for each run: Tansu slows down as a
   partition grows), run after run (their ratio is the median of
   the per-run ratios, so both sides of a ratio see the same machine load); then latency
   under steady load at half the measured e2e rate, each run followed by the raw pipeline's
   latency at that rate (its floor: one hop through the broker where the worker makes two;
   in report.json, not in the JSON line). Beside each raw run, the same records through the
   worker's Kafka traffic without its work (`bench.rawpipe --shape plumbing`: batched, two
   writes an alert), on topics of its own: `plumbing_ratio_vs_raw` in report.json and the
   table is the ceiling of `e2e_ratio_vs_raw` that the design's Kafka traffic leaves.

Environment: `BENCH_RUNS`, `BENCH_QUICK=1` (a fast dev run with smaller sizes),
`BENCH_SYNTHETIC_ALERTS`, `BENCH_E2E_ALERTS`, `BENCH_LATENCY_SECONDS`, `BENCH_STATE_ASSETS`,
`BENCH_STATE_ALERTS_PER_ASSET`, `BENCH_SKIP_KAFKA=1` (Kafka figures become null),
`BENCH_SPLIT=1` (the worker as a decode and a correlate process), `BENCH_LATENCY_RATE` (alerts/s
of the latency runs instead of half the e2e rate: compares two builds), `BENCH_INPUT_PARTITIONS`
(default 1; more puts the reorder buffer's waits into the latency figures), `BENCH_LATENCY_DUMP=1`
(each latency run's timed alerts, when due and their latency, to `BENCH_OUT/kafka/latency-<run>.tsv`),
`BENCH_PHASES` (some of `core state kafka`, for a partial dev run; the others stay null),
`BENCH_OUT` (work directory, default `build/bench`); a value that is not usable (not a whole
number, below its minimum, an unknown phase) stops it with exit status 2 and a message naming
the variable. Progress goes to stderr; stdout gets a
summary and, last, the JSON line. Details of every run are written to `BENCH_OUT/report.json`.
A phase that fails (say, the worker does not start) leaves its figures null, is named in the
notes, and makes the exit status 1; the JSON line is printed all the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.data import (
    AITADS,
    BaseData,
    kafka_records,
    load_base,
    state_probe_rows,
    synthetic_rows,
    write_csv,
)
from bench.procs import die_with_parent
from schemas.native import PURE_ENV

__all__ = ["Config", "SCALING_SIZES", "KEYS", "main", "run", "summary_line"]

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[1]
SCALING_SIZES = (10_000, 100_000, 1_000_000)
KEYS = (
    "core_alerts_per_s",
    "core_alerts_per_s_aitads",
    "raw_alerts_per_s",
    "e2e_alerts_per_s",
    "e2e_ratio_vs_raw",
    "p50_latency_ms",
    "p99_latency_ms",
    "state_bytes_per_asset",
    "peak_rss_mb",
    "scaling_us_per_alert",
)


class BenchConfigError(ValueError):
    """A `BENCH_*` setting that cannot be used (the benchmark does not start)."""


PHASES = ("core", "state", "kafka")


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number: int | None = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise BenchConfigError(f"{name} must be a whole number >= {minimum}, got {value[:40]!r}")
    return number


def phases_from_env() -> tuple[str, ...]:
    """`BENCH_PHASES` (space- or comma-separated), all phases when unset."""
    chosen = tuple(os.environ.get("BENCH_PHASES", "").replace(",", " ").split())
    unknown = [name for name in chosen if name not in PHASES]
    if unknown:
        raise BenchConfigError(f"BENCH_PHASES: unknown phase {unknown[0][:40]!r} (phases: {', '.join(PHASES)})")
    return chosen or PHASES


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one bench run."""

    runs: int = 3
    synthetic_alerts: int = 1_000_000
    e2e_alerts: int = 100_000
    latency_seconds: int = 20
    state_assets: int = 100_000
    state_alerts_per_asset: int = 1
    kafka: bool = True
    split: bool = False
    input_partitions: int = 1
    latency_rate: int = 0  # 0: half the measured e2e rate (a fixed rate compares two builds)
    latency_dump: bool = False  # each latency run's alerts to latency-<run>.tsv in `out`
    out: Path = ROOT / "build" / "bench"

    @classmethod
    def from_env(cls) -> Config:
        quick = _env_flag("BENCH_QUICK")
        return cls(
            runs=_env_int("BENCH_RUNS", 1 if quick else 3),
            synthetic_alerts=_env_int("BENCH_SYNTHETIC_ALERTS", 200_000 if quick else 1_000_000),
            e2e_alerts=_env_int("BENCH_E2E_ALERTS", 20_000 if quick else 100_000),
            latency_seconds=_env_int("BENCH_LATENCY_SECONDS", 8 if quick else 20),
            state_assets=_env_int("BENCH_STATE_ASSETS", 20_000 if quick else 100_000),
            state_alerts_per_asset=_env_int("BENCH_STATE_ALERTS_PER_ASSET", 1),
            kafka=not _env_flag("BENCH_SKIP_KAFKA"),
            split=_env_flag("BENCH_SPLIT"),
            input_partitions=_env_int("BENCH_INPUT_PARTITIONS", 1),
            latency_rate=_env_int("BENCH_LATENCY_RATE", 0, minimum=0),
            latency_dump=_env_flag("BENCH_LATENCY_DUMP"),
            out=Path(os.environ.get("BENCH_OUT") or ROOT / "build" / "bench"),
        )


@dataclass
class Report:
    """Everything measured, run by run (written to report.json)."""

    config: dict[str, Any]
    machine: dict[str, Any]
    core_aitads: list[dict[str, Any]] = field(default_factory=list)
    core_synthetic: list[dict[str, Any]] = field(default_factory=list)
    # the same runs with the compiled build turned off (SOCNOC_PURE_PYTHON=1), interleaved
    core_aitads_pure: list[dict[str, Any]] = field(default_factory=list)
    core_synthetic_pure: list[dict[str, Any]] = field(default_factory=list)
    state: list[dict[str, Any]] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    e2e_runs: list[dict[str, Any]] = field(default_factory=list)  # live and backlog rates of each run
    raw_cpu: list[dict[str, Any]] = field(default_factory=list)  # CPU µs per alert: pipeline, broker
    # the worker's Kafka traffic without its work (bench.rawpipe `plumbing`), run beside each raw run
    plumbing: list[float] = field(default_factory=list)
    plumbing_cpu: list[dict[str, Any]] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)
    raw_latency: list[dict[str, Any]] = field(default_factory=list)  # the raw pipeline at the latency rate
    worker_peak_rss_mb: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)


def median(values: Sequence[float | None]) -> float | None:
    """Median of the known values; None if there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as handle:
            info["memory_gb"] = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def _progress(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _child(args: list[str], *, pure: bool = False) -> dict[str, Any]:
    """Run `python -m bench.core ...` in a fresh process (`pure`: without the compiled build); its JSON line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if pure:
        env[PURE_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "bench.core", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=False,
        preexec_fn=die_with_parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.core {' '.join(args)} failed:\n{done.stderr.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _rounded(values: dict[str, float], keys: Sequence[int]) -> dict[str, float]:
    return {str(k): round(values[str(k)], 1) for k in keys if str(k) in values}


def _core_phase(cfg: Config, report: Report, base: BaseData) -> None:
    """The core as it runs (compiled where the build matches), each run beside the pure-Python sources."""
    for i in range(cfg.runs):
        res = _child(["core", str(AITADS)])
        report.core_aitads.append(res)
        pure = _child(["core", str(AITADS)], pure=True)
        report.core_aitads_pure.append(pure)
        _progress(
            f"core AIT-ADS run {i + 1}/{cfg.runs}: {res['alerts_per_s']:,.0f} alerts/s on one core "
            f"({res['wall_alerts_per_s']:,.0f} by the wall clock; compiled {res['compiled']}), "
            f"pure Python {pure['alerts_per_s']:,.0f}"
        )
    synthetic = cfg.out / f"synthetic-{cfg.synthetic_alerts}.csv"
    write_csv(synthetic, base.header, synthetic_rows(base, cfg.synthetic_alerts))
    # The scaling points, plus every 100k (report.json: where along the stream the cost moves).
    points = {*SCALING_SIZES, *range(100_000, cfg.synthetic_alerts + 1, 100_000)}
    marks = ",".join(str(n) for n in sorted(points) if n <= cfg.synthetic_alerts)
    try:
        for i in range(cfg.runs):
            res = _child(["core", str(synthetic), "--checkpoints", marks])
            report.core_synthetic.append(res)
            pure = _child(["core", str(synthetic)], pure=True)
            report.core_synthetic_pure.append(pure)
            _progress(
                f"core synthetic run {i + 1}/{cfg.runs} ({res['alerts']:,} alerts): "
                f"{res['alerts_per_s']:,.0f} alerts/s on one core ({res['wall_alerts_per_s']:,.0f} by the wall "
                f"clock), cumulative µs/alert {_rounded(res['checkpoints'], SCALING_SIZES)}; "
                f"pure Python {pure['alerts_per_s']:,.0f}"
            )
    finally:
        synthetic.unlink(missing_ok=True)


def _state_phase(cfg: Config, report: Report, base: BaseData) -> None:
    probe = cfg.out / f"state-{cfg.state_assets}x{cfg.state_alerts_per_asset}.csv"
    write_csv(probe, base.header, state_probe_rows(base, cfg.state_assets, cfg.state_alerts_per_asset))
    try:
        for i in range(cfg.runs):
            res = _child(["state", str(probe), "--assets", str(cfg.state_assets), "--warmup", str(AITADS)])
            report.state.append(res)
            _progress(f"state run {i + 1}/{cfg.runs}: {res['bytes_per_asset']:,.0f} bytes per active asset")
    finally:
        probe.unlink(missing_ok=True)


async def _kafka_phase(cfg: Config, report: Report, base: BaseData) -> None:
    from bench.pipeline import KafkaBench, harness_gc_paused
    from streams.broker import EmbeddedBroker

    workdir = cfg.out / "kafka"
    workdir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=workdir / "tansu.log")
    broker.start()
    benches: list[KafkaBench] = []

    async def fresh(prefix: str) -> KafkaBench:
        # Each run (a raw and an e2e measurement on one topic, or a latency measurement) on
        # topics of its own: the embedded broker slows down as a partition grows (a worker's
        # latency p50 went 31 -> 159 ms over five 30k-alert runs on shared topics, and stayed
        # at 26-31 ms on fresh ones).
        bench = KafkaBench(
            broker.bootstrap,
            workdir,
            prefix=prefix,
            input_partitions=cfg.input_partitions,
            split=cfg.split,
            broker_pid=broker.pid,
        )
        benches.append(bench)
        await bench.setup()
        return bench

    try:
        for i in range(cfg.runs):
            bench = await fresh(f"bench-run{i}")  # the raw pipeline, then the worker, on one topic
            with harness_gc_paused():
                raw = await bench.raw_run(kafka_records(base, 0, cfg.e2e_alerts, run=f"raw{i}"))
            report.raw.append(raw)
            report.raw_cpu.append(bench.raw_cpu[-1] if bench.raw_cpu else {})
            _progress(f"raw pipeline run {i + 1}/{cfg.runs}: {raw:,.0f} alerts/s; CPU µs/alert {report.raw_cpu[-1]}")
            plumbing_bench = await fresh(f"bench-plumbing{i}")  # its own topics, as fresh as the others
            with harness_gc_paused():
                plumbing = await plumbing_bench.raw_run(
                    kafka_records(base, 0, cfg.e2e_alerts, run=f"plumbing{i}"), shape="plumbing"
                )
            report.plumbing.append(plumbing)
            report.plumbing_cpu.append(plumbing_bench.raw_cpu[-1] if plumbing_bench.raw_cpu else {})
            _progress(
                f"plumbing run {i + 1}/{cfg.runs} (two writes an alert, no work): {plumbing:,.0f} alerts/s "
                f"({plumbing / raw:.3f} of raw); CPU µs/alert {report.plumbing_cpu[-1]}"
            )
            with harness_gc_paused():
                run = await bench.e2e_run(kafka_records(base, 0, cfg.e2e_alerts, run=f"e2e{i}"))
            bench.stop_worker()
            e2e = run.rate
            report.e2e.append(e2e)
            report.e2e_runs.append(asdict(run))
            _progress(
                f"e2e run {i + 1}/{cfg.runs}: {e2e:,.0f} alerts/s ({e2e / raw:.3f} of raw; live {run.live:,.0f}/s, "
                f"backlog of {run.backlog_alerts:,} {'n/a' if run.backlog is None else f'{run.backlog:,.0f}/s'}); "
                f"CPU µs/alert {run.cpu_us_per_alert}"
            )
        rate = float(cfg.latency_rate) or (median(report.e2e) or 0.0) / 2
        count = max(100, int(rate * cfg.latency_seconds))
        for i in range(cfg.runs):
            bench = await fresh(f"bench-lat{i}")
            with harness_gc_paused():
                dump = workdir / f"latency-{i + 1}.tsv" if cfg.latency_dump else None
                lat = await bench.latency_run(kafka_records(base, 0, count, run=f"lat{i}"), rate, dump=dump)
            bench.stop_worker()
            report.latency.append(asdict(lat))
            _progress(
                f"latency run {i + 1}/{cfg.runs} at {rate:,.0f}/s: p50 {_ms(lat.p50_ms)}, p99 {_ms(lat.p99_ms)} "
                f"({lat.on_arrival}/{lat.sent} decided on arrival); p50/p99 by hop: "
                + ", ".join(f"{hop} {_ms(p50)}/{_ms(p99)}" for hop, (p50, p99) in lat.hops.items())
                + f"; {lat.checkpoints} checkpoints, mean pause {_ms(lat.checkpoint_pause_ms)}"
            )
            floor_bench = await fresh(f"bench-rawlat{i}")  # its own topics, as fresh as the worker's
            with harness_gc_paused():
                floor = await floor_bench.raw_latency_run(kafka_records(base, 0, count, run=f"rawlat{i}"), rate)
            report.raw_latency.append(asdict(floor))
            _progress(
                f"raw pipeline latency run {i + 1}/{cfg.runs} at {rate:,.0f}/s (one hop, the floor): "
                f"p50 {_ms(floor.p50_ms)}, p99 {_ms(floor.p99_ms)}"
            )
    finally:
        for bench in benches:
            bench.stop_worker()
        broker.stop()
        report.worker_peak_rss_mb = [round(b / 1024 / 1024, 1) for bench in benches for b in bench.worker_peak_rss]


def _result(cfg: Config, report: Report) -> dict[str, Any]:
    synthetic_complete = [r for r in report.core_synthetic if r["alerts"] == cfg.synthetic_alerts]
    scaling = {
        str(n): _round(median([r["checkpoints"].get(str(n)) for r in report.core_synthetic]), 2)
        for n in SCALING_SIZES
    }
    ratios = [e / r for e, r in zip(report.e2e, report.raw, strict=False) if r > 0]
    plumbing = [p / r for p, r in zip(report.plumbing, report.raw, strict=False) if r > 0]
    peak = median([r["peak_rss_bytes"] for r in synthetic_complete])
    return {
        "core_alerts_per_s": _round(median([r["alerts_per_s"] for r in synthetic_complete]), 0)
        if cfg.synthetic_alerts >= SCALING_SIZES[-1]
        else None,
        "core_alerts_per_s_aitads": _round(median([r["alerts_per_s"] for r in report.core_aitads]), 0),
        "raw_alerts_per_s": _round(median(report.raw), 0),
        "e2e_alerts_per_s": _round(median(report.e2e), 0),
        "e2e_ratio_vs_raw": _round(median(ratios), 3),
        "p50_latency_ms": _round(median([r["p50_ms"] for r in report.latency]), 1),
        "p99_latency_ms": _round(median([r["p99_ms"] for r in report.latency]), 1),
        "state_bytes_per_asset": _round(median([r["bytes_per_asset"] for r in report.state]), 0),
        "peak_rss_mb": _round(None if peak is None else peak / 1024 / 1024, 1),
        "scaling_us_per_alert": scaling,
        # beside the line's keys (report.json and the table only): the same core, pure Python
        "compiled": sorted({p for r in report.core_aitads + report.core_synthetic for p in r.get("compiled", ())}),
        "core_alerts_per_s_pure": _round(median([r["alerts_per_s"] for r in report.core_synthetic_pure]), 0)
        if cfg.synthetic_alerts >= SCALING_SIZES[-1]
        else None,
        "core_alerts_per_s_aitads_pure": _round(median([r["alerts_per_s"] for r in report.core_aitads_pure]), 0),
        # the worker's Kafka traffic without its work, against the raw pipeline of the same runs:
        # the most `e2e_ratio_vs_raw` could be with decoding and correlation free
        "plumbing_alerts_per_s": _round(median(report.plumbing), 0),
        "plumbing_ratio_vs_raw": _round(median(plumbing), 3),
    }


def summary_line(result: dict[str, Any]) -> str:
    """The JSON line `make bench` ends with (exactly the DESIGN.md keys, in order)."""
    return orjson.dumps({key: result.get(key) for key in KEYS}).decode()


def run(cfg: Config, *, phases: Sequence[str] = PHASES) -> Report:
    """Measure everything `cfg` asks for; the report holds every run and the result."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    report = Report(config={k: str(v) for k, v in asdict(cfg).items()}, machine=machine())
    base = load_base()
    steps: dict[str, Callable[[], None]] = {
        "core": lambda: _core_phase(cfg, report, base),
        "state": lambda: _state_phase(cfg, report, base),
        "kafka": lambda: asyncio.run(_kafka_phase(cfg, report, base)),
    }
    for name in phases:
        if name == "kafka" and not cfg.kafka:
            report.notes.append("Kafka phase skipped (BENCH_SKIP_KAFKA): raw, e2e and latency are null")
            continue
        _progress(f"phase {name}")
        try:
            steps[name]()
        except Exception as exc:  # what could not be measured is null, never made up
            log.exception("bench phase %s failed", name)
            report.failed.append(name)
            report.notes.append(f"{name} phase failed ({type(exc).__name__}: {exc}); its figures are null")
    if cfg.synthetic_alerts < SCALING_SIZES[-1]:
        report.notes.append(
            f"synthetic stream of {cfg.synthetic_alerts} alerts (< 1M): core_alerts_per_s and the "
            "scaling points beyond it are null"
        )
    report.result = _result(cfg, report)
    report.machine["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    (cfg.out / "report.json").write_bytes(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2, default=str))
    return report


def _table(result: dict[str, Any]) -> str:
    lines = ["socnoc bench"]
    for key in KEYS:
        lines.append(f"  {key:26} {result.get(key)}")
    for key in sorted(result.keys() - set(KEYS)):
        lines.append(f"  ({key:24} {result[key]})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = Config.from_env()
        phases = phases_from_env()
    except BenchConfigError as exc:
        sys.stderr.write(f"bench: {exc}\n")
        return 2
    report = run(cfg, phases=phases)
    for note in report.notes:
        _progress(f"note: {note}")
    sys.stdout.write(_table(report.result) + "\n")
    sys.stdout.write(f"details: {cfg.out / 'report.json'}\n")
    sys.stdout.write(summary_line(report.result) + "\n")
    sys.stdout.flush()
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
