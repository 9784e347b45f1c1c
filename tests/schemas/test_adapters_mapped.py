"""Generic csv/jsonl formats with a `--map` spec, and the AIT-ADS CSV adapter's edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from schemas.adapters.base import ParseContext
from schemas.adapters.mapspec import MapSpec
from schemas.adapters.registry import get_adapter
from schemas.errors import (
    BadTimestamp,
    BadValue,
    DecodeError,
    InvalidInput,
    MapSpecError,
    MissingField,
)
from schemas.models import Alert, Domain, Severity, Status

HUAWEI_MAP = "time=start_timestamp,asset=device_id,signature=alarm_id,end=end_timestamp,domain:=ops"
HUAWEI_COLUMNS = "alarm_id,device_id,start_timestamp,end_timestamp"


def csv_alert(
    line: str, spec: str = HUAWEI_MAP, columns: str = HUAWEI_COLUMNS, **ctx: Any
) -> Alert:
    adapter = get_adapter("csv", {"map": spec, "columns": columns})
    out = adapter.parse(
        line.encode(), ParseContext(record_id=ctx.pop("record_id", "Alarm.csv:2"), **ctx)
    )
    assert len(out) == 1 and isinstance(out[0], Alert)
    return out[0]


def jsonl_alert(obj: Any, spec: str, **ctx: Any) -> Alert:
    out = get_adapter("jsonl", {"map": spec}).parse(
        orjson.dumps(obj), ParseContext(record_id="e.jsonl:3", **ctx)
    )
    assert len(out) == 1 and isinstance(out[0], Alert)
    return out[0]


def test_huawei_row() -> None:
    result = csv_alert("4,404,15,15")
    assert result.id == "Alarm.csv:2"
    assert result.time == datetime(1970, 1, 1, 0, 0, 15, tzinfo=UTC)
    assert result.ended_at == result.time
    assert (result.asset, result.signature, result.domain, result.source) == (
        "404",
        "4",
        Domain.OPS,
        "csv",
    )
    assert result.raw == "4,404,15,15"


def test_map_spec_parsing() -> None:
    spec = MapSpec.parse(
        " time=ts , asset=host.name,signature=rule.id,domain:=security,severity:=High "
    )
    assert spec.columns == {"time": "ts", "asset": "host.name", "signature": "rule.id"}
    assert spec.literals == {"domain": Domain.SECURITY, "severity": Severity.HIGH}


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "time=a,asset=b,signature=c",  # no domain
        "time=a,asset=b,signature=c,domain:=both",
        "time=a,asset=b,signature=c,domain:=ops,colour=d",
        "time=a,asset=b,signature=c,domain:=ops,asset=e",
        "time=a,asset=b,signature=c,domain:=ops,title",
        "time=a,asset=b,signature=c,domain:=ops,title=",
        "time=a,asset=b,signature=c,domain:=ops,severity:=spicy",
        "time=a,asset=b,signature=c,domain:=ops,status:=maybe",
        "time:=2150-01-01T00:00:00Z,asset=b,signature=c,domain:=ops",
    ],
)
def test_bad_map_specs(spec: str) -> None:
    with pytest.raises(MapSpecError):
        get_adapter("jsonl", {"map": spec})


def test_map_column_must_exist_in_header() -> None:
    with pytest.raises(MapSpecError, match="no column 'nope'"):
        get_adapter("csv", {"map": "time=nope,asset=a,signature=s,domain:=ops", "columns": "a,s"})
    with pytest.raises(MapSpecError):
        get_adapter("csv", {"map": HUAWEI_MAP})  # no header
    with pytest.raises(MapSpecError):
        get_adapter("csv", {"map": HUAWEI_MAP, "columns": "a,a"})


def test_csv_all_fields_and_quoting() -> None:
    columns = "when,stop,host,ip,sig,text,sev,dom,tool,key,state,mac,dev,src,ref,fqdn"
    spec = (
        "time=when,end=stop,asset=host,ip=ip,signature=sig,title=text,severity=sev,domain=dom,"
        "source=tool,id=key,status=state,mac=mac,device_id=dev,src_ip=src,ref=ref,hostname=fqdn"
    )
    line = (
        '2024-01-01T01:00:00+01:00,1704070800.5,web,10.0.0.1,S1,"Disk, full ""!""",critical,'
        "Security,nagios,K-1,resolved,aa:bb,D9,203.0.113.9,K-0,web.example.org"
    )
    result = csv_alert(line, spec, columns)
    assert result.time == datetime(2024, 1, 1, tzinfo=UTC)
    assert result.ended_at == datetime(2024, 1, 1, 1, 0, 0, 500000, tzinfo=UTC)
    assert result.title == 'Disk, full "!"'
    assert (result.severity, result.domain, result.status) == (
        Severity.CRITICAL,
        Domain.SECURITY,
        Status.RESOLVED,
    )
    assert (result.id, result.source, result.ref) == ("K-1", "nagios", "K-0")
    assert (result.mac, result.device_id, result.src_ip, result.hostname) == (
        "aa:bb",
        "D9",
        "203.0.113.9",
        "web.example.org",
    )


