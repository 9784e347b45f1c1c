"""Per-team incident topics: each owner team's topic gets exactly the incident events it owns,
with routing headers, and a `kill -9` mid-stream repeats none of the copies."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.records import EVENT_HEADER, INCIDENT_KIND_HEADER, OID_HEADER, OWNERS_HEADER, header
from tests.integration.conftest import Names, Tail, WorkerProcess, until
from tests.integration.datasets import aitads_rows, host_of

pytestmark = pytest.mark.integration


def _copies(tail: Tail, topic: str) -> list[tuple[str, int, str, dict[str, bytes | None]]]:
    """(incident id, version, event, routing headers) of each record on `topic`."""
    out = []
    for record in tail.records[topic]:
        value = orjson.loads(record.value)
        headers = {
            name: header(record.headers, name)
            for name in (OWNERS_HEADER, INCIDENT_KIND_HEADER, EVENT_HEADER, OID_HEADER)
        }
        out.append((value["incident_id"], value["version"], value["event"], headers))
    return out


async def test_team_topics_get_their_incidents_once_across_a_crash(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    soc, noc = f"{names.prefix}.incidents.soc", f"{names.prefix}.incidents.noc"
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
        SOCNOC_TEAM_TOPICS=orjson.dumps({"soc": soc, "noc": noc}).decode(),
        SOCNOC_BATCH_MAX_RECORDS="200",
        SOCNOC_IDLE_TIMEOUT="2",
    )
    first = workers(env, "first")
    await first.wait_partitions()
    _, rows = aitads_rows()
    async with Tail(names.bootstrap, names.decisions, names.incidents, soc, noc) as tail:
        for i, (_, row) in enumerate(rows):
            # One input partition, in event-time order: what happens here depends on the
            # routing only, not on how partitions interleave.
            await producer.send(names.alerts, row, key=host_of(row), partition=0)
            if i == len(rows) * 2 // 3:
                await producer.flush()
                await until(lambda: len(tail.records[names.incidents]) > 0, 60, "an incident", first)
                first.kill9()
        await producer.flush()
        second = workers(env, "second")
        await second.wait_partitions()

        def all_decided() -> bool:
            return len({r.key for r in tail.records[names.decisions]}) >= len(rows)

        await until(all_decided, 180, "every decision", second)
        await asyncio.sleep(3)  # checkpoint intervals: a repeated copy would show up
        main = _copies(tail, names.incidents)
        teams = {soc: _copies(tail, soc), noc: _copies(tail, noc)}

    assert main, "the slice holds an attack: expected incident events"
    values = [orjson.loads(r.value) for r in tail.records[names.incidents]]
    events = {(e["incident_id"], e["version"]): e for e in values}
    assert Counter((i, v) for i, v, _, _ in main).most_common(1)[0][1] == 1
    for team, topic in (("soc", soc), ("noc", noc)):
        got = [(i, v) for i, v, _, _ in teams[topic]]
        assert len(got) == len(set(got)), f"{team}: a copy went out twice"
        wanted = {key for key, event in events.items() if team in event["owners"]}
        assert set(got) == wanted, team
        for i, v, event, headers in teams[topic]:
            owners = events[(i, v)]["owners"]
            assert headers[OWNERS_HEADER] == ",".join(owners).encode()
            assert headers[INCIDENT_KIND_HEADER] == events[(i, v)]["kind"].encode()
            assert headers[EVENT_HEADER] == event.encode()
            assert headers[OID_HEADER] == f"i:{i}:{v}@{topic}".encode()
    for i, v, event, headers in main:
        assert headers[OID_HEADER] == f"i:{i}:{v}".encode()
        assert headers[EVENT_HEADER] == event.encode()
