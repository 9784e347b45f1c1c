"""Stream = replay: the Kafka path decides every alert and ends every incident exactly as
`socnoc replay` does on the same input, and it decides while the producer is still sending."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.models import Incident
from streams.control import end_of_input, wait_decoded
from streams.replay import build_engine, incident_record, load_context, replay
from tests.integration.conftest import Names, Tail, WorkerProcess, until
from tests.integration.datasets import aitads_rows, wazuh_lines, write_csv

pytestmark = pytest.mark.integration

BAD_ROWS = [b"this is not an AIT-ADS row", b"1642960000,Wazuh: no host,10.0.0.1,,W-X,-,-"]
_INCIDENT_ID = re.compile(r"INC-[A-Za-z0-9_.-]+-\d{8}T\d{6}Z-[0-9a-f]{8}")


def _replay(path: Path, fmt: str, out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    engine = build_engine(load_context(default_rules=True), "socnoc")
    replay([path], fmt, engine, out)
    decisions = [orjson.loads(x) for x in (out / "decisions.jsonl").read_bytes().splitlines()]
    incidents = [orjson.loads(x) for x in (out / "incidents.jsonl").read_bytes().splitlines()]
    return decisions, incidents


def _final_states(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last event of each incident, as its `incidents.jsonl` line."""
    last: dict[str, dict[str, Any]] = {}
    for event in events:
        held = last.get(event["incident_id"])
        if held is None or event["version"] > held["version"]:
            last[event["incident_id"]] = event
    fields = set(Incident.model_fields)
    return {
        k: incident_record(Incident.model_validate({f: v for f, v in e.items() if f in fields}))
        for k, e in last.items()
    }


def _by_id(incident: dict[str, Any]) -> str:
    return str(incident["incident_id"])


def _comparable(decision: dict[str, Any]) -> dict[str, Any]:
    keys = ("alert_id", "disposition", "incident_id", "incident_kind", "reason", "asset", "time")
    out = {k: decision.get(k) for k in keys}
    if out["time"] is not None:
        out["time"] = out["time"].replace("+00:00", "Z")
    return out


