"""`auto`: JSON records of any known JSON format, told apart by their keys.

Alertmanager (`alerts` list plus `version`/`groupKey`/`receiver`), Wazuh (`rule` and
`agent` objects), Zabbix (`clock`, `eventid`, `value`), Suricata EVE (`event_type`), then
Elastic/ECS (`_source`, `@timestamp` or `kibana.*`). A record of none of these shapes is a
`DecodeError`.
"""

from __future__ import annotations

from schemas.adapters.alertmanager import AlertmanagerAdapter, looks_like_alertmanager
from schemas.adapters.base import ParseContext, Parsed
from schemas.adapters.ecs import EcsAdapter, looks_like_ecs
from schemas.adapters.fields import load_object
from schemas.adapters.suricata import SuricataAdapter, looks_like_suricata
from schemas.adapters.wazuh import WazuhAdapter, looks_like_wazuh
from schemas.adapters.zabbix import ZabbixAdapter, looks_like_zabbix
from schemas.errors import DecodeError

__all__ = ["AutoAdapter"]


class AutoAdapter:
    """Detects the JSON format of each record and delegates to its adapter."""

    name = "auto"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        del options
        self._alertmanager = AlertmanagerAdapter()
        self._wazuh = WazuhAdapter()
        self._zabbix = ZabbixAdapter()
        self._suricata = SuricataAdapter()
        self._ecs = EcsAdapter()

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        obj, text = load_object(raw, ctx)
        if looks_like_alertmanager(obj):
            return self._alertmanager.from_object(obj, text, ctx)
        if looks_like_wazuh(obj):
            return [self._wazuh.from_object(obj, text, ctx)]
        if looks_like_zabbix(obj):
            return [self._zabbix.from_object(obj, text, ctx)]
        if looks_like_suricata(obj):
            return [self._suricata.from_object(obj, text, ctx)]
        if looks_like_ecs(obj):
            return [self._ecs.from_object(obj, text, ctx)]
        raise DecodeError("a JSON record of no known format (wazuh, suricata, ecs, ...)")
