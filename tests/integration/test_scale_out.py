"""Two workers in one group split the partitions, and a second worker joining mid-stream (a
rebalance) changes nothing: their union equals what one worker alone decides."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streams.checkpoints import parse_src
from streams.control import end_of_input, wait_decoded
from streams.records import SRC_HEADER, header
from tests.integration.checks import assert_incidents_whole
from tests.integration.conftest import Names, Tail, WorkerProcess, until
from tests.integration.datasets import aitads_rows
from tests.integration.test_stream_equals_replay import _comparable, _final_states

pytestmark = pytest.mark.integration


def _correlating(body: dict[str, Any]) -> set[str]:
    return set(body["stages"]["correlate"]["partitions"])


async def test_two_workers_split_partitions_and_equal_one_worker(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    solo = Names(names.bootstrap, f"{names.prefix}-solo")
    duo = Names(names.bootstrap, f"{names.prefix}-duo")
    inputs = orjson.dumps({names.alerts: {"format": "aitads"}}).decode()
    env = {"SOCNOC_INPUTS": inputs, "SOCNOC_IDLE_TIMEOUT": "3600", "SOCNOC_PARTITION_BY": "asset"}
    reference = workers(solo.worker_env(**env), "solo")
    first = workers(duo.worker_env(**env), "duo-a")
    await reference.wait_partitions()
    await first.wait_partitions()

    async def split() -> bool:
        assert second is not None
        a, b = await first.health(), await second.health()
        if a is None or b is None:
            return False
        pa, pb = _correlating(a[1]), _correlating(b[1])
        return bool(pa and pb and not pa & pb and len(pa | pb) == 4)

    _, rows = aitads_rows()
    values = [row for _, row in rows]
    early = len(values) // 10
    second: WorkerProcess | None = None
    split_at: list[int] = []
    async with (
        Tail(names.bootstrap, solo.decisions, solo.incidents) as ref_tail,
        Tail(names.bootstrap, duo.decisions, duo.incidents) as duo_tail,
    ):
        loop = asyncio.get_running_loop()
        start = loop.time()
        futures = []
        for i, value in enumerate(values):
            futures.append(await producer.send(names.alerts, value, partition=0))
            if i == early:
                second = workers(duo.worker_env(**env), "duo-b")
            if i % 200 == 199:
                if second is not None and not split_at and await split():
                    split_at.append(len(duo_tail.records[duo.decisions]))
                ahead = start + i / 2500 - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futures)
        assert second is not None
        await until(split, 60, "the two workers splitting the correlation partitions", second)
        assert split_at and split_at[0] < 0.8 * len(values), "the rebalance was not mid-stream"
        for app in (solo, duo):
            settings = app.settings(**env)
            await wait_decoded(settings, timeout_s=90)
            await end_of_input(settings)
        for tail, app in ((ref_tail, solo), (duo_tail, duo)):
            await until(
                lambda t=tail, a=app: len({r.key for r in t.records[a.decisions]}) >= len(values),
                120,
                f"every decision of {app.prefix}",
            )
        await asyncio.sleep(1.5)  # anything repeated after a checkpoint would show up now
        with contextlib.suppress(AssertionError):  # the last incident events may lag a moment
            await until(
                lambda: _final_states(duo_tail.values(duo.incidents))
                == _final_states(ref_tail.values(solo.incidents)),
                10,
                "incident states",
            )
        for tail, app in ((ref_tail, solo), (duo_tail, duo)):
            _assert_decisions_follow_their_engine(tail.records[app.decisions])
        ref_decisions = ref_tail.values(solo.decisions)
        duo_decisions = duo_tail.values(duo.decisions)
        ref_events = ref_tail.values(solo.incidents)
        duo_events = duo_tail.values(duo.incidents)

    def by_input(decisions: list[dict[str, Any]], app: Names) -> dict[str, dict[str, Any]]:
        counts = Counter(d["alert_id"] for d in decisions)
        assert all(n == 1 for n in counts.values()), f"{app.prefix}: an alert decided twice"
        return {d["alert_id"]: _comparable(d) for d in decisions}

    assert by_input(duo_decisions, duo) == by_input(ref_decisions, solo)
    assert _final_states(duo_events) == _final_states(ref_events)
    assert_incidents_whole(duo_events)


def _assert_decisions_follow_their_engine(records: list[ConsumerRecord[bytes, bytes]]) -> None:
    """A decision is keyed by its alert id and written to the partition of the correlation
    partition that made it, in the order that engine made them, across the rebalance too."""
    last: dict[int, int] = {}
    for record in records:
        src = parse_src(header(record.headers, SRC_HEADER))
        assert src is not None, "a decision without its source header"
        assert record.key == orjson.loads(record.value)["alert_id"].encode()
        assert record.partition == src[0] % 4  # the test's topics have 4 partitions
        assert src[1] >= last.get(src[0], -1), "decisions of one engine out of order"
        last[src[0]] = src[1]
    assert len(last) > 1, "every decision came from one correlation partition"
