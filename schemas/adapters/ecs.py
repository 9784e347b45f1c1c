"""Elastic Security alert documents (ECS, `.alerts-security.alerts-*`) -> Alert.

Accepts a bare `_source` document or a search hit (`{"_id", "_source"}`), with nested
objects or flat dotted keys (`"kibana.alert.uuid"`) alike. The id is `kibana.alert.uuid`,
else the hit's `_id`, else the record id; the event time is `kibana.alert.original_time`,
else `@timestamp`.
Severity: `kibana.alert.severity`, else `kibana.alert.risk_score`, else `event.severity`.
Tactics (names) and techniques (ids) come from `kibana.alert.rule.threat` and `threat.*`.
"""

from __future__ import annotations

from typing import Any

from schemas.adapters.base import ParseContext, Parsed
from schemas.adapters.fields import (
    alert_from,
    id_str,
    load_object,
    lookup,
    opt_str,
    parse_time,
    req_str,
    str_list,
)
from schemas.errors import BadValue
from schemas.models import Alert, Domain, Severity, Status
from schemas.severity import from_ecs_score, from_label

__all__ = ["EcsAdapter", "looks_like_ecs"]


def looks_like_ecs(obj: dict[str, Any]) -> bool:
    """Whether a JSON record looks like an Elastic alert document or search hit."""
    if isinstance(obj.get("_source"), dict) or "@timestamp" in obj or "kibana" in obj:
        return True
    return any(key.startswith("kibana.") for key in obj)


def _first(value: Any, name: str) -> str | None:
    """A keyword that ECS may hold as a string or an array of strings: the first one."""
    items = str_list(value, name)
    return items[0] if items else None


def _score(value: Any, name: str) -> Severity | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return from_ecs_score(value)
    raise BadValue(f"{name} must be a number")


def _severity(doc: dict[str, Any]) -> Severity:
    fallback = _score(lookup(doc, "kibana.alert.risk_score"), "kibana.alert.risk_score")
    if fallback is None:
        fallback = _score(lookup(doc, "event.severity"), "event.severity")
    label = opt_str(lookup(doc, "kibana.alert.severity"), "kibana.alert.severity")
    return from_label(label, fallback or Severity.MEDIUM)


def _attack(doc: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    tactics = list(str_list(lookup(doc, "threat.tactic.name"), "threat.tactic.name"))
    techniques = list(str_list(lookup(doc, "threat.technique.id"), "threat.technique.id"))
    threats = lookup(doc, "kibana.alert.rule.threat")
    if threats is not None:
        if not isinstance(threats, list):
            raise BadValue("kibana.alert.rule.threat must be a list")
        for threat in threats:
            if not isinstance(threat, dict):
                raise BadValue("kibana.alert.rule.threat entries must be objects")
            name = opt_str(lookup(threat, "tactic.name"), "threat.tactic.name")
            if name and name not in tactics:
                tactics.append(name)
            found = threat.get("technique") or []
            if not isinstance(found, list):
                raise BadValue("kibana.alert.rule.threat.technique must be a list")
            for tech in found:
                if not isinstance(tech, dict):
                    raise BadValue("threat technique entries must be objects")
                subs = tech.get("subtechnique") or []
                if not isinstance(subs, list):
                    raise BadValue("threat subtechnique must be a list")
                for item in (tech, *subs):
                    if not isinstance(item, dict):
                        raise BadValue("threat subtechnique entries must be objects")
                    tid = opt_str(item.get("id"), "threat technique id")
                    if tid and tid not in techniques:
                        techniques.append(tid)
    return tuple(tactics), tuple(techniques)


class EcsAdapter:
    """Elastic Security (Kibana) alert documents (security domain)."""

    name = "ecs"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        del options

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        obj, text = load_object(raw, ctx)
        return [self.from_object(obj, text, ctx)]

    def from_object(self, obj: dict[str, Any], text: str, ctx: ParseContext) -> Alert:
        """The Alert of one decoded alert document or search hit."""
        doc = obj.get("_source", obj)
        if not isinstance(doc, dict):
            raise BadValue("_source must be an object")
        alert_id = lookup(doc, "kibana.alert.uuid")
        if alert_id in (None, ""):
            alert_id = obj.get("_id")
        alert_id = ctx.record_id if alert_id in (None, "") else id_str(alert_id, "_id")
        stamp = lookup(doc, "kibana.alert.original_time")
        if stamp is None:
            stamp = lookup(doc, "@timestamp")
        host_ip = _first(lookup(doc, "host.ip"), "host.ip")
        asset = (
            _first(lookup(doc, "host.name"), "host.name")
            or _first(lookup(doc, "host.hostname"), "host.hostname")
            or host_ip
            or req_str(None, "host.name")
        )
        signature = req_str(
            lookup(doc, "kibana.alert.rule.rule_id")
            or lookup(doc, "kibana.alert.rule.uuid")
            or lookup(doc, "rule.id")
            or lookup(doc, "kibana.alert.rule.name")
            or lookup(doc, "rule.name"),
            "kibana.alert.rule.rule_id",
        )
        title = opt_str(
            lookup(doc, "kibana.alert.rule.name")
            or lookup(doc, "rule.name")
            or lookup(doc, "kibana.alert.reason")
            or lookup(doc, "message"),
            "kibana.alert.rule.name",
        )
        state = opt_str(lookup(doc, "kibana.alert.status"), "kibana.alert.status")
        status = Status.RESOLVED if state == "recovered" else Status.FIRING
        ended_at = None
        if status is Status.RESOLVED and lookup(doc, "kibana.alert.end") is not None:
            ended_at = parse_time(lookup(doc, "kibana.alert.end"), ctx, "kibana.alert.end")
        tactics, techniques = _attack(doc)
        return alert_from(
            {
                "id": alert_id,
                "source": "elastic",
                "domain": Domain.SECURITY,
                "time": parse_time(stamp, ctx, "@timestamp"),
                "ended_at": ended_at,
                "asset": asset,
                "hostname": _first(lookup(doc, "host.hostname"), "host.hostname"),
                "ip": host_ip,
                "src_ip": _first(lookup(doc, "source.ip"), "source.ip"),
                "signature": signature,
                "title": title or "",
                "severity": _severity(doc),
                "status": status,
                "tactics": tactics,
                "techniques": techniques,
                "raw": text,
            }
        )
