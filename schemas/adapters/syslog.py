"""Syslog lines, RFC 5424 and RFC 3164 (BSD) -> Alert.

Severity comes from PRI (a 3164 line without PRI is `user.notice`, PRI 13, as RFC 3164
4.3.3 prescribes for relays). Asset is HOSTNAME; signature is APP-NAME (+ `:MSGID` for 5424)
or the 3164 TAG; the message is the title. RFC 3164 timestamps have no year and no zone:
they are read in `ctx.default_tz`, in the year that puts them closest to
`ctx.transport_time` (so a `Dec 31` line received on Jan 1 stays in the old year); without a
transport time the record is a `BadTimestamp` — the wall clock is never read. Domain ops.
"""

from __future__ import annotations

import re
from datetime import datetime

from schemas.adapters.base import ParseContext, Parsed, check_time, decode_text
from schemas.adapters.fields import alert_from, parse_time_text
from schemas.errors import BadTimestamp, BadValue, DecodeError, MissingField
from schemas.models import Alert, Domain
from schemas.severity import from_syslog

__all__ = ["SyslogAdapter", "rfc3164_time"]

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_BSD = re.compile(
    r"([A-Za-z]{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))? +(\S+)(?: (.*))?",
    re.DOTALL,
)
# TAG: `name:` or `name[pid]:`; rsyslog's traditional format drops the colon after `[pid]`
# when it re-emits a message that arrived as RFC 5424, so `name[pid] ` counts too.
_TAG = re.compile(r"([^\s\[\]:]{1,64})(?:\[[^\]\s]*\]:?|:)(?: |$)")
_NIL = "-"
_BOM = "\ufeff"
_DEFAULT_PRI = 13


def rfc3164_time(
    month: int, day: int, clock: tuple[int, int, int, int], ctx: ParseContext
) -> datetime:
    """A year-less local timestamp placed in the year closest to the transport time."""
    if ctx.transport_time is None:
        raise BadTimestamp("an RFC 3164 timestamp has no year and the record no transport time")
    anchor = check_time(ctx.transport_time)
    year = anchor.astimezone(ctx.default_tz).year
    best: datetime | None = None
    for candidate_year in (year - 1, year, year + 1):
        try:
            candidate = datetime(candidate_year, month, day, *clock, tzinfo=ctx.default_tz)
        except (ValueError, OverflowError):
            continue
        if best is None or abs(candidate - anchor) < abs(best - anchor):
            best = candidate
    if best is None:
        raise BadTimestamp(f"no valid date for month {month} day {day}")
    return check_time(best)


def _pri(text: str) -> tuple[int, str]:
    if not text.startswith("<"):
        return _DEFAULT_PRI, text
    end = text.find(">", 1, 5)
    digits = text[1:end] if end > 0 else ""
    if not digits.isdigit() or not digits.isascii():
        raise DecodeError("malformed syslog PRI")
    pri = int(digits)
    if pri > 191:
        raise BadValue(f"syslog PRI {pri} above 191")
    return pri, text[end + 1 :]


def _skip_structured_data(rest: str) -> str:
    """The MSG part after RFC 5424 STRUCTURED-DATA (`-` or `[id k="v" ...]...`)."""
    if rest.startswith(_NIL):
        tail = rest[1:]
    elif rest.startswith("["):
        i, n = 0, len(rest)
        while i < n and rest[i] == "[":
            i += 1
            quoted = False
            while i < n:
                ch = rest[i]
                if quoted:
                    if ch == "\\":
                        i += 1
                    elif ch == '"':
                        quoted = False
                elif ch == '"':
                    quoted = True
                elif ch == "]":
                    break
                i += 1
            if i >= n:
                raise DecodeError("unterminated RFC 5424 STRUCTURED-DATA")
            i += 1
        tail = rest[i:]
    else:
        raise DecodeError("RFC 5424 STRUCTURED-DATA must be '-' or start with '['")
    if tail and not tail.startswith(" "):
        raise DecodeError("RFC 5424 MSG must follow STRUCTURED-DATA after a space")
    return tail[1:]


class SyslogAdapter:
    """RFC 5424 / RFC 3164 syslog lines (ops domain)."""

    name = "syslog"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        del options

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        text = decode_text(raw, ctx).rstrip("\r\n")
        if not text.strip():
            raise MissingField("empty syslog line")
        pri, body = _pri(text)
        if body.startswith("1 "):
            return [self._rfc5424(pri, body[2:], text, ctx)]
        return [self._rfc3164(pri, body, text, ctx)]

    def _rfc5424(self, pri: int, body: str, text: str, ctx: ParseContext) -> Alert:
        parts = body.split(" ", 5)
        if len(parts) < 6 or not all(parts[:5]):
            raise DecodeError("RFC 5424 header needs TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD")
        stamp, host, app, _procid, msgid, rest = parts
        if stamp == _NIL:
            if ctx.transport_time is None:
                raise BadTimestamp("nil RFC 5424 TIMESTAMP and no transport time")
            time = check_time(ctx.transport_time)
        else:
            time = parse_time_text(stamp, ctx, "TIMESTAMP")
        if host == _NIL:
            raise MissingField("nil RFC 5424 HOSTNAME")
        signature = app if app != _NIL else "syslog"
        if msgid != _NIL:
            signature = f"{signature}:{msgid}"
        message = _skip_structured_data(rest).removeprefix(_BOM).strip()
        return self._alert(pri, time, host, signature, message, text, ctx)

    def _rfc3164(self, pri: int, body: str, text: str, ctx: ParseContext) -> Alert:
        match = _BSD.fullmatch(body)
        if match is None:
            raise BadTimestamp("no RFC 3164 'Mmm dd hh:mm:ss HOSTNAME' header")
        mon, day, hh, mm, ss, frac, host, content = match.groups()
        month = _MONTHS.get(mon.lower())
        if month is None:
            raise BadTimestamp(f"unknown month {mon!r}")
        micro = int(frac.ljust(6, "0")) if frac else 0
        time = rfc3164_time(month, int(day), (int(hh), int(mm), int(ss), micro), ctx)
        content = content or ""
        tag = _TAG.match(content)
        if tag is not None:
            signature, message = tag.group(1), content[tag.end() :]
        else:
            signature, message = "syslog", content
        return self._alert(pri, time, host, signature, message.strip(), text, ctx)

    def _alert(
        self,
        pri: int,
        time: datetime,
        host: str,
        signature: str,
        message: str,
        text: str,
        ctx: ParseContext,
    ) -> Alert:
        return alert_from(
            {
                "id": ctx.record_id,
                "source": "syslog",
                "domain": Domain.OPS,
                "time": time,
                "asset": host,
                "signature": signature,
                "title": message,
                "severity": from_syslog(pri % 8),
                "raw": text,
            }
        )
