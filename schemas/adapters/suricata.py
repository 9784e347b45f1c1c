"""Suricata EVE JSON (`event_type: alert`) -> Alert.

EVE records carry no unique id, so the record id is used. The asset is the sensor's `host`
field when Suricata writes one (`sensor-name`), else the destination address; `src_ip` is
the remote side. `alert.severity` (1 highest .. 3) gives the severity, `alert.signature_id`
the signature and `alert.signature` the title. Other event types (flow, dns, ...) are not
alerts and are rejected with a reason rather than dropped silently.
"""

from __future__ import annotations

from typing import Any

from schemas.adapters.base import ParseContext, Parsed
from schemas.adapters.fields import (
    alert_from,
    id_str,
    load_object,
    opt_str,
    parse_time,
    req_int,
    req_str,
    sub,
)
from schemas.errors import BadValue
from schemas.models import Alert, Domain
from schemas.severity import from_suricata

__all__ = ["SuricataAdapter", "looks_like_suricata"]


def looks_like_suricata(obj: dict[str, Any]) -> bool:
    """Whether a JSON record has the shape of a Suricata EVE event."""
    return "event_type" in obj and "rule" not in obj


class SuricataAdapter:
    """Suricata EVE alert events (security domain)."""

    name = "suricata"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        del options

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        obj, text = load_object(raw, ctx)
        return [self.from_object(obj, text, ctx)]

    def from_object(self, obj: dict[str, Any], text: str, ctx: ParseContext) -> Alert:
        """The Alert of one decoded EVE record."""
        event_type = req_str(obj.get("event_type"), "event_type")
        if event_type != "alert":
            raise BadValue(f"event_type {event_type[:40]!r} is not an alert")
        alert = sub(obj, "alert")
        dest_ip = opt_str(obj.get("dest_ip"), "dest_ip")
        host = opt_str(obj.get("host"), "host")
        asset = host or dest_ip
        if asset is None:
            asset = req_str(None, "host or dest_ip")
        return alert_from(
            {
                "id": ctx.record_id,
                "source": "suricata",
                "domain": Domain.SECURITY,
                "time": parse_time(obj.get("timestamp"), ctx, "timestamp"),
                "asset": asset,
                "hostname": host,
                "ip": dest_ip,
                "src_ip": opt_str(obj.get("src_ip"), "src_ip"),
                "signature": id_str(alert.get("signature_id"), "alert.signature_id"),
                "title": opt_str(alert.get("signature"), "alert.signature") or "",
                "severity": from_suricata(req_int(alert.get("severity"), "alert.severity")),
                "raw": text,
            }
        )
