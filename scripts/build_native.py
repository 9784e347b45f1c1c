"""Compile the core, the adapters and the stream's per-record code with mypyc (see schemas/native.py).

`python scripts/build_native.py [--out DIR]`, run by `make` before the tests, the worker and
the benchmarks. It copies `correlators`, `schemas` and `streams` to a scratch directory,
compiles the modules of `COMPILED` there with mypyc (the mypy that `make` installs, the
project's own mypy settings), and puts their extension modules and a manifest in DIR
(default build/native), replacing the build that was there. The manifest names the
interpreter's extension suffix and the SHA-256 of every source file of the three packages: a
process uses the build only while they all match.

Without a C compiler it says so and leaves the sources in use (exit 0). A compiler that fails
is an error (exit 1): it would hide a core that no longer compiles.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.native import DEFAULT_DIR, LIBRARY_DIR, MANIFEST, PURE_ENV, SOURCE_PACKAGES, source_digests  # noqa: E402

# package -> its modules that are compiled (pydantic models are not: mypyc cannot build them)
COMPILED = {
    "correlators": ("*.py",),
    "schemas.adapters": ("*.py",),
    "schemas": ("epoch.py", "severity.py", "trusted.py"),
    # the stream's per-record code: the transforms, the record batches (`BatchSender`), the
    # outputs with the correlate stage's record path, the metrics. The stages' sessions stay
    # interpreted: their classes derive from interpreted ones (`Stage`, aiokafka's rebalance
    # listener), and an async method of such a class compiled failed in mypyc's code
    # (SystemError in a listener's `on_partitions_revoked`); their per-record loops call in here.
    "streams": (
        "decoder.py",
        "kafka.py",
        "metrics.py",
        "outputs.py",
        "partition.py",
        "partition_state.py",
        "records.py",
        "reorder.py",
    ),
}


def compiled_sources(root: Path) -> dict[str, list[Path]]:
    """The source files compiled, by package (package `__init__`s stay Python: they choose)."""
    found: dict[str, list[Path]] = {}
    for package, patterns in COMPILED.items():
        folder = root.joinpath(*package.split("."))
        found[package] = sorted(p for each in patterns for p in folder.glob(each) if p.name != "__init__.py")
    return found


def compiler() -> str | None:
    """The C compiler Python builds extensions with, if it and Python's headers are installed."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return None
    return shutil.which(cc[0]) if cc else None


def build(out: Path) -> int:
    if compiler() is None:
        sys.stdout.write("build_native: no C compiler or no Python headers; socnoc runs as pure Python\n")
        return 0
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="socnoc-native-") as scratch:
        work = Path(scratch)
        for package in SOURCE_PACKAGES:
            shutil.copytree(ROOT / package, work / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        sources = compiled_sources(work)
        files = [str(p.relative_to(work)) for paths in sources.values() for p in paths]
        env = dict(os.environ, **{PURE_ENV: "1"})  # mypyc's own imports of the project: the sources
        cmd = [sys.executable, "-m", "mypyc", "--config-file", str(ROOT / "pyproject.toml"), *files]
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            sys.stderr.write(f"build_native: mypyc failed (exit {done.returncode})\n")
            return 1
        staging = out.with_name(out.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for package, paths in sources.items():
            target = staging / package
            target.mkdir()
            for path in paths:
                shutil.copy2(path.with_name(path.stem + suffix), target)
        shared = sorted(work.glob(f"*__mypyc{suffix}"))
        if len(shared) != 1:
            sys.stderr.write(f"build_native: expected one shared library, found {[p.name for p in shared]}\n")
            return 1
        (staging / LIBRARY_DIR).mkdir()
        shutil.copy2(shared[0], staging / LIBRARY_DIR)
        manifest = {
            "suffix": suffix,
            "library": shared[0].name,
            "python": sys.version,
            "packages": {package: [p.name for p in paths] for package, paths in sources.items()},
            "sources": source_digests(work),
        }
        if manifest["sources"] != source_digests(ROOT):
            sys.stderr.write("build_native: the sources changed during the build; run it again\n")
            return 1
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    count = sum(len(p) for p in sources.values())
    sys.stdout.write(f"build_native: {count} modules compiled into {out} in {time.monotonic() - started:.0f} s\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="build_native.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    return build(args.out.resolve())


if __name__ == "__main__":
    raise SystemExit(main())
