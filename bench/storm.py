"""Storm benchmark: the worker end to end on a storm of new assets.

`python -m bench.storm` starts the embedded broker and one worker with the benchmark's
settings (`bench.pipeline.KafkaBench`), produces `--per-asset` real AIT-ADS alerts on each of
`--assets` hosts never seen before, all within ten minutes of event time
(`bench.data.storm_records`: every asset still has alerts waiting in its window when the
storm ends), and prints ONE JSON line: alerts/s through the worker, CPU µs an alert of the
worker and of the broker, its checkpoints and their mean pause, and how many times a stage
had to start a new session (a lease lost, a checkpoint that failed: each one restores from the
checkpoints and processes again). `make bench`'s e2e run has a few dozen assets; here the
state grows by the alert, which is what an alert storm does to a worker. Stop 32 found the
worker at 1,586 alerts/s here with 100,000 assets (its checkpoints took longer to encode than
their interval; two sessions lost), 10,758/s with checkpoints spaced by their cost.
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
from bench.pipeline import KafkaBench, harness_gc_paused
from streams.broker import EmbeddedBroker

__all__ = ["storm", "main"]

# what `streams.stage.Stage.run` logs when a session ends on an error and a new one starts
_RESTART = "new session in"


async def storm(assets: int, per_asset: int, workdir: Path) -> dict[str, Any]:
    """One storm through a fresh worker on a fresh embedded broker."""
    records = storm_records(load_base(), assets, per_asset, run="storm")
    broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
    try:
        bench = KafkaBench(broker.bootstrap, workdir, prefix=f"storm{int(time.time())}", broker_pid=broker.pid)
        await bench.setup()
        try:
            with harness_gc_paused():
                run = await bench.e2e_run(records)
            checkpoints = await bench.worker_checkpoints()
            log = bench.workers_log(chars=10_000_000)
        finally:
            bench.stop_worker()
    finally:
        broker.stop()
    return {
        "assets": assets,
        "alerts": len(records),
        "alerts_per_s": round(run.rate),
        "live_alerts_per_s": round(run.live),
        "cpu_us_per_alert": run.cpu_us_per_alert,
        "checkpoints": checkpoints[0] if checkpoints else 0,
        "checkpoint_pause_ms": round(checkpoints[1], 1) if checkpoints else None,
        "session_restarts": log.count(_RESTART),
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
