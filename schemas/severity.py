"""Severity normalisation: one table from each source's scale to socnoc's five levels.

| source | scale | info | low | medium | high | critical |
|---|---|---|---|---|---|---|
| Wazuh `rule.level` | 0-15 | 0-3 | 4-6 | 7-9 | 10-12 | 13-15 |
| Suricata `alert.severity` | 1-3 (1 highest) | - | 3 | 2 | 1 | - |
| Alertmanager `severity` label | text | info, none, debug | low, minor, warning-low | warning, medium, moderate | high, major, error | critical, page, emergency, fatal |
| Zabbix `severity` | 0-5 | 0 not classified, 1 information | 2 warning | 3 average | 4 high | 5 disaster |
| syslog PRI severity | 0-7 (0 highest) | 6 info, 7 debug | 5 notice | 4 warning | 3 err | 0 emerg, 1 alert, 2 crit |
| ECS `event.severity` / `kibana.alert.severity` | 0-100 / text | 0-20 | 21-47 / low | 48-73 / medium | 74-98 / high | 99-100 / critical |
| BGL level | text | INFO | WARNING | SEVERE, ERROR | FAILURE | FATAL |
"""

from __future__ import annotations

from schemas.errors import BadValue
from schemas.models import Severity

__all__ = [
    "from_wazuh_level",
    "from_suricata",
    "from_label",
    "from_zabbix",
    "from_syslog",
    "from_ecs_score",
    "from_bgl",
]


def from_wazuh_level(level: int) -> Severity:
    """Wazuh rule level 0-15."""
    if not 0 <= level <= 15:
        raise BadValue(f"wazuh rule.level {level} outside 0-15")
    if level <= 3:
        return Severity.INFO
    if level <= 6:
        return Severity.LOW
    if level <= 9:
        return Severity.MEDIUM
    if level <= 12:
        return Severity.HIGH
    return Severity.CRITICAL


_SURICATA = {1: Severity.HIGH, 2: Severity.MEDIUM, 3: Severity.LOW}


def from_suricata(severity: int) -> Severity:
    """Suricata alert.severity 1-3 where 1 is the highest; larger values (4+) are low."""
    if severity < 1:
        raise BadValue(f"suricata alert.severity {severity} below 1")
    return _SURICATA.get(severity, Severity.LOW)


_LABELS = {
    "info": Severity.INFO,
    "informational": Severity.INFO,
    "information": Severity.INFO,
    "none": Severity.INFO,
    "debug": Severity.INFO,
    "low": Severity.LOW,
    "minor": Severity.LOW,
    "notice": Severity.LOW,
    "warning": Severity.MEDIUM,
    "warn": Severity.MEDIUM,
    "medium": Severity.MEDIUM,
    "moderate": Severity.MEDIUM,
    "average": Severity.MEDIUM,
    "high": Severity.HIGH,
    "major": Severity.HIGH,
    "error": Severity.HIGH,
    "severe": Severity.HIGH,
    "critical": Severity.CRITICAL,
    "page": Severity.CRITICAL,
    "emergency": Severity.CRITICAL,
    "fatal": Severity.CRITICAL,
    "disaster": Severity.CRITICAL,
}


def from_label(label: str | None, default: Severity = Severity.MEDIUM) -> Severity:
    """A free-text severity label (Alertmanager, ECS, generic maps); unknown -> default."""
    if label is None:
        return default
    return _LABELS.get(label.strip().lower(), default)


_ZABBIX = (
    Severity.INFO,
    Severity.INFO,
    Severity.LOW,
    Severity.MEDIUM,
    Severity.HIGH,
    Severity.CRITICAL,
)


def from_zabbix(severity: int) -> Severity:
    """Zabbix trigger severity 0-5."""
    if not 0 <= severity <= 5:
        raise BadValue(f"zabbix severity {severity} outside 0-5")
    return _ZABBIX[severity]


_SYSLOG = (
    Severity.CRITICAL,
    Severity.CRITICAL,
    Severity.CRITICAL,
    Severity.HIGH,
    Severity.MEDIUM,
    Severity.LOW,
    Severity.INFO,
    Severity.INFO,
)


def from_syslog(severity: int) -> Severity:
    """Syslog severity 0-7 (PRI mod 8), 0 emergency .. 7 debug."""
    if not 0 <= severity <= 7:
        raise BadValue(f"syslog severity {severity} outside 0-7")
    return _SYSLOG[severity]


def from_ecs_score(score: float) -> Severity:
    """ECS risk/severity score 0-100."""
    if not 0 <= score <= 100:
        raise BadValue(f"ECS severity {score} outside 0-100")
    if score <= 20:
        return Severity.INFO
    if score <= 47:
        return Severity.LOW
    if score <= 73:
        return Severity.MEDIUM
    if score <= 98:
        return Severity.HIGH
    return Severity.CRITICAL


_BGL = {
    "INFO": Severity.INFO,
    "WARNING": Severity.LOW,
    "SEVERE": Severity.MEDIUM,
    "ERROR": Severity.MEDIUM,
    "FAILURE": Severity.HIGH,
    "FATAL": Severity.CRITICAL,
}


def from_bgl(level: str) -> Severity:
    """BGL RAS level word."""
    try:
        return _BGL[level.upper()]
    except KeyError:
        raise BadValue(f"unknown BGL level {level!r}") from None