def test_csv_optional_empty_cells_fall_back() -> None:
    spec = "time=t,asset=a,signature=s,domain:=ops,source=src,title=x,id=i"
    result = csv_alert("5,a1,s1,,,", spec, "t,a,s,src,x,i")
    assert (result.source, result.title, result.id) == ("csv", "", "Alarm.csv:2")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("4,404,15", DecodeError),
        ("4,404,15,15,9", DecodeError),
        ('4,"404,15,15', DecodeError),
        ("4,404,,15", BadTimestamp),
        ("4,404,-5,15", BadTimestamp),
        ("4,404,nan,15", BadTimestamp),
        ("4,404,inf,15", BadTimestamp),
        ("4,404,1e300,15", BadTimestamp),
        ("4,404,4102444800,15", BadTimestamp),
        ("4,404,soon,15", BadTimestamp),
        ("4,,15,15", MissingField),
        (",404,15,15", MissingField),
    ],
)
def test_bad_csv_rows(line: str, error: type[InvalidInput]) -> None:
    with pytest.raises(error):
        csv_alert(line)


def test_csv_iso_time_without_zone_uses_default_tz() -> None:
    spec = "time=t,asset=a,signature=s,domain:=ops"
    result = csv_alert(
        "2024-06-01 12:00:00,a,s", spec, "t,a,s", default_tz=timezone(timedelta(hours=-5))
    )
    assert result.time == datetime(2024, 6, 1, 17, tzinfo=UTC)


def test_jsonl_dotted_paths_nested_and_flat() -> None:
    spec = "time=ts,asset=host.name,signature=rule.id,severity=level,domain:=security,ip=host.ip"
    nested = jsonl_alert(
        {
            "ts": 1700000000,
            "host": {"name": "h1", "ip": "10.1.1.1"},
            "rule": {"id": 77},
            "level": "warning",
        },
        spec,
    )
    flat = jsonl_alert(
        {
            "ts": "1700000000",
            "host.name": "h1",
            "host.ip": "10.1.1.1",
            "rule.id": "77",
            "level": "Warning",
        },
        spec,
    )
    for result in (nested, flat):
        assert result.time == datetime.fromtimestamp(1700000000, tz=UTC)
        assert (result.asset, result.signature, result.ip) == ("h1", "77", "10.1.1.1")
        assert (
            result.severity is Severity.MEDIUM
            and result.id == "e.jsonl:3"
            and result.source == "jsonl"
        )


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        ({"ts": 1, "host": {"name": ["h"]}, "rule": {"id": "r"}}, BadValue),
        ({"ts": 1, "host": {"name": "h"}, "rule": {"id": {}}}, BadValue),
        ({"ts": 1, "host": {"name": "h"}}, MissingField),
        ({"ts": True, "host": {"name": "h"}, "rule": {"id": "r"}}, BadTimestamp),
        ({"host": {"name": "h"}, "rule": {"id": "r"}}, BadTimestamp),
        ({"ts": 1, "host": {"name": "h"}, "rule": {"id": "r"}, "level": "loud"}, BadValue),
    ],
)
def test_bad_jsonl_records(obj: dict[str, Any], error: type[InvalidInput]) -> None:
    with pytest.raises(error):
        jsonl_alert(obj, "time=ts,asset=host.name,signature=rule.id,severity=level,domain:=ops")


