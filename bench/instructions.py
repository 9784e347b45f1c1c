"""Instructions an alert, counted by valgrind: `python -m bench.instructions [--tree DIR]...`.

On the shared 2-vCPU machines of stops 23-28 a timing swings by up to 2x from one minute to the
next, so a change worth 5-15% cannot be seen in `make bench` or in alternating timed runs. The
instructions a workload executes hardly move (PYTHONHASHSEED fixed; cachegrind, no cache
simulation). Each workload runs in a child process under cachegrind twice, once stopping
before the measured part, and the difference over the alert count is printed:

- `engine`: the correlation engine over the synthetic stream (the alerts parsed first), in
  replay's order, with the worker's garbage-collector settings;
- `outputs`: the same, and the JSON of every output (`streams.records.output_json`);
- `decode`: the decode stage's transform of the benchmark's Kafka records
  (`Decoder.decode_fetched`, then `encode_item` of each internal record), without Kafka;
- `stages`: the worker's two stages as the benchmark's worker runs them (eight internal
  partitions, the hand-off from memory), without Kafka: `DecodeStage._process` of each fetch of
  the benchmark's records, into record batches (aiokafka's builder), then
  `CorrelateStage._process_local` of what it hands over: engines, decisions and incident events
  into batches, the metrics. A producer stand-in (`streams.testing.AckingProducer`)
  acknowledges each batch at once; checkpoints and watermark ticks (timed by the wall clock)
  are left out.

`--tree DIR` (repeatable) measures another checkout beside this one (each with its own
`make native`; a stale build runs as pure Python, which the output says): the way to compare
two commits. The Kafka client's network side and the broker are not in any workload. Needs
valgrind (Debian's `valgrind` package).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WORKLOADS", "main", "run_workload", "parse_instructions"]

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("engine", "outputs", "decode", "stages")
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def parse_instructions(report: str) -> int:
    """The instruction count of cachegrind's summary (its stderr)."""
    found = _REFS.search(report)
    if found is None:
        raise ValueError("no 'I refs' line in the valgrind output")
    return int(found.group(1).replace(",", ""))


def run_workload(
    workload: str, alerts: int, *, setup_only: bool = False, ready: Callable[[], None] = lambda: None
) -> tuple[int, int]:
    """Run `workload` over `alerts` synthetic alerts in this process: (alerts, outputs).
    `ready` is called between the setup and the measured part (the child: the worker's
    collector settings, `streams.worker.tune_gc`, which a test process must not get)."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")
    if workload == "decode":
        return _decode(alerts, setup_only, ready)
    if workload == "stages":
        return _stages(alerts, setup_only, ready)
    return _engine(alerts, setup_only, ready, encode=workload == "outputs")


def _engine(count: int, setup_only: bool, ready: Callable[[], None], *, encode: bool) -> tuple[int, int]:
    from bench.data import load_base, synthetic_rows, write_csv
    from schemas.adapters.base import ParseContext, Rejected
    from schemas.adapters.registry import adapter_for_file, read_records
    from schemas.models import Alert
    from streams.records import output_json
    from streams.replay import Context, build_engine

    with tempfile.TemporaryDirectory(prefix="socnoc-instructions-") as tmp:
        path = Path(tmp) / "synthetic.csv"
        base = load_base()
        write_csv(path, base.header, synthetic_rows(base, count))
        adapter = adapter_for_file(path, "aitads")
        alerts: list[Alert] = []
        for record in read_records(path, "aitads"):
            for parsed in adapter.parse(record.raw, ParseContext(record_id=record.record_id)):
                if isinstance(parsed, Rejected):
                    raise ValueError(f"synthetic record {record.record_id} is not an alert: {parsed.error}")
                alerts.append(parsed)
    engine = build_engine(Context())
    ready()
    if setup_only:
        return len(alerts), 0
    outputs = 0
    watermark = None
    for alert in alerts:
        due = []
        if watermark is None or alert.time > watermark:
            watermark = alert.time
            due = list(engine.advance(watermark))
        due += engine.on_alert(alert)
        outputs += len(due)
        if encode:
            for output in due:
                output_json(output)
    return len(alerts), outputs


def _fetched(topic: str, count: int) -> list[Any]:
    """The benchmark's Kafka records, as a fetch of partition 0 of `topic` gives them."""
    from aiokafka.structs import ConsumerRecord

    from bench.data import kafka_records, load_base

    records = kafka_records(load_base(), 0, count, run="instructions")
    return [
        ConsumerRecord(topic, 0, i, 1_700_000_000_000 + i, 0, key, value, None, len(key), len(value), ())
        for i, (key, value) in enumerate(zip(records.keys, records.values, strict=True))
    ]


def _decode(count: int, setup_only: bool, ready: Callable[[], None]) -> tuple[int, int]:
    from bench.data import KAFKA_MAP
    from correlators.identity import Identity
    from schemas.context import Asset, Change, Feedback
    from streams.decoder import Decoder
    from streams.records import encode_item
    from streams.settings import InputSpec

    topic = "bench.soc.alerts"
    fetched = _fetched(topic, count)
    decoder = Decoder(
        {topic: InputSpec(format="jsonl", map=KAFKA_MAP)},
        context_topics={"assets": Asset, "changes": Change, "feedback": Feedback},
        identity=Identity(),
        single_partition=True,
    )
    ready()
    if setup_only:
        return len(fetched), 0
    counts: dict[tuple[str, ...], int] = {}
    items = 0
    for start in range(0, len(fetched), 500):  # the stage decodes a fetch at a time
        routed, _ = decoder.decode_fetched(fetched[start : start + 500], counts)
        for entry in routed:
            encode_item(entry.item, key=entry.key)
        items += len(routed)
    return len(fetched), items


