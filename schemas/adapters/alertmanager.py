"""Prometheus Alertmanager webhook payloads (version 4) -> one Alert per `alerts[]` entry.

Ids are `<record id>#<i>`, i from 1. Labels: `alertname` is the signature; `instance`,
`host`, `node` (else `job`) the asset; `severity` the severity; `domain=security` makes it a
security alert (default ops). Annotations `summary`/`description` give the title.
`startsAt` is the event time; `endsAt` is `ended_at` for resolved alerts (Alertmanager sends
`0001-01-01T00:00:00Z` for "no end"). `fingerprint` is kept. An invalid entry becomes a
`Rejected` for its id while the valid entries of the same payload still come out.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from schemas.adapters.base import ParseContext, Parsed, Rejected
from schemas.adapters.fields import (
    alert_from,
    load_object,
    opt_str,
    parse_time,
    req_str,
    sub,
)
from schemas.errors import BadValue, InvalidInput, MissingField
from schemas.models import Alert, Domain, Status
from schemas.severity import from_label

__all__ = ["AlertmanagerAdapter", "looks_like_alertmanager"]

_ASSET_LABELS = ("instance", "host", "node", "job")
_NO_END = "0001-01-01"  # Go's zero time: the alert has no end yet


def looks_like_alertmanager(obj: dict[str, Any]) -> bool:
    """Whether a JSON record has the shape of an Alertmanager webhook payload."""
    return isinstance(obj.get("alerts"), list) and (
        "version" in obj or "groupKey" in obj or "receiver" in obj
    )


def _address(instance: str) -> tuple[str | None, str | None]:
    """(hostname, ip) of an `instance` label such as `10.0.0.1:9100` or `https://h.example`."""
    try:
        host = urlsplit(instance if "://" in instance else f"//{instance}").hostname
    except ValueError:
        return None, None
    if not host:
        return None, None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host, None
    return None, host


class AlertmanagerAdapter:
    """Alertmanager webhook notifications (ops domain unless labelled security)."""

    name = "alertmanager"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        del options

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        obj, text = load_object(raw, ctx)
        return self.from_object(obj, text, ctx)

    def from_object(self, obj: dict[str, Any], text: str, ctx: ParseContext) -> Parsed:
        """The alerts (or per-entry rejections) of one decoded webhook payload."""
        version = obj.get("version")
        if version is not None and version != "4":
            raise BadValue(f"webhook payload version {str(version)[:20]!r} is not 4")
        entries = obj.get("alerts")
        if entries is None:
            raise MissingField("alerts is missing")
        if not isinstance(entries, list):
            raise BadValue("alerts must be a list")
        if not entries:
            raise MissingField("alerts is empty")
        out: Parsed = []
        for index, entry in enumerate(entries, start=1):
            alert_id = f"{ctx.record_id}#{index}"
            try:
                out.append(self._entry(entry, alert_id, text, ctx))
            except InvalidInput as exc:
                out.append(Rejected(alert_id=alert_id, error=exc))
        return out

    def _entry(self, entry: Any, alert_id: str, text: str, ctx: ParseContext) -> Alert:
        if not isinstance(entry, dict):
            raise BadValue(f"alert entry must be an object, not {type(entry).__name__}")
        labels = sub(entry, "labels")
        annotations = sub(entry, "annotations")
        state = req_str(entry.get("status"), "status")
        try:
            status = Status(state)
        except ValueError:
            raise BadValue(f"status {state[:20]!r} is neither firing nor resolved") from None
        asset = None
        for key in _ASSET_LABELS:
            asset = opt_str(labels.get(key), f"labels.{key}")
            if asset is not None:
                break
        if asset is None:
            raise MissingField("none of the labels instance, host, node, job is set")
        hostname, ip = None, None
        instance = opt_str(labels.get("instance"), "labels.instance")
        if instance is not None:
            hostname, ip = _address(instance)
        ended_at = None
        ends = entry.get("endsAt")
        if status is Status.RESOLVED and not (
            ends is None or (isinstance(ends, str) and ends[:10] in ("", _NO_END))
        ):
            ended_at = parse_time(ends, ctx, "endsAt")
        domain = opt_str(labels.get("domain"), "labels.domain")
        signature = req_str(labels.get("alertname"), "labels.alertname")
        title = opt_str(annotations.get("summary"), "annotations.summary") or opt_str(
            annotations.get("description"), "annotations.description"
        )
        return alert_from(
            {
                "id": alert_id,
                "source": "alertmanager",
                "domain": Domain.SECURITY if domain == "security" else Domain.OPS,
                "time": parse_time(entry.get("startsAt"), ctx, "startsAt"),
                "ended_at": ended_at,
                "asset": asset,
                "hostname": hostname,
                "ip": ip,
                "signature": signature,
                "title": title or signature,
                "severity": from_label(opt_str(labels.get("severity"), "labels.severity")),
                "status": status,
                "fingerprint": opt_str(entry.get("fingerprint"), "fingerprint"),
                "raw": text,
            }
        )