@pytest.mark.parametrize(
    ("domain", "status", "expected"),
    [
        ("security", "firing", (Domain.SECURITY, Status.FIRING)),  # exact: the fast path
        ("ops", "resolved", (Domain.OPS, Status.RESOLVED)),
        (" Security ", "FIRING", (Domain.SECURITY, Status.FIRING)),  # trimmed, any case
        ("OPS", " Resolved", (Domain.OPS, Status.RESOLVED)),
        ("security", "", (Domain.SECURITY, Status.FIRING)),  # empty: the default
        ("security", None, (Domain.SECURITY, Status.FIRING)),
    ],
)
def test_jsonl_domain_and_status_values(domain: str, status: str | None, expected: tuple[Domain, Status]) -> None:
    obj = {"ts": 1, "h": "a", "s": "r", "d": domain, "st": status}
    alert = jsonl_alert(obj, "time=ts,asset=h,signature=s,domain=d,status=st")
    assert (alert.domain, alert.status) == expected


@pytest.mark.parametrize(
    "obj",
    [
        {"d": "securityy"},
        {"d": "Security", "st": "open"},
        {"d": 1},
        {"d": ["security"]},
        {"d": "security", "st": {"firing": True}},
        {"d": None},  # domain is required
        {"d": "  "},
    ],
)
def test_bad_jsonl_domain_and_status(obj: dict[str, Any]) -> None:
    with pytest.raises((BadValue, MissingField)):
        jsonl_alert({"ts": 1, "h": "a", "s": "r", **obj}, "time=ts,asset=h,signature=s,domain=d,status=st")


def test_jsonl_rejects_non_objects() -> None:
    adapter = get_adapter("jsonl", {"map": "time=t,asset=a,signature=s,domain:=ops"})
    for raw in (b"[1, 2]", b'"text"', b"{", b"", b"\xff"):
        with pytest.raises(DecodeError):
            adapter.parse(raw, ParseContext(record_id="x"))


def test_aitads_columns_option_and_quoted_rows() -> None:
    adapter = get_adapter("aitads", {"columns": "event_label,time_label,short,host,ip,name,time"})
    raw = b'dirb,attack,S-Scan,"web,1",10.0.0.2,"Suricata: ET SCAN ""x""",1642723347.25'
    out = adapter.parse(raw, ParseContext(record_id="k:0:1"))
    result = out[0]
    assert isinstance(result, Alert)
    assert (result.source, result.asset, result.signature) == ("suricata", "web,1", "S-Scan")
    assert result.time == datetime(2022, 1, 21, 0, 2, 27, 250000, tzinfo=UTC)
    assert "dirb" not in result.raw and "attack" not in result.raw
    blank = adapter.parse(raw.replace(b"dirb,attack", b","), ParseContext(record_id="k:0:1"))
    assert blank[0] == result


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("1642723347,ClamAV database update,1.2.3.4,mail,W-Sys-Cav,x,-", MissingField),
        ("1642723347,Wazuh: x,1.2.3.4,,W-Sys-Cav,x,-", MissingField),
        (",Wazuh: x,1.2.3.4,mail,W-Sys-Cav,x,-", BadTimestamp),
        ("-1,Wazuh: x,1.2.3.4,mail,W-Sys-Cav,x,-", BadTimestamp),
        ("1642723347,Wazuh: x,1.2.3.4,mail,W-Sys-Cav", DecodeError),
    ],
)
def test_bad_aitads_rows(line: str, error: type[InvalidInput]) -> None:
    with pytest.raises(error):
        get_adapter("aitads", {}).parse(line.encode(), ParseContext(record_id="x"))
