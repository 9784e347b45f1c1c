"""Syslog: the RFC 5424 and RFC 3164 examples, PRI severity, and year inference for 3164."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schemas.adapters.base import ParseContext
from schemas.adapters.registry import read_records
from schemas.adapters.syslog import SyslogAdapter
from schemas.errors import BadTimestamp, BadValue, DecodeError, InvalidInput, MissingField
from schemas.models import Alert, Domain, Severity

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
RECEIVED = datetime(2024, 1, 1, 12, tzinfo=UTC)


def parse(
    line: str | bytes, transport: datetime | None = RECEIVED, tz: timezone | ZoneInfo = UTC
) -> Alert:
    raw = line.encode() if isinstance(line, str) else line
    ctx = ParseContext(record_id="s:1", transport_time=transport, default_tz=tz)
    out = SyslogAdapter().parse(raw, ctx)
    assert len(out) == 1 and isinstance(out[0], Alert)
    return out[0]


def test_rfc5424_examples() -> None:
    records = list(read_records(FIXTURES / "syslog_rfc5424.log", "syslog"))
    alerts = [parse(r.raw, transport=None) for r in records]
    su, doughnut, app, app_sd = alerts
    assert su.time == datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC)
    assert (su.asset, su.signature) == ("mymachine.example.com", "su:ID47")
    assert su.title == "'su root' failed for lonvick on /dev/pts/8"  # BOM dropped
    assert su.severity is Severity.CRITICAL  # PRI 34: auth.crit
    assert su.domain is Domain.OPS
    assert doughnut.time == datetime(2003, 8, 24, 12, 14, 15, 3, tzinfo=UTC)
    assert (doughnut.asset, doughnut.signature) == ("192.0.2.1", "myproc")
    assert doughnut.severity is Severity.LOW  # 165 % 8 = 5 notice
    assert app.title == "An application event log entry..."
    assert app_sd.title == "" and app_sd.signature == "evntslog:ID47"
    assert su.raw == records[0].raw.decode()


def test_rfc3164_examples() -> None:
    records = list(read_records(FIXTURES / "syslog_rfc3164.log", "syslog"))
    su = parse(records[0].raw)
    assert su.time == datetime(2023, 10, 11, 22, 14, 15, tzinfo=UTC)
    assert (su.asset, su.signature, su.severity) == ("mymachine", "su", Severity.CRITICAL)
    assert su.title == "'su root' failed for lonvick on /dev/pts/8"
    bfg = parse(records[1].raw)
    assert (bfg.asset, bfg.signature, bfg.title) == ("10.0.0.99", "syslog", "Use the BFG!")
    assert bfg.time == datetime(2024, 2, 5, 17, 32, 18, tzinfo=UTC)
    parse(records[2].raw)  # the RFC's relayed oddity still yields a typed result
    with pytest.raises(BadTimestamp):
        parse(records[3].raw)  # starts with a year: not an RFC 3164 header


def test_rfc3164_tag_with_pid_and_default_tz() -> None:
    line = "<86>Mar  3 04:05:06 bastion sshd[4242]: Failed password for root from 198.51.100.7"
    result = parse(
        line, transport=datetime(2024, 3, 3, 10, tzinfo=UTC), tz=ZoneInfo("Europe/Vienna")
    )
    assert result.signature == "sshd"
    assert result.title == "Failed password for root from 198.51.100.7"
    assert result.time == datetime(2024, 3, 3, 3, 5, 6, tzinfo=UTC)  # CET is UTC+1
    assert result.severity is Severity.INFO  # 86 % 8 = 6


def test_rfc3164_without_pri_is_user_notice() -> None:
    result = parse("Jan 15 10:00:00 host1 cron[1]: job done")
    assert result.severity is Severity.LOW


@pytest.mark.parametrize(
    ("stamp", "transport", "year"),
    [
        (
            "Dec 31 23:59:59",
            datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC),
            2024,
        ),  # received after New Year
        ("Jan  1 00:00:01", datetime(2024, 12, 31, 23, 59, 58, tzinfo=UTC), 2025),  # sender ahead
        ("Jun 15 12:00:00", datetime(2024, 6, 15, 12, tzinfo=UTC), 2024),
        ("Feb 29 12:00:00", datetime(2024, 3, 1, tzinfo=UTC), 2024),
    ],
)
def test_rfc3164_year_follows_transport_time(stamp: str, transport: datetime, year: int) -> None:
    assert parse(f"<13>{stamp} h app: x", transport=transport).time.year == year


def test_rfc3164_year_needs_transport_time() -> None:
    with pytest.raises(BadTimestamp):
        parse("<13>Oct 11 22:14:15 mymachine su: x", transport=None)


def test_rfc3164_transport_time_is_not_the_wall_clock() -> None:
    old = parse("<13>Oct 11 22:14:15 h su: x", transport=datetime(1999, 12, 1, tzinfo=UTC))
    assert old.time.year == 1999


def test_rfc5424_nil_timestamp_uses_transport_time() -> None:
    result = parse("<14>1 - host app - - - hello")
    assert result.time == RECEIVED
    with pytest.raises(BadTimestamp):
        parse("<14>1 - host app - - - hello", transport=None)


def test_rfc5424_escaped_structured_data() -> None:
    line = r'<14>1 2024-01-01T00:00:00+01:00 h a 1 M [x@1 k="a \"]\" b"][y@1 z="\\"] msg'
    result = parse(line)
    assert result.title == "msg"
    assert result.time == datetime(2023, 12, 31, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("", MissingField),
        ("<192>Oct 11 22:14:15 h su: x", BadValue),
        ("<1x>Oct 11 22:14:15 h su: x", DecodeError),
        ("<13>Foo 11 22:14:15 h su: x", BadTimestamp),
        ("<13>Feb 30 22:14:15 h su: x", BadTimestamp),
        ("<13>Oct 11 25:14:15 h su: x", BadTimestamp),
        ("<14>1 2024-01-01T00:00:00Z h", DecodeError),
        ("<14>1 2024-01-01T00:00:00Z - app - - - x", MissingField),
        ("<14>1 2024-13-01T00:00:00Z h app - - - x", BadTimestamp),
        ("<14>1 2150-01-01T00:00:00Z h app - - - x", BadTimestamp),
        ("<14>1 2024-01-01T00:00:00Z h app - - [unterminated x", DecodeError),
        ("<14>1 2024-01-01T00:00:00Z h app - - oops", DecodeError),
        ("<14>1 2024-01-01T00:00:00Z h app - - -x", DecodeError),
    ],
)
def test_bad_syslog(line: str, error: type[InvalidInput]) -> None:
    with pytest.raises(error):
        parse(line)


def test_non_utf8_syslog() -> None:
    with pytest.raises(DecodeError):
        parse(b"<13>Oct 11 22:14:15 h su: \xff\xfe")


def test_far_offset_is_converted_to_utc() -> None:
    result = parse("<14>1 2024-01-01T00:00:00-12:00 h a - - - x")
    assert result.time == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert result.time.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("content", "signature", "title"),
    [
        ("ifmgr[77]: uplink Gi0/1 down", "ifmgr", "uplink Gi0/1 down"),
        ("ifmgr[77] uplink Gi0/1 down", "ifmgr", "uplink Gi0/1 down"),  # rsyslog re-emitting RFC 5424
        ("%LINK-3-UPDOWN: Interface Gi0/1 down", "%LINK-3-UPDOWN", "Interface Gi0/1 down"),
        ("uplink Gi0/1 down", "syslog", "uplink Gi0/1 down"),  # no tag: the first word is not one
        ("[12.5] kernel panic", "syslog", "[12.5] kernel panic"),
    ],
)
def test_rfc3164_tag_forms(content: str, signature: str, title: str) -> None:
    result = parse(f"<187>May  1 12:00:00 core-sw1 {content}")
    assert (result.signature, result.title) == (signature, title)
