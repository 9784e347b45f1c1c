"""Zabbix real-time export (`problems-*.ndjson`) -> Alert.

A problem event (`value` 1) keeps its `eventid` as id, `clock`+`ns` as time, the first of
`hosts` as asset (`host` technical name, `name` visible name; Zabbix < 4.4 wrote plain
strings), `name` as signature and title, `severity` 0-5. A recovery event (`value` 0) is
`resolved` with `ref` = `p_eventid`. The export writes only clock, ns, value, eventid and
p_eventid for a recovery, so the adapter remembers the asset, name and severity of recent
problems it parsed (bounded) to fill them in; a recovery of an unseen problem gets the
asset `zabbix:<p_eventid>`. Domain ops.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from schemas.adapters.base import ParseContext, Parsed, check_time, epoch_to_datetime
from schemas.adapters.fields import alert_from, id_str, load_object, opt_int, req_int, req_str
from schemas.errors import BadTimestamp, BadValue, MissingField
from schemas.models import Alert, Domain, Severity, Status
from schemas.severity import from_zabbix

__all__ = ["ZabbixAdapter", "looks_like_zabbix", "MAX_REMEMBERED_PROBLEMS"]

MAX_REMEMBERED_PROBLEMS = 100_000


class _Problem(NamedTuple):
    asset: str
    hostname: str | None
    name: str
    severity: Severity


def looks_like_zabbix(obj: dict[str, Any]) -> bool:
    """Whether a JSON record has the shape of a Zabbix trigger event."""
    return "clock" in obj and "eventid" in obj and "value" in obj


def _time(obj: dict[str, Any]) -> datetime:
    clock = epoch_to_datetime(req_int(obj.get("clock"), "clock"))
    ns = opt_int(obj.get("ns"), "ns") or 0
    if not 0 <= ns < 1_000_000_000:
        raise BadTimestamp(f"ns {ns} outside 0-999999999")
    return check_time(clock + timedelta(microseconds=ns // 1000))


def _host(hosts: Any) -> tuple[str, str | None]:
    if not isinstance(hosts, list):
        raise BadValue("hosts must be a list")
    if not hosts:
        raise MissingField("hosts is empty")
    first = hosts[0]
    if isinstance(first, str):
        return req_str(first, "hosts[0]"), None
    if not isinstance(first, dict):
        raise BadValue("hosts entries must be objects or strings")
    host = req_str(first.get("host"), "hosts[0].host")
    visible = first.get("name")
    if visible is not None and not isinstance(visible, str):
        raise BadValue("hosts[0].name must be a string")
    return host, visible if visible and visible != host else None


class ZabbixAdapter:
    """Zabbix problem and recovery events (ops domain)."""

    name = "zabbix"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        del options
        self._problems: OrderedDict[str, _Problem] = OrderedDict()

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        obj, text = load_object(raw, ctx)
        return [self.from_object(obj, text, ctx)]

    def from_object(self, obj: dict[str, Any], text: str, ctx: ParseContext) -> Alert:
        """The Alert of one decoded Zabbix event."""
        value = req_int(obj.get("value"), "value")
        event_id = id_str(obj.get("eventid"), "eventid")
        time = _time(obj)
        if value == 1:
            return self._problem(obj, event_id, time, text)
        if value == 0:
            return self._recovery(obj, event_id, time, text)
        raise BadValue(f"value {value} is neither 1 (problem) nor 0 (recovery)")

    def _problem(self, obj: dict[str, Any], event_id: str, time: datetime, text: str) -> Alert:
        name = req_str(obj.get("name"), "name")
        level = opt_int(obj.get("severity"), "severity")
        severity = Severity.MEDIUM if level is None else from_zabbix(level)
        asset, hostname = _host(obj.get("hosts"))
        alert = alert_from(
            {
                "id": event_id,
                "source": "zabbix",
                "domain": Domain.OPS,
                "time": time,
                "asset": asset,
                "hostname": hostname,
                "signature": name,
                "title": name,
                "severity": severity,
                "raw": text,
            }
        )
        self._remember(event_id, _Problem(asset, hostname, name, severity))
        return alert

    def _recovery(self, obj: dict[str, Any], event_id: str, time: datetime, text: str) -> Alert:
        ref = id_str(obj.get("p_eventid"), "p_eventid")
        problem = self._problems.get(ref)
        if problem is None:
            problem = _Problem(f"zabbix:{ref}", None, "recovery", Severity.INFO)
        return alert_from(
            {
                "id": event_id,
                "source": "zabbix",
                "domain": Domain.OPS,
                "time": time,
                "ended_at": time,
                "asset": problem.asset,
                "hostname": problem.hostname,
                "signature": problem.name,
                "title": problem.name,
                "severity": problem.severity,
                "status": Status.RESOLVED,
                "ref": ref,
                "raw": text,
            }
        )

    def _remember(self, event_id: str, problem: _Problem) -> None:
        self._problems[event_id] = problem
        if len(self._problems) > MAX_REMEMBERED_PROBLEMS:
            self._problems.popitem(last=False)
