"""Wazuh `alerts.json` (one JSON alert per line) -> Alert.

Wazuh's own alert `id` is kept. Asset is the reporting agent (`agent.name`, `agent.ip`);
`data.srcip`/`data.src_ip` is the remote address; `rule.level` 0-15 gives the severity,
`rule.id` the signature, `rule.description` the title, `rule.mitre` the ATT&CK tactics
(names) and techniques (ids).
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
    str_list,
    sub,
)
from schemas.models import Alert, Domain
from schemas.severity import from_wazuh_level

__all__ = ["WazuhAdapter", "looks_like_wazuh"]


def looks_like_wazuh(obj: dict[str, Any]) -> bool:
    """Whether a JSON record has the shape of a Wazuh alert."""
    return isinstance(obj.get("rule"), dict) and isinstance(obj.get("agent"), dict)


class WazuhAdapter:
    """Wazuh alerts.json records (security domain)."""

    name = "wazuh"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        del options

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        obj, text = load_object(raw, ctx)
        return [self.from_object(obj, text, ctx)]

    def from_object(self, obj: dict[str, Any], text: str, ctx: ParseContext) -> Alert:
        """The Alert of one decoded Wazuh record."""
        rule = sub(obj, "rule")
        agent = sub(obj, "agent")
        data = sub(obj, "data")
        stamp = obj.get("timestamp")
        if stamp is None:
            stamp = obj.get("@timestamp")
        mitre = sub(rule, "mitre")
        src_ip = opt_str(data.get("srcip"), "data.srcip") or opt_str(
            data.get("src_ip"), "data.src_ip"
        )
        return alert_from(
            {
                "id": id_str(obj.get("id"), "id"),
                "source": "wazuh",
                "domain": Domain.SECURITY,
                "time": parse_time(stamp, ctx, "timestamp"),
                "asset": req_str(agent.get("name"), "agent.name"),
                "ip": opt_str(agent.get("ip"), "agent.ip"),
                "src_ip": src_ip,
                "signature": id_str(rule.get("id"), "rule.id"),
                "title": opt_str(rule.get("description"), "rule.description") or "",
                "severity": from_wazuh_level(req_int(rule.get("level"), "rule.level")),
                "tactics": str_list(mitre.get("tactic"), "rule.mitre.tactic"),
                "techniques": str_list(mitre.get("id"), "rule.mitre.id"),
                "raw": text,
            }
        )
