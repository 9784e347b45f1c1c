"""Loghub BlueGene/L RAS log lines -> Alert.

Line: `<label> <epoch> <date> <node> <datetime> <node> <type> <component> <level> <message>`.
The first field is the evaluation label (`-` or an alert category): it is cut off unread,
and `raw` is the line without it, so blanking labels changes nothing. The time is the epoch
seconds plus the microseconds of the `datetime` field; the asset is the node; the signature
is the component plus the message template (tokens holding digits become `<*>`), so
repeated messages share a signature; the severity comes from the level. Domain ops.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

from schemas.adapters.base import ParseContext, Parsed, check_time, decode_text, epoch_to_datetime
from schemas.adapters.fields import alert_from
from schemas.errors import BadTimestamp, DecodeError, MissingField
from schemas.models import Domain
from schemas.severity import from_bgl

__all__ = ["BglAdapter", "template"]

_VARIABLE = re.compile(r"(^|[\s=])[^\s=]*\d\S*")
_MAX_TEMPLATE = 200


@lru_cache(maxsize=8192)
def template(message: str) -> str:
    """The message with every digit-bearing token (numbers, hex, addresses) as `<*>`."""
    return _VARIABLE.sub(r"\1<*>", message)[:_MAX_TEMPLATE]


class BglAdapter:
    """BlueGene/L RAS log lines (ops domain)."""

    name = "bgl"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        del options

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        text = decode_text(raw, ctx).rstrip("\r\n")
        # The label is everything up to the first space; it is never looked at.
        body = text.partition(" ")[2]
        fields = body.split(" ", 8)
        if len(fields) < 8:
            raise DecodeError(f"a BGL line has at least 9 fields, got {len(fields) + 1}")
        epoch, _date, node, stamp, _node2, _kind, component, level = fields[:8]
        message = fields[8] if len(fields) > 8 else ""
        if not epoch.isdigit() or not epoch.isascii():
            raise BadTimestamp(f"epoch {epoch[:30]!r} is not a number")
        time = epoch_to_datetime(int(epoch))
        frac = stamp.rpartition(".")[2]
        if len(frac) == 6 and frac.isdigit() and frac.isascii():
            time = check_time(time + timedelta(microseconds=int(frac)))
        if not node:
            raise MissingField("node is empty")
        if not component:
            raise MissingField("component is empty")
        return [
            alert_from(
                {
                    "id": ctx.record_id,
                    "source": "bgl",
                    "domain": Domain.OPS,
                    "time": time,
                    "asset": node,
                    "signature": f"{component}:{template(message)}",
                    "title": message,
                    "severity": from_bgl(level),
                    "raw": body,
                }
            )
        ]