class _Ids:
    """Stream ids (`<topic>:<partition>:<offset>`, incident ids hashing them) -> file ids."""

    def __init__(self, alerts: dict[str, str]) -> None:
        self.alerts = alerts
        self.incidents: dict[str, str] = {}
        self._alert_re = re.compile("|".join(re.escape(k) for k in sorted(alerts, key=len, reverse=True)))

    def pair_incidents(self, stream: dict[str, dict[str, Any]], replayed: list[dict[str, Any]]) -> None:
        by_root = {i["root_cause"]["alert_id"]: i["incident_id"] for i in replayed if i["root_cause"]}
        for incident_id, state in stream.items():
            root = self.alerts.get(state["root_cause"]["alert_id"], "?")
            self.incidents[incident_id] = by_root.get(root, f"unpaired:{incident_id}")

    def text(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = _INCIDENT_ID.sub(lambda m: self.incidents.get(m.group(0), m.group(0)), value)
        return self._alert_re.sub(lambda m: self.alerts[m.group(0)], value)

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        out = {k: self.text(v) for k, v in record.items()}
        if isinstance(record.get("root_cause"), dict):
            out["root_cause"] = {k: self.text(v) for k, v in record["root_cause"].items()}
        return out


async def _paced(
    producer: AIOKafkaProducer, topic: str, values: list[bytes], rate: float
) -> tuple[list[int], float]:
    """Send to partition 0 in order at about `rate`/s; offsets and when the last was acked."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    futures = []
    for i, value in enumerate(values):
        futures.append(await producer.send(topic, value, partition=0))
        if i % 200 == 199:
            ahead = start + i / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
    metas = await asyncio.gather(*futures)
    return [m.offset for m in metas], time.monotonic()


async def _split_workers(workers: Callable[..., WorkerProcess], env: dict[str, str]) -> WorkerProcess:
    """A decode-only and a correlate-only worker (`SOCNOC_STAGES`); the correlating one."""
    decoder = workers({**env, "SOCNOC_STAGES": "decode"}, "decoder")
    correlator = workers({**env, "SOCNOC_STAGES": "correlate"}, "correlator")
    body = await decoder.wait_partitions()
    assert "decode" in body["stages"] and "correlate" not in body["stages"]

    async def correlating() -> bool:
        got = await correlator.health()
        return got is not None and got[0] == 200 and bool(got[1]["stages"].get("correlate", {}).get("partitions"))

    await until(correlating, 30, "the correlate-only worker to own its partitions", correlator)
    got = await correlator.health()
    assert got is not None and "decode" not in got[1]["stages"]
    return correlator


@pytest.mark.parametrize("layout", ["one worker", "stages on two processes"])
async def test_aitads_attack_slice_stream_equals_replay(
    names: Names,
    workers: Callable[..., WorkerProcess],
    producer: AIOKafkaProducer,
    tmp_path: Path,
    layout: str,
) -> None:
    """The default: one engine sees every asset (`SOCNOC_PARTITION_BY=single`); the same with
    decoding and correlation in separate workers (`SOCNOC_STAGES`)."""
    header, rows = aitads_rows()
    values = [row for _, row in rows]
    values[len(values) // 2 : len(values) // 2] = BAD_ROWS
    path = write_csv(tmp_path / "slice.csv", header, values)
    replayed, replayed_incidents = _replay(path, "aitads", tmp_path / "replay")
    assert replayed_incidents, "the slice holds the attack's first incident"

    settings_env = {"SOCNOC_INPUTS": orjson.dumps({names.alerts: {"format": "aitads"}}).decode()}
    if layout == "one worker":
        worker = workers(names.worker_env(**settings_env))
        await worker.wait_partitions()
    else:
        worker = await _split_workers(workers, names.worker_env(**settings_env))
    async with Tail(names.bootstrap, names.decisions, names.incidents) as tail:
        first_decision: list[float] = []

        async def watch() -> None:
            while not tail.records[names.decisions]:
                await asyncio.sleep(0.02)
            first_decision.append(time.monotonic())

        watcher = asyncio.create_task(watch())
        offsets, sent_at = await _paced(producer, names.alerts, values, rate=5000)
        await wait_decoded(names.settings(**settings_env), timeout_s=60)
        await end_of_input(names.settings(**settings_env))
        await until(
            lambda: len({r.key for r in tail.records[names.decisions]}) >= len(values),
            120,
            "a decision for every record",
            worker,
        )
        await watcher
        ids = _Ids(
            {f"{names.alerts}:0:{off}": f"{path.name}:{line}" for line, off in enumerate(offsets, 2)}
        )

        def incidents_as_replayed() -> list[dict[str, Any]]:
            finals = _final_states(tail.values(names.incidents))
            ids.pair_incidents(finals, replayed_incidents)
            return sorted((ids.record(s) for s in finals.values()), key=lambda i: i["incident_id"])

        # the last incident events may land a moment after the last decisions
        with contextlib.suppress(AssertionError):
            await until(lambda: incidents_as_replayed() == replayed_incidents, 10, "incidents")
        decisions = tail.values(names.decisions)
        stream_incidents = incidents_as_replayed()

    assert first_decision[0] < sent_at, "decisions only came after the producer finished"
    got = {d["alert_id"]: _comparable(ids.record(d)) for d in decisions}
    got = {ids.alerts[k]: v for k, v in got.items()}
    want = {d["alert_id"]: _comparable(d) for d in replayed}
    assert len(decisions) == len(want)
    mismatched = [k for k in want if got.get(k) != want[k]]
    assert not mismatched, (len(mismatched), want[mismatched[0]], got.get(mismatched[0]))
    assert stream_incidents == replayed_incidents


async def test_wazuh_by_asset_stream_equals_replay(
    names: Names,
    workers: Callable[..., WorkerProcess],
    producer: AIOKafkaProducer,
    tmp_path: Path,
) -> None:
    """Keyed by asset over 4 partitions, on native Wazuh records (their own ids): one asset,
    so partitioning cannot change what the engine sees."""
    lines = wazuh_lines()
    path = tmp_path / "ossec_spiral.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    replayed, replayed_incidents = _replay(path, "wazuh", tmp_path / "replay")
    # replay order is event time; a shipper sends in that order too
    order = {d["alert_id"]: i for i, d in enumerate(replayed)}
    ordered = sorted(lines, key=lambda x: (orjson.loads(x)["timestamp"], order[orjson.loads(x)["id"]]))

    env = {"SOCNOC_PARTITION_BY": "asset"}
    worker = workers(names.worker_env(**env))
    await worker.wait_partitions()
    async with Tail(names.bootstrap, names.decisions, names.incidents) as tail:
        await _paced(producer, names.alerts, ordered, rate=5000)
        await wait_decoded(names.settings(**env), timeout_s=60)
        await end_of_input(names.settings(**env))
        await until(
            lambda: len(tail.records[names.decisions]) >= len(lines), 60, "all decided", worker
        )
        with contextlib.suppress(AssertionError):
            await until(
                lambda: sorted(_final_states(tail.values(names.incidents)).values(), key=_by_id)
                == replayed_incidents,
                10,
                "incidents",
            )
        decisions = tail.values(names.decisions)
        events = tail.values(names.incidents)

    got = {d["alert_id"]: _comparable(d) for d in decisions}
    want = {d["alert_id"]: _comparable(d) for d in replayed}
    assert got == want
    finals = sorted(_final_states(events).values(), key=_by_id)
    assert finals == replayed_incidents
