"""The JSON adapters (suricata, ecs, alertmanager, zabbix, wazuh, auto) on documented samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.adapters.base import ParseContext, Parsed, Rejected
from schemas.adapters.registry import get_adapter, read_records
from schemas.errors import BadTimestamp, BadValue, DecodeError, InvalidInput, MissingField
from schemas.models import Alert, Domain, Severity, Status

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
WAZUH = Path(__file__).resolve().parents[2] / "examples" / "data" / "wazuh-ldsv1"


def fixture(name: str, fmt: str) -> list[Parsed | InvalidInput]:
    adapter = get_adapter(fmt, {})
    out: list[Parsed | InvalidInput] = []
    for record in read_records(FIXTURES / name, fmt):
        try:
            out.append(adapter.parse(record.raw, ParseContext(record_id=record.record_id)))
        except InvalidInput as exc:
            out.append(exc)
    return out


def one(fmt: str, obj: Any, record_id: str = "t:1") -> Alert:
    out = get_adapter(fmt, {}).parse(orjson.dumps(obj), ParseContext(record_id=record_id))
    assert len(out) == 1
    assert isinstance(out[0], Alert)
    return out[0]


def alert(item: Parsed | InvalidInput) -> Alert:
    assert isinstance(item, list) and len(item) == 1 and isinstance(item[0], Alert), item
    return item[0]


# --- Suricata EVE -------------------------------------------------------------------------


def test_suricata_fixture() -> None:
    results = fixture("suricata_eve.json", "suricata")
    first = alert(results[0])
    assert first.id == "suricata_eve.json:1"
    assert first.time == datetime(2017, 4, 7, 21, 24, 37, 251547, tzinfo=UTC)
    assert (first.asset, first.ip, first.src_ip) == ("209.53.113.5", "209.53.113.5", "192.168.2.14")
    assert first.signature == "2018358"
    assert first.severity is Severity.MEDIUM
    assert first.domain is Domain.SECURITY
    assert alert(results[1]).severity is Severity.HIGH
    assert isinstance(results[3], BadValue)  # a flow event is not an alert


def test_suricata_naive_timestamp_uses_default_tz() -> None:
    record = (FIXTURES / "suricata_eve.json").read_bytes().splitlines()[1]
    tz = timezone(timedelta(hours=2))
    out = get_adapter("suricata", {}).parse(record, ParseContext(record_id="x", default_tz=tz))
    assert isinstance(out[0], Alert)
    assert out[0].time == datetime(2009, 11, 24, 19, 27, 9, 534255, tzinfo=UTC)


def test_suricata_sensor_host_is_the_asset() -> None:
    obj = orjson.loads((FIXTURES / "suricata_eve.json").read_bytes().splitlines()[0])
    obj["host"] = "sensor-1"
    result = one("suricata", obj)
    assert (result.asset, result.hostname, result.ip) == ("sensor-1", "sensor-1", "209.53.113.5")


# --- ECS -----------------------------------------------------------------------------------


def test_ecs_fixture() -> None:
    results = [alert(r) for r in fixture("ecs_alerts.json", "ecs")]
    hit, nested, by_score, recovered, plain = results
    assert hit.id == "5bd4a5b0c4f8e1f0a7b3c1d2e3f4a5b6"
    assert hit.time == datetime(2024, 1, 1, tzinfo=UTC)  # original_time, not @timestamp
    assert (hit.asset, hit.ip, hit.src_ip) == ("web-01", "10.0.0.5", "203.0.113.7")
    assert hit.signature == "4e85dc8a-3e41-40d8-bc28-91af7ac6cf60"
    assert hit.severity is Severity.HIGH
    assert hit.tactics == ("Credential Access",)
    assert hit.techniques == ("T1110", "T1110.001")
    assert (nested.id, nested.severity, nested.signature) == (
        "nested-uuid-2",
        Severity.CRITICAL,
        "ps-001",
    )
    assert (by_score.id, by_score.severity) == ("alert-3", Severity.LOW)
    assert recovered.status is Status.RESOLVED
    assert recovered.ended_at == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert plain.id == "ecs_alerts.json:5"  # neither uuid nor _id: the record id
    assert plain.severity is Severity.HIGH  # event.severity 80
    assert (plain.tactics, plain.techniques) == (("Discovery",), ("T1046",))


def test_ecs_bad_threat_shape() -> None:
    doc = {"@timestamp": "2024-01-01T00:00:00Z", "host": {"name": "h"}, "rule": {"id": "r"}}
    with pytest.raises(BadValue):
        one("ecs", {**doc, "kibana.alert.rule.threat": {"tactic": "x"}})
    with pytest.raises(BadValue):
        one("ecs", {**doc, "kibana.alert.risk_score": "high"})
    with pytest.raises(BadValue):
        one("ecs", {**doc, "kibana.alert.risk_score": 101})
    with pytest.raises(MissingField):
        one("ecs", {"@timestamp": "2024-01-01T00:00:00Z", "rule": {"id": "r"}})


# --- Alertmanager --------------------------------------------------------------------------


def test_alertmanager_fixture() -> None:
    results = fixture("alertmanager_webhook.json", "alertmanager")
    probe = alert(results[0])
    assert probe.id == "alertmanager_webhook.json:1#1"
    assert (probe.asset, probe.hostname) == ("https://server.example.org", "server.example.org")
    assert probe.severity is Severity.CRITICAL
    assert probe.title == "BlackBox Probe Failure: https://server.example.org"
    assert probe.ended_at is None and probe.status is Status.FIRING
    assert probe.fingerprint == "1a30ba71cca2921f"
    assert probe.domain is Domain.OPS
    test = alert(results[1])
    assert test.time == datetime(2018, 8, 3, 7, 52, 26, 739266, tzinfo=UTC)  # ns truncated
    assert test.title == "some description" and test.fingerprint is None
    resolved = results[2]
    assert isinstance(resolved, list) and len(resolved) == 2
    node, ssh = resolved
    assert isinstance(node, Alert) and isinstance(ssh, Alert)
    assert (node.id, ssh.id) == ("alertmanager_webhook.json:3#1", "alertmanager_webhook.json:3#2")
    assert node.status is Status.RESOLVED
    assert node.ended_at == datetime(2024, 3, 1, 10, 15, tzinfo=UTC)
    assert (node.asset, node.ip) == ("10.0.0.1:9100", "10.0.0.1")
    assert ssh.domain is Domain.SECURITY and ssh.asset == "bastion"


def _payload(*entries: Any) -> bytes:
    return orjson.dumps({"version": "4", "status": "firing", "receiver": "r", "alerts": entries})


def test_alertmanager_invalid_entry_is_rejected_alone() -> None:
    good = {
        "status": "firing",
        "labels": {"alertname": "A", "instance": "h"},
        "startsAt": "2024-01-01T00:00:00Z",
    }
    bad_time = {**good, "startsAt": "0001-01-01T00:00:00Z"}
    no_asset = {**good, "labels": {"alertname": "A"}}
    out = get_adapter("alertmanager", {}).parse(
        _payload(good, bad_time, "nope", no_asset, good), ParseContext(record_id="k:0:7")
    )
    assert [type(x).__name__ for x in out] == ["Alert", "Rejected", "Rejected", "Rejected", "Alert"]
    assert [x.id if isinstance(x, Alert) else x.alert_id for x in out] == [
        f"k:0:7#{i}" for i in range(1, 6)
    ]
    rejected = [x for x in out if isinstance(x, Rejected)]
    assert isinstance(rejected[0].error, BadTimestamp)
    assert isinstance(rejected[1].error, BadValue)
    assert isinstance(rejected[2].error, MissingField)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"version": "4", "alerts": []}, MissingField),
        ({"version": "4"}, MissingField),
        ({"version": "4", "alerts": {}}, BadValue),
        ({"version": "3", "alerts": [{}]}, BadValue),
    ],
)
def test_alertmanager_bad_payloads(payload: dict[str, Any], error: type[InvalidInput]) -> None:
    with pytest.raises(error):
        get_adapter("alertmanager", {}).parse(orjson.dumps(payload), ParseContext(record_id="x"))


def test_alertmanager_resolved_without_end() -> None:
    entry = {
        "status": "resolved",
        "labels": {"alertname": "A", "node": "n1", "severity": "bogus"},
        "startsAt": "2024-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }
    out = get_adapter("alertmanager", {}).parse(_payload(entry), ParseContext(record_id="x"))
    item = out[0]
    assert isinstance(item, Alert)
    assert item.ended_at is None and item.status is Status.RESOLVED
    assert item.severity is Severity.MEDIUM and item.asset == "n1" and item.title == "A"


# --- Zabbix --------------------------------------------------------------------------------


def test_zabbix_fixture() -> None:
    problem, recovery, old, old_recovery, orphan = (
        alert(r) for r in fixture("zabbix_problems.ndjson", "zabbix")
    )
    assert problem.id == "42"
    assert problem.time == datetime(2018, 2, 22, 12, 58, 5, 123456, tzinfo=UTC)
    assert (problem.asset, problem.hostname) == ("Host B", "Host B visible")
    assert problem.severity is Severity.MEDIUM  # 3 average
    assert problem.status is Status.FIRING and problem.domain is Domain.OPS
    assert recovery.id == "43" and recovery.ref == "42"
    assert recovery.status is Status.RESOLVED
    assert recovery.asset == "Host B" and recovery.signature == problem.signature
    assert old.asset == "Host B" and old.hostname is None
    assert old_recovery.ref == "44" and old_recovery.asset == "Host B"
    assert orphan.asset == "zabbix:41" and orphan.ref == "41"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"value": 2}, BadValue),
        ({"severity": 9}, BadValue),
        ({"hosts": []}, MissingField),
        ({"hosts": "Host B"}, BadValue),
        ({"ns": -1}, BadTimestamp),
        ({"clock": -5}, BadTimestamp),
        ({"clock": 5_000_000_000}, BadTimestamp),
        ({"clock": "soon"}, BadValue),
        ({"eventid": None}, MissingField),
        ({"value": True}, BadValue),
    ],
)
def test_zabbix_bad_fields(change: dict[str, Any], error: type[InvalidInput]) -> None:
    base = orjson.loads((FIXTURES / "zabbix_problems.ndjson").read_bytes().splitlines()[0])
    with pytest.raises(error):
        one("zabbix", {**base, **change})


# --- Wazuh ---------------------------------------------------------------------------------


def _wazuh_record() -> dict[str, Any]:
    line = (WAZUH / "ossec_spiral.json").read_bytes().splitlines()[1]
    return dict(orjson.loads(line))


def test_wazuh_mitre_and_agent_ip() -> None:
    obj = _wazuh_record()
    obj["rule"] = {
        **obj["rule"],
        "mitre": {"id": ["T1110"], "tactic": ["Credential Access"], "technique": ["Brute Force"]},
    }
    obj["agent"] = {"id": "001", "name": "web", "ip": "10.0.0.8"}
    result = one("wazuh", obj)
    assert result.tactics == ("Credential Access",) and result.techniques == ("T1110",)
    assert (result.asset, result.ip, result.src_ip) == ("web", "10.0.0.8", "192.168.10.81")
    assert result.id == obj["id"] and result.severity is Severity.MEDIUM  # level 8


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("rule", "level"), 16, BadValue),
        (("rule", "level"), "high", BadValue),
        (("rule", "level"), None, MissingField),
        (("agent", "name"), "", MissingField),
        (("agent", "name"), 7, BadValue),
        (("timestamp",), "yesterday", BadTimestamp),
        (("timestamp",), "2150-01-01T00:00:00+0000", BadTimestamp),
        (("timestamp",), "1960-01-01T00:00:00+0000", BadTimestamp),
        (("timestamp",), 1e300, BadTimestamp),
        (("timestamp",), -1.5, BadTimestamp),
        (("timestamp",), [], BadTimestamp),
        (("id",), None, MissingField),
        (("rule",), [], BadValue),
    ],
)
def test_wazuh_bad_fields(path: tuple[str, ...], value: Any, error: type[InvalidInput]) -> None:
    obj = _wazuh_record()
    target = obj
    for key in path[:-1]:
        target[key] = dict(target[key])
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(error):
        one("wazuh", obj)


def test_parse_does_not_mutate_or_keep_references() -> None:
    raw = (WAZUH / "ossec_spiral.json").read_bytes().splitlines()[0]
    copy = bytes(raw)
    result = get_adapter("wazuh", {}).parse(raw, ParseContext(record_id="x"))
    assert raw == copy
    assert isinstance(result[0], Alert) and result[0].raw == raw.decode()


# --- auto ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("suricata_eve.json", "suricata"),
        ("ecs_alerts.json", "ecs"),
        ("alertmanager_webhook.json", "alertmanager"),
        ("zabbix_problems.ndjson", "zabbix"),
    ],
)
def test_auto_detects_like_the_explicit_format(name: str, fmt: str) -> None:
    def dump(results: list[Parsed | InvalidInput]) -> list[Any]:
        return [
            type(r).__name__
            if isinstance(r, InvalidInput)
            else [x.model_dump() if isinstance(x, Alert) else x.alert_id for x in r]
            for r in results
        ]

    assert dump(fixture(name, "auto")) == dump(fixture(name, fmt))


def test_auto_rejects_unknown_shapes() -> None:
    with pytest.raises(DecodeError):
        get_adapter("auto", {}).parse(b'{"hello": "world"}', ParseContext(record_id="x"))