def _stages(count: int, setup_only: bool, ready: Callable[[], None]) -> tuple[int, int]:
    import asyncio

    return asyncio.run(_stages_async(count, setup_only, ready))


def _stand_ins() -> tuple[Any, Any]:
    """`streams.testing`'s client stand-ins: the measured tree's, or this checkout's for a tree
    from before them (`--tree` with a commit older than b4395e8)."""
    try:
        from streams.testing import AckingProducer, NullConsumer
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_socnoc_stand_ins", ROOT / "streams" / "testing.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # (its dataclasses look their module up)
        spec.loader.exec_module(module)
        return module.AckingProducer, module.NullConsumer
    return AckingProducer, NullConsumer


async def _stages_async(count: int, setup_only: bool, ready: Callable[[], None]) -> tuple[int, int]:
    import time

    from aiokafka.structs import TopicPartition
    from prometheus_client import CollectorRegistry

    from bench.data import KAFKA_MAP
    from streams.decode_stage import SourceClock
    from streams.partition import Processor
    from streams.partition_state import PartitionState
    from streams.settings import InputSpec, Settings
    from streams.worker import Worker

    AckingProducer, NullConsumer = _stand_ins()
    topic, partitions = "bench.soc.alerts", 8
    settings = Settings(  # the benchmark worker's (bench.pipeline), without a broker
        inputs={topic: InputSpec(format="jsonl", map=KAFKA_MAP)},
        partitions=partitions,
        idle_timeout=86400,
    )
    worker = Worker(settings, registry=CollectorRegistry())
    decode, correlate = worker.stages
    assert decode.handoff is not None  # type: ignore[attr-defined]
    producer, consumer = AckingProducer(partitions), NullConsumer()
    for stage in (decode, correlate):
        stage._producer, stage._consumer = producer, consumer  # type: ignore[attr-defined]
    decode._partitions = list(range(partitions))  # type: ignore[attr-defined]
    now = time.monotonic()
    decode.sources = {f"{topic}:0": SourceClock(last_record=now, last_tick=now, quiet_sent=False)}  # type: ignore[attr-defined]
    correlate.owned = {  # type: ignore[attr-defined]
        p: PartitionState(p, Processor(correlate._new()), 0) for p in range(partitions)  # type: ignore[attr-defined]
    }
    fetched = _fetched(topic, count)
    tp = TopicPartition(topic, 0)
    size = settings.batch_max_records
    ready()
    if setup_only:
        return len(fetched), 0
    for start in range(0, len(fetched), size):  # a fetch at a time, as the stages' rounds go
        await decode._process(consumer, producer, {tp: fetched[start : start + size]})  # type: ignore[attr-defined]
        while correlate._local:  # type: ignore[attr-defined]
            await correlate._process_local()  # type: ignore[attr-defined]
    decided = sum(worker.metrics.decisions.counts.values())
    return len(fetched), decided


def _count(tree: Path, workload: str, alerts: int, setup_only: bool) -> tuple[int, str]:
    """Instructions of one child run under cachegrind, and what the child said."""
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        # this file's workloads, the tree's code: the child imports everything else from `tree`
        sys.executable, str(Path(__file__).resolve()), "--child", workload, "--alerts", str(alerts),
    ]
    if setup_only:
        cmd.append("--setup-only")
    # (the worker's settings are the workload's own: none from this environment)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCNOC_")}
    env.update(PYTHONHASHSEED="0", PYTHONPATH=str(tree))
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{workload} in {tree} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    said = next((line for line in done.stdout.splitlines() if line.startswith("child:")), "")
    return parse_instructions(done.stderr), said


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--alerts", type=int, default=150_000, help="synthetic alerts (the decode and stages workloads: 1/5)"
    )
    parser.add_argument("--workload", action="append", choices=WORKLOADS, help="default: all")
    parser.add_argument("--tree", action="append", type=Path, default=[], help="another checkout to measure")
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--setup-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.alerts < 1:
        parser.error("--alerts must be at least 1")
    if args.child:
        from schemas.native import compiled_packages
        from streams.worker import tune_gc

        alerts, outputs = run_workload(args.child, args.alerts, setup_only=args.setup_only, ready=tune_gc)
        compiled = ",".join(compiled_packages()) or "none (pure Python)"
        sys.stdout.write(f"child: {alerts} alerts, {outputs} outputs, compiled {compiled}\n")
        return 0
    if shutil.which("valgrind") is None:
        sys.stderr.write("bench.instructions: valgrind is not installed (Debian: apt-get install valgrind)\n")
        return 2
    trees = [ROOT, *(t.resolve() for t in args.tree)]
    for tree in trees:
        if not (tree / "streams").is_dir():
            sys.stderr.write(f"bench.instructions: {tree} is not a socnoc checkout\n")
            return 2
    for workload in args.workload or WORKLOADS:
        alerts = max(1, args.alerts // 5) if workload in ("decode", "stages") else args.alerts
        for tree in trees:
            before, _ = _count(tree, workload, alerts, True)
            after, said = _count(tree, workload, alerts, False)
            per = (after - before) / alerts
            sys.stdout.write(f"{workload:8} {per:10,.0f} instructions an alert  {tree}  ({said[7:]})\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # run as a file (a child): bench/ is not a package root
    raise SystemExit(main())
