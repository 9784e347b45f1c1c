"""The format registry and the file reader: ids, headers, blank lines, huge and empty files."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.adapters.base import MAX_RECORD_BYTES, ParseContext
from schemas.adapters.registry import (
    FORMATS,
    RawRecord,
    adapter_for_file,
    get_adapter,
    read_records,
)
from schemas.errors import DecodeError, InvalidInput, MapSpecError, RecordTooLarge, UnknownFormat
from schemas.models import Alert

MAP = "time=t,asset=a,signature=s,domain:=ops"


def test_formats_and_names() -> None:
    assert set(FORMATS) == {
        "auto",
        "alert",
        "wazuh",
        "suricata",
        "ecs",
        "alertmanager",
        "zabbix",
        "syslog",
        "bgl",
        "aitads",
        "csv",
        "jsonl",
    }
    for fmt in FORMATS:
        options = (
            {"map": MAP, "columns": "t,a,s"}
            if fmt == "csv"
            else {"map": MAP}
            if fmt == "jsonl"
            else {}
        )
        assert get_adapter(fmt, options).name == fmt


def test_unknown_format_and_options() -> None:
    with pytest.raises(UnknownFormat):
        get_adapter("splunk", {})
    with pytest.raises(UnknownFormat):
        list(read_records(Path("nowhere"), "splunk"))
    with pytest.raises(MapSpecError):
        get_adapter("wazuh", {"map": MAP})
    with pytest.raises(MapSpecError):
        get_adapter("csv", {"map": MAP, "colums": "t,a,s"})


def test_record_ids_are_physical_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.log"
    path.write_bytes(b"first\r\n\n   \nfourth\nfifth")
    records = list(read_records(path, "syslog"))
    assert records == [
        RawRecord("in.log:1", 1, b"first"),
        RawRecord("in.log:4", 4, b"fourth"),
        RawRecord("in.log:5", 5, b"fifth"),
    ]


def test_csv_header_is_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("\ufefft,a,s\n5,h,x\n\n7,h,y\n", encoding="utf-8")
    adapter = adapter_for_file(path, "csv", {"map": MAP})
    records = list(read_records(path, "csv"))
    assert [r.record_id for r in records] == ["a.csv:2", "a.csv:4"]
    alerts = [adapter.parse(r.raw, ParseContext(record_id=r.record_id))[0] for r in records]
    assert all(isinstance(a, Alert) for a in alerts)
    assert [a.id for a in alerts if isinstance(a, Alert)] == ["a.csv:2", "a.csv:4"]


def test_header_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("x,y\n1,2\n", encoding="utf-8")
    with pytest.raises(MapSpecError, match=r"b\.csv:1"):
        adapter_for_file(path, "csv", {"map": MAP})
    path.write_bytes(b"t,\xff\n")
    with pytest.raises(MapSpecError, match="UTF-8"):
        adapter_for_file(path, "csv", {"map": MAP})


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_files_yield_nothing(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    options = {"map": MAP} if fmt in ("csv", "jsonl") else {}
    adapter_for_file(path, fmt, options)
    assert list(read_records(path, fmt)) == []
    path.write_bytes(b"\n\n  \n")
    assert list(read_records(path, fmt)) == []


def test_empty_csv_still_checks_the_map(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(MapSpecError):
        adapter_for_file(path, "csv", {"map": "time=t"})


def test_ten_megabyte_line_is_one_rejected_record(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    huge = b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    path.write_bytes(b'{"a": 1}\n' + huge + b'\n{"b": 2}\n' + huge)
    records = list(read_records(path, "wazuh"))
    assert [r.line for r in records] == [1, 2, 3, 4]
    assert records[2].raw == b'{"b": 2}'
    assert len(records[1].raw) == MAX_RECORD_BYTES + 1
    adapter = get_adapter("wazuh", {})
    for record in (records[1], records[3]):
        with pytest.raises(RecordTooLarge):
            adapter.parse(record.raw, ParseContext(record_id=record.record_id))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_adapter_rejects_oversized_and_non_utf8(fmt: str) -> None:
    options = (
        {"map": MAP, "columns": "t,a,s"} if fmt == "csv" else {"map": MAP} if fmt == "jsonl" else {}
    )
    adapter = get_adapter(fmt, options)
    ctx = ParseContext(record_id="x", max_bytes=64)
    with pytest.raises(RecordTooLarge):
        adapter.parse(b"1" * 65, ctx)
    with pytest.raises(InvalidInput):
        adapter.parse(b"\xff\xfe\x00garbage", ParseContext(record_id="x"))
    with pytest.raises(DecodeError):
        adapter.parse(b"\xc3\x28", ParseContext(record_id="x"))
    with pytest.raises(InvalidInput):
        adapter.parse(b"", ParseContext(record_id="x"))


@pytest.mark.parametrize("fmt", ["auto", "wazuh", "suricata", "ecs", "alertmanager", "zabbix"])
@pytest.mark.parametrize(
    "raw",
    [
        b'{"timestamp": "2020-01-01T00:00:00Z", "rule": {"level"',
        b"[]",
        b"null",
        b"42",
        b'{"a": NaN}',
    ],
)
def test_json_adapters_reject_truncated_and_wrong_json(fmt: str, raw: bytes) -> None:
    with pytest.raises(DecodeError):
        get_adapter(fmt, {}).parse(raw, ParseContext(record_id="x"))


def test_a_record_is_a_value() -> None:
    record = RawRecord("in.log:3", 3, b"x")
    assert record == RawRecord("in.log:3", 3, b"x")
    assert hash(record) == hash(RawRecord("in.log:3", 3, b"x"))
    assert record != RawRecord("in.log:3", 3, b"y")
    assert record != ("in.log:3", 3, b"x")
    assert (record.record_id, record.line, record.raw) == ("in.log:3", 3, b"x")
    assert repr(record) == "RawRecord('in.log:3', 3, b'x')"
