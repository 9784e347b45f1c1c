"""Adapters on the real datasets: every line parses or is rejected with a typed error."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.adapters.base import ParseContext, Rejected
from schemas.adapters.registry import adapter_for_file, read_records
from schemas.errors import InvalidInput
from schemas.models import Alert, Domain, Severity

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
AITADS = DATA / "ait-ads" / "russellmitchell_alerts.csv"
WAZUH = DATA / "wazuh-ldsv1" / "ossec_spiral.json"
BGL = DATA / "loghub-bgl" / "BGL_2k.log"
HUAWEI = DATA / "huawei-25V_474N_Microwave" / "Alarm.csv"
HUAWEI_MAP = "time=start_timestamp,asset=device_id,signature=alarm_id,end=end_timestamp,domain:=ops"


def parse_file(
    path: Path, fmt: str, options: dict[str, str] | None = None
) -> tuple[list[Alert], Counter[str]]:
    adapter = adapter_for_file(path, fmt, options)
    alerts: list[Alert] = []
    errors: Counter[str] = Counter()
    for record in read_records(path, fmt):
        try:
            out = adapter.parse(record.raw, ParseContext(record_id=record.record_id))
        except InvalidInput as exc:
            errors[type(exc).__name__] += 1
            continue
        for item in out:
            if isinstance(item, Rejected):
                errors[type(item.error).__name__] += 1
            else:
                alerts.append(item)
    return alerts, errors


def test_aitads_every_row() -> None:
    alerts, errors = parse_file(AITADS, "aitads")
    assert not errors
    assert len(alerts) == 45_544
    assert Counter(a.source for a in alerts) == {
        "wazuh": 32_302,
        "suricata": 9_186,
        "aminer": 4_056,
    }
    first = alerts[0]
    assert first.id == "russellmitchell_alerts.csv:2"
    assert first.time == datetime.fromtimestamp(1642723347, tz=UTC)
    assert (first.asset, first.ip, first.signature) == ("mail", "172.19.130.4", "W-Sys-Cav")
    assert first.title == "Wazuh: ClamAV database update"
    assert first.domain is Domain.SECURITY
    assert first.raw == "1642723347,Wazuh: ClamAV database update,172.19.130.4,mail,W-Sys-Cav"
    assert alerts[-1].id == "russellmitchell_alerts.csv:45545"
    assert len({a.id for a in alerts}) == len(alerts)
    assert all(a.time.tzinfo is UTC for a in alerts)


def test_wazuh_every_line() -> None:
    alerts, errors = parse_file(WAZUH, "wazuh")
    assert not errors
    assert len(alerts) == 865
    first = alerts[0]
    assert first.id == "1588004527.10056355"
    assert first.time == datetime(2020, 3, 4, 18, 2, 4, 347123, tzinfo=UTC)
    assert (first.asset, first.src_ip, first.signature) == ("user-0", "192.168.10.81", "86601")
    assert first.title == "Suricata: Alert - SURICATA HTTP Host header invalid"
    assert first.severity is Severity.INFO  # level 3
    levels = Counter(a.severity for a in alerts)
    assert levels == {Severity.LOW: 674, Severity.INFO: 138, Severity.HIGH: 47, Severity.MEDIUM: 6}
    assert len({a.id for a in alerts}) == 865


def test_wazuh_file_through_auto_is_identical() -> None:
    direct, _ = parse_file(WAZUH, "wazuh")
    auto, errors = parse_file(WAZUH, "auto")
    assert not errors
    assert [a.model_dump() for a in auto] == [a.model_dump() for a in direct]


def test_bgl_every_line() -> None:
    alerts, errors = parse_file(BGL, "bgl")
    assert not errors
    assert len(alerts) == 2_000
    first = alerts[0]
    assert first.id == "BGL_2k.log:1"
    assert first.time == datetime(2005, 6, 3, 22, 42, 50, 675872, tzinfo=UTC)
    assert first.asset == "R02-M1-N0-C:J12-U11"
    assert first.signature == "KERNEL:instruction cache parity error corrected"
    assert first.severity is Severity.INFO
    assert first.raw.startswith("1117838570 2005.06.03 ")
    assert Counter(a.severity for a in alerts)[Severity.CRITICAL] == 347  # FATAL lines
    # Repeated messages with varying numbers share one signature.
    hummer = {a.signature for a in alerts if "double-hummer alignment exceptions" in a.title}
    assert hummer == {"KERNEL:<*> double-hummer alignment exceptions"}


def test_huawei_alarms_with_the_documented_map() -> None:
    alerts, errors = parse_file(HUAWEI, "csv", {"map": HUAWEI_MAP})
    assert not errors
    assert len(alerts) == 48_572
    first = alerts[0]
    assert first.id == "Alarm.csv:2"
    assert first.time == datetime(1970, 1, 1, 0, 0, 15, tzinfo=UTC)
    assert first.ended_at == first.time
    assert (first.asset, first.signature, first.domain) == ("404", "4", Domain.OPS)
    assert len({a.asset for a in alerts}) <= 474
    assert len({a.signature for a in alerts}) == 25
    assert all(a.ended_at is not None and a.ended_at >= a.time for a in alerts)


def _blank_columns(path: Path, out: Path, blank: Callable[[str], str]) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join([lines[0], *(blank(line) for line in lines[1:])]), encoding="utf-8")


def test_aitads_labels_are_never_read(tmp_path: Path) -> None:
    blanked = tmp_path / AITADS.name
    _blank_columns(AITADS, blanked, lambda line: line.rsplit(",", 2)[0] + ",,\n")
    original, _ = parse_file(AITADS, "aitads")
    without, errors = parse_file(blanked, "aitads")
    assert not errors
    assert [a.model_dump() for a in without] == [a.model_dump() for a in original]


def test_aitads_labels_swapped_change_nothing(tmp_path: Path) -> None:
    swapped = tmp_path / AITADS.name
    _blank_columns(AITADS, swapped, lambda line: line.rsplit(",", 2)[0] + ",x,dirb\n")
    original, _ = parse_file(AITADS, "aitads")
    other, _ = parse_file(swapped, "aitads")
    assert [a.model_dump() for a in other] == [a.model_dump() for a in original]


@pytest.mark.parametrize("label", ["-", "", "KERNDTLB"])
def test_bgl_label_is_never_read(tmp_path: Path, label: str) -> None:
    text = BGL.read_bytes().decode("utf-8")
    lines = text.split("\n")
    relabelled = "\n".join(f"{label} {line.partition(' ')[2]}" for line in lines)
    path = tmp_path / BGL.name
    path.write_bytes(relabelled.encode("utf-8"))
    original, _ = parse_file(BGL, "bgl")
    other, errors = parse_file(path, "bgl")
    assert not errors
    assert [a.model_dump() for a in other] == [a.model_dump() for a in original]
