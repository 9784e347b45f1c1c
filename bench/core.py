"""Core benchmark: adapters + engine on a file, no Kafka, in this process (one core).

Runs the path `socnoc replay` runs per record — read the record, parse it with the format's
adapter, advance event time, `on_alert` — in file order, and times it with checkpoints so the
per-alert cost at 10k, 100k and 1M alerts comes out of one pass. Throughput is counted per
CPU second of this single-threaded process — its cost on one core, whatever else the
machine is running — with the wall-clock figures beside it. Also measures the resident
memory an engine needs per active asset. Run as `python -m bench.core` in a fresh process per
measurement so runs do not share heaps, caches or garbage.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.adapters.base import ParseContext, Rejected
from schemas.adapters.registry import adapter_for_file, read_records
from schemas.errors import InvalidInput
from schemas.models import Decision
from schemas.native import compiled_packages
from streams.replay import Context, build_engine

__all__ = ["CoreResult", "StateResult", "run_core", "run_state", "rss_bytes", "peak_rss_bytes", "main"]


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; else the peak)."""
    current = _statm_rss()
    return current if current is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far: at least the current one (Linux updates
    the high-water mark `getrusage` reports lazily, and it was seen 0.1 MB below the current
    size, which failed a test comparing the two)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak if sys.platform == "darwin" else peak * 1024
    current = _statm_rss()
    return max(peak, current) if current is not None else peak


def _statm_rss() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class CoreResult:
    """One pass over a file: totals, and the cumulative cost at each checkpoint."""

    alerts: int = 0
    decisions: int = 0
    incident_events: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    alerts_per_s: float = 0.0  # per CPU second of this (single-threaded) process: one core
    wall_alerts_per_s: float = 0.0  # per wall-clock second (lower when the machine is busy)
    checkpoints: dict[str, float] = field(default_factory=dict)  # alerts -> cumulative CPU µs/alert
    wall_checkpoints: dict[str, float] = field(default_factory=dict)  # the same, wall clock
    peak_rss_bytes: int = 0


def run_core(path: Path, fmt: str = "aitads", checkpoints: Sequence[int] = ()) -> CoreResult:
    """Adapters + engine over every record of `path`, timed; every alert must get its decision."""
    adapter = adapter_for_file(path, fmt)
    engine = build_engine(Context())
    marks = sorted(set(checkpoints))
    result = CoreResult()
    next_mark = marks.pop(0) if marks else -1
    watermark = None
    alerts = decisions = events = 0
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()

    def count(outputs: Iterable[object]) -> None:
        nonlocal decisions, events
        for out in outputs:
            if isinstance(out, Decision):
                decisions += 1
            else:
                events += 1

    for record in read_records(path, fmt):
        try:
            parsed = adapter.parse(record.raw, ParseContext(record_id=record.record_id))
        except InvalidInput as exc:
            parsed = [Rejected(record.record_id, exc)]
        for item in parsed:
            if isinstance(item, Rejected):
                count(engine.on_invalid(item.alert_id, str(item.error)))
            else:
                if watermark is None or item.time > watermark:
                    watermark = item.time
                    count(engine.advance(watermark))
                count(engine.on_alert(item))
            alerts += 1
            if alerts == next_mark:
                result.checkpoints[str(alerts)] = (time.process_time() - c0) / alerts * 1e6
                result.wall_checkpoints[str(alerts)] = (time.perf_counter() - t0) / alerts * 1e6
                next_mark = marks.pop(0) if marks else -1
    count(engine.flush())
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = time.process_time() - c0
    result.alerts, result.decisions, result.incident_events = alerts, decisions, events
    if decisions != alerts:
        raise RuntimeError(f"{alerts} alerts but {decisions} decisions: the core lost or repeated some")
    result.alerts_per_s = alerts / result.cpu_s if result.cpu_s > 0 else 0.0
    result.wall_alerts_per_s = alerts / result.wall_s if result.wall_s > 0 else 0.0
    result.peak_rss_bytes = peak_rss_bytes()
    return result


@dataclass
class StateResult:
    """Resident memory of an engine before and after `assets` assets became active."""

    assets: int
    alerts: int
    rss_before: int
    rss_after: int
    bytes_per_asset: float


def run_state(path: Path, assets: int, warmup_path: Path | None = None) -> StateResult:
    """RSS growth while the records of `path` (one asset each, see data.state_probe_rows) go in.

    `warmup_path` is fed first so that imports, interned strings and caches are not counted.
    The records are streamed from the file, so the input is never held in memory.
    """
    engine = build_engine(Context())
    adapter = adapter_for_file(path, "aitads")

    def feed(source: Path) -> int:
        n = 0
        for record in read_records(source, "aitads"):
            for item in adapter.parse(record.raw, ParseContext(record_id=record.record_id)):
                if not isinstance(item, Rejected):
                    engine.advance(item.time)
                    engine.on_alert(item)
                    n += 1
        return n

    if warmup_path is not None:
        feed(warmup_path)
    gc.collect()
    before = rss_bytes()
    alerts = feed(path)
    gc.collect()
    after = rss_bytes()
    return StateResult(assets, alerts, before, after, (after - before) / assets if assets else 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.core {core,state} ...`: one measurement, one JSON object on stdout."""
    parser = argparse.ArgumentParser(prog="python -m bench.core")
    sub = parser.add_subparsers(dest="cmd", required=True)
    core = sub.add_parser("core", help="adapters + engine over a file")
    core.add_argument("path", type=Path)
    core.add_argument("--format", default="aitads")
    core.add_argument("--checkpoints", default="", help="comma-separated alert counts")
    state = sub.add_parser("state", help="memory per active asset")
    state.add_argument("path", type=Path)
    state.add_argument("--assets", type=int, required=True)
    state.add_argument("--warmup", type=Path, default=None)
    args = parser.parse_args(argv)
    payload: dict[str, Any]
    if args.cmd == "core":
        marks = [int(x) for x in args.checkpoints.split(",") if x.strip()]
        payload = asdict(run_core(args.path, args.format, marks))
        payload["compiled"] = list(compiled_packages())  # what ran: the build, or the sources
    else:
        payload = asdict(run_state(args.path, args.assets, args.warmup))
    sys.stdout.buffer.write(orjson.dumps(payload) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
