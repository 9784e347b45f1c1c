"""Profile the core (adapters + engine) with cProfile: `python -m bench.profile [aitads|synthetic]`.

Prints the top functions by own time and by cumulative time, so a change to `correlators/`
or `schemas/` can be checked for where the time goes. `--alerts N` sets the synthetic
stream's length (default 300k: long enough to include renamed copies of the data);
`--out FILE` keeps the raw profile for `python -m pstats` or snakeviz.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.core import run_core
from bench.data import AITADS, load_base, synthetic_rows, write_csv

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("stream", choices=("aitads", "synthetic"), nargs="?", default="aitads")
    parser.add_argument("--alerts", type=int, default=300_000, help="synthetic stream length")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="write the raw profile here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = AITADS
        if args.stream == "synthetic":
            base = load_base()
            path = Path(tmp) / "synthetic.csv"
            write_csv(path, base.header, synthetic_rows(base, args.alerts))
        profiler = cProfile.Profile()
        profiler.enable()
        result = run_core(path, "aitads")
        profiler.disable()
    sys.stdout.write(f"{result.alerts} alerts, {result.alerts_per_s:,.0f} alerts/s under the profiler\n")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    if args.out is not None:
        stats.dump_stats(str(args.out))
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
