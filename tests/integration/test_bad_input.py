"""Bad input on the wire goes to the DLQ with a reason, gets an `invalid` decision, and the
worker keeps going (garbage, empty values, tombstones, huge records, unknown formats)."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import DATA, Names, Tail, WorkerProcess, until

pytestmark = pytest.mark.integration


def _wazuh(n: int) -> list[bytes]:
    lines = (DATA / "wazuh-ldsv1" / "ossec_spiral.json").read_bytes().splitlines()
    return lines[:n]


async def test_bad_records_are_dead_lettered_and_the_worker_keeps_going(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    # a 1 s idle timeout lets the wall clock close the good alerts' windows at the end
    worker = workers(names.worker_env(SOCNOC_IDLE_TIMEOUT="1"))
    await worker.wait_partitions()
    good = _wazuh(3)
    topic = names.alerts
    huge = b'{"rule": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    bad: list[tuple[bytes | None, list[tuple[str, bytes]], str]] = [
        (b"\x00\xffnot json at all", [], "DecodeError"),
        (b"", [], "DecodeError"),
        (None, [], "DecodeError"),  # a tombstone
        (b"   \n", [], "DecodeError"),
        (huge, [], "RecordTooLarge"),
        (b'{"foo": 1}', [], "DecodeError"),  # JSON of no known format
        (b"[1, 2, 3]", [], "DecodeError"),
        (good[1], [("socnoc-format", b"no-such-format")], "InvalidInput"),
        (b'{"timestamp": "2020-03-04T18:02:04+0000", "rule": {}, "agent": {}}', [], ""),
    ]
    sent: dict[str, str] = {}  # alert id -> expected error class ("" = any invalid)
    meta = await producer.send_and_wait(topic, good[0], partition=0)
    for value, headers, error in bad:
        meta = await producer.send_and_wait(
            topic, value, key=b"k" if value is None else None, partition=0, headers=headers
        )
        sent[f"{topic}:0:{meta.offset}"] = error
    # a context record that is not an asset: dead-lettered, but it is not an alert
    ctx_meta = await producer.send_and_wait(names.assets, b"{not an asset", partition=0)
    await producer.send_and_wait(topic, good[2], partition=0)
    good_ids = [orjson.loads(line)["id"] for line in (good[0], good[2])]

    async with Tail(names.bootstrap, names.decisions, names.dlq) as tail:

        def decided() -> bool:
            ids = {d["alert_id"] for d in tail.values(names.decisions)}
            letters = tail.values(names.dlq)
            return set(sent) | set(good_ids) <= ids and len(letters) >= len(sent) + 1

        await until(decided, 60, "decisions of every good and bad record", worker)
        decisions = tail.values(names.decisions)
        letters = tail.values(names.dlq)

    counts = Counter(d["alert_id"] for d in decisions)
    assert all(n == 1 for n in counts.values()), "an alert was decided twice"
    by_id = {d["alert_id"]: d for d in decisions}
    for alert_id, error in sent.items():
        decision = by_id[alert_id]
        assert decision["disposition"] == "invalid", decision
        assert decision["reason"], decision
        if error:
            assert decision["reason"].startswith(f"{error}: "), decision
    for alert_id in good_ids:
        assert by_id[alert_id]["disposition"] != "invalid"

    dlq = {f"{d['topic']}:{d['partition']}:{d['offset']}": d for d in letters}
    assert len(dlq) == len(letters), "a record was dead-lettered twice"
    for alert_id, error in sent.items():
        letter = dlq[alert_id]
        assert letter["reason"] == by_id[alert_id]["reason"]
        assert letter["error"] == (error or letter["error"])
        assert letter["schema_version"] == 1
    assert base64.b64decode(dlq[f"{topic}:0:{min(int(k.rsplit(':', 1)[1]) for k in sent)}"]["raw"]) == (
        b"\x00\xffnot json at all"
    )
    huge_letter = next(d for d in letters if d["error"] == "RecordTooLarge")
    assert len(base64.b64decode(huge_letter["raw"])) == 256 * 1024
    assert "keeps the first" in huge_letter["reason"]
    ctx_letter = dlq[f"{names.assets}:0:{ctx_meta.offset}"]
    assert ctx_letter["error"] == "DecodeError"
    assert f"{names.assets}:0:{ctx_meta.offset}" not in by_id  # not an alert: no decision

    status, body = await worker.health() or (0, {})
    assert status == 200, body
    assert all(stage["errors"] == 0 for stage in body["stages"].values()), body
    text = await worker.metrics()
    assert 'socnoc_dlq_records_total{error="RecordTooLarge"' in text
    assert worker.alive()
