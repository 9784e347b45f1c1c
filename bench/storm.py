"""Storm benchmark: the worker end to end on a storm of new assets.

`python -m bench.storm` starts the embedded broker and one worker with the benchmark's
settings (`bench.pipeline.KafkaBench`), produces `--per-asset` real AIT-ADS alerts on each of
`--assets` hosts never seen before, all within ten minutes of event time
(`bench.data.storm_records`: every asset still has alerts waiting in its window when the
storm ends), and prints ONE JSON line: alerts/s through the worker, CPU µs an alert of the
worker and of the broker, its checkpoints and their mean pause, the engine's state caps it
reached (`max_windows` past 100,000 assets: each new one closes the oldest window early),
and how many times a stage had to start a new session (a lease lost, a checkpoint that
failed: each one restores from the checkpoints and processes again). `make bench`'s e2e
run has 33 assets; here the state grows by the alert, which is what an alert storm does to
a worker. The worker runs with its own session timeout (10 s), not the benchmark's 3 s: a
checkpoint of a storm's state pauses it for
seconds. Stop 32, with 100,000 assets: stop 31's worker 2,559-3,010 alerts/s (its checkpoints,
every 5 s, took ~4 s to encode), 7,927-8,173/s with checkpoints spaced by their cost
(`SOCNOC_CHECKPOINT_MAX_SHARE`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.data import load_base, storm_records
from bench.pipeline import KafkaBench, PauseHistogram, caps_hit, harness_gc_paused
from streams.broker import EmbeddedBroker
from streams.settings import Settings

__all__ = ["storm", "main"]

# what `streams.stage.Stage.run` logs when a session ends on an error and a new one starts
_RESTART = "new session in"
SESSION_TIMEOUT_S = int(Settings.model_fields["group_session_timeout"].get_default().total_seconds())


async def storm(assets: int, per_asset: int, workdir: Path) -> dict[str, Any]:
    """One storm through a fresh worker on a fresh embedded broker."""
    records = storm_records(load_base(), assets, per_asset, run="storm")
    broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
    try:
        bench = KafkaBench(broker.bootstrap, workdir, prefix=f"storm{int(time.time())}", broker_pid=broker.pid)
        # the worker's own session timeout, not the benchmark's 3 s (set for quick group joins):
        # a checkpoint of a storm's state pauses the stage for seconds (see the module's notes)
        bench.worker_env["SOCNOC_GROUP_SESSION_TIMEOUT"] = str(SESSION_TIMEOUT_S)
        await bench.setup()
        try:
            with harness_gc_paused():
                run = await bench.e2e_run(records)
            metrics = await bench.worker_metrics()
            log = bench.workers_log(chars=10_000_000)
        finally:
            bench.stop_worker()
    finally:
        broker.stop()
    checkpoints = PauseHistogram.from_metrics(metrics) if metrics is not None else None
    mean = checkpoints.mean_ms() if checkpoints is not None else None
    found = checkpoints if mean is not None else None  # (None: no checkpoint yet)
    return {
        "assets": assets,
        "alerts": len(records),
        "alerts_per_s": round(run.rate),
        "live_alerts_per_s": round(run.live),
        "cpu_us_per_alert": run.cpu_us_per_alert,
        "checkpoints": found.count if found else 0,
        "checkpoint_pause_ms": round(mean, 1) if mean is not None else None,
        # what the stage lost to them, and the longest (a bucket's bound: 0.5, 1, 2.5 s ...)
        "checkpoint_pause_total_s": round(found.total_s, 2) if found else None,
        "checkpoint_pause_longest_le_s": found.longest_le_s() if found else None,
        "checkpoint_pauses_over_1s": found.over(1.0) if found else None,
        "session_restarts": log.count(_RESTART),
        # the engine's state caps reached (`max_windows`: past 100,000 assets with alerts waiting,
        # each new one closes the oldest window early), None if /metrics did not answer
        "caps_hit": caps_hit(metrics) if metrics is not None else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=100_000, help="new assets in the storm")
    parser.add_argument("--per-asset", type=int, default=3, help="alerts on each of them")
    parser.add_argument("--out", type=Path, default=None, help="folder for the broker's and worker's logs")
    args = parser.parse_args(argv)
    if args.assets < 1 or args.per_asset < 1:
        parser.error("--assets and --per-asset must be at least 1")
    with tempfile.TemporaryDirectory(prefix="socnoc-storm-") as tmp:
        workdir = args.out or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(storm(args.assets, args.per_asset, workdir))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
