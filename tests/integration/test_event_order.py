"""Input spread over several partitions and decoded in big per-partition batches (a backlog):
the correlating partition still sees event-time order (`streams.reorder`), so decisions match
`socnoc replay` of the same rows instead of turning a third of them into late alerts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.control import end_of_input, wait_decoded
from streams.records import TickItem, decode_item
from tests.integration.conftest import ROOT, Names, Tail, WorkerProcess, until
from tests.integration.datasets import aitads_rows, host_of, write_csv

pytestmark = pytest.mark.integration

# How long a silent input partition holds the others back, in the two backlog tests: what
# they prove is the order the reorder buffer restores, and at the default 0.5 s a decoder
# stalled longer than that on a loaded machine let the others pass it (13 of 20,985 alerts
# late in one CI run while the machine was also compiling). Their input ends with
# `end_of_input`, which does not wait for it.
_STALL_PROOF = "5"


async def test_a_backlog_over_four_partitions_is_decided_in_event_time_order(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(), SOCNOC_ORDER_WAIT=_STALL_PROOF
    )
    worker = workers(env)
    await worker.wait_partitions()
    # the decoder announces its four partitions before any alert, so not even the first
    # fetch of one can race ahead of the others (it did: a later warm-up start, no incident)
    header, rows = aitads_rows()
    await _decided_as_replay(names, env, worker, header, rows, tmp_path, producer)


async def test_two_decoders_joining_over_a_backlog_decide_it_in_event_time_order(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    """Two workers start on a backlog over four partitions, so the group may hand partitions
    over while their first fetches are in flight. Each decoder names the input partitions the
    other owns (`expect`) before its own alerts, and the clock follows only what every source
    has delivered: otherwise one decoder's first fetch raced ahead of the other's announcement
    (75 of 20,985 alerts late in one of three runs, stop 9), and a tick of one decoder's
    source moved the clock past the other's held back (185 late in one of three runs here)."""
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(), SOCNOC_ORDER_WAIT=_STALL_PROOF
    )
    header, rows = aitads_rows()
    for _, row in rows:
        await producer.send(names.alerts, row, key=host_of(row))
    await producer.flush()
    first, second = workers(env, "a"), workers(env, "b")

    async def split() -> bool:
        owned = []
        for worker in (first, second):
            got = await worker.health()
            if got is None:
                return False
            decoding = got[1].get("stages", {}).get("decode", {}).get("partitions", [])
            owned.append({p for p in decoding if p.startswith(f"{names.alerts}:")})  # (context topics too)
        return bool(owned[0] and owned[1] and not owned[0] & owned[1] and len(owned[0] | owned[1]) == 4)

    await until(split, 60, "two decoders splitting the four input partitions", first)
    internal = names.settings(**env).internal_topic()
    async with Tail(names.bootstrap, internal) as log:
        await _decided_as_replay(names, env, first, header, rows, tmp_path)
        ticks = [i for i in (decode_item(r.value, r.headers) for r in log.records[internal]) if isinstance(i, TickItem)]
    sources = {f"{names.alerts}:{p}" for p in range(4)}
    assert {t.source for t in ticks if t.expect} == sources, "each decoder names the partitions of the other"


async def _decided_as_replay(
    names: Names,
    env: dict[str, str],
    worker: WorkerProcess,
    header: bytes,
    rows: list[tuple[int, bytes]],
    tmp_path: Path,
    producer: AIOKafkaProducer | None = None,
) -> None:
    """End the input (with `producer`, produce `rows` first, keyed by host: four partitions,
    one backlog), and compare the decisions and incidents with `socnoc replay` of the rows."""
    async with Tail(names.bootstrap, names.decisions, names.incidents) as tail:
        if producer is not None:
            for _, row in rows:  # keyed by host, as a shipper would
                await producer.send(names.alerts, row, key=host_of(row))
            await producer.flush()
        # the input ends, as at the end of `socnoc replay`: windows still open are decided
        settings = names.settings(**env)
        await wait_decoded(settings, 120)
        await end_of_input(settings)

        def all_decided() -> bool:
            return len({r.key for r in tail.records[names.decisions]}) >= len(rows)

        await until(all_decided, 180, "every decision", worker)
        await asyncio.sleep(1)
        decisions = tail.values(names.decisions)
        final: dict[str, dict[str, object]] = {}
        for event in tail.values(names.incidents):
            final[event["incident_id"]] = event  # the newest version is the incident's state
    partitions = {r.partition for r in tail.records[names.decisions]}
    assert partitions, "no decisions"

    csv = write_csv(tmp_path / "slice.csv", header, [r for _, r in rows])
    out = tmp_path / "replay"
    subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", "--format", "aitads", "--out", str(out), str(csv)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    replayed = [orjson.loads(line) for line in (out / "decisions.jsonl").read_bytes().splitlines()]
    replay_opened = [orjson.loads(line) for line in (out / "incidents.jsonl").read_bytes().splitlines()]

    late = sum(1 for d in decisions if d["reason"].startswith("late"))
    assert late == 0, f"{late} of {len(rows)} alerts decided late"
    stream_mix = Counter(d["disposition"] for d in decisions)
    replay_mix = Counter(d["disposition"] for d in replayed)
    for disposition, count in replay_mix.items():
        assert abs(stream_mix[disposition] - count) <= 0.02 * len(rows), (stream_mix, replay_mix)

    def summary(incidents: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return sorted((i["kind"], i["root_cause"]["asset"], i["assets"][0]) for i in incidents)  # type: ignore[index]

    assert summary(list(final.values())) == summary(replay_opened)


async def test_every_input_partition_is_announced_and_an_empty_one_goes_quiet_at_once(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """The correlating side waits for each announced input partition, so one that never gets
    a record must say so quickly (`SOCNOC_ORDER_WAIT`), not after the idle timeout."""
    env = names.worker_env(SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode())
    _, rows = aitads_rows()
    worker = workers(env)
    await worker.wait_partitions()
    internal = names.settings(**env).internal_topic()
    async with Tail(names.bootstrap, internal, names.decisions) as tail:
        for _, row in rows[:200]:
            await producer.send(names.alerts, row, partition=0)  # partitions 1-3 stay empty
        await producer.flush()
        sources = {f"{names.alerts}:{p}" for p in range(4)}

        def ticks() -> list[TickItem]:
            items = (decode_item(r.value, r.headers) for r in tail.records[internal])
            return [i for i in items if isinstance(i, TickItem)]

        def announced_and_quiet() -> bool:
            got = ticks()
            return {t.source for t in got if t.start} == sources and {t.source for t in got if t.quiet} >= sources

        # well inside the 30 s idle timeout: quiet comes after SOCNOC_ORDER_WAIT (0.5 s)
        await until(announced_and_quiet, 15, "a start and a quiet tick for every input partition", worker)
        # on every correlation partition, partition 0 is announced before its first alert
        for part in {r.partition for r in tail.records[internal]}:
            items = [decode_item(r.value, r.headers) for r in tail.records[internal] if r.partition == part]
            first = next(i for i in items if getattr(i, "source", None) == f"{names.alerts}:0")
            assert isinstance(first, TickItem) and first.start, "announced before anything else of the source"
        assert not any(d["reason"].startswith("late") for d in tail.values(names.decisions))
