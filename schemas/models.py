"""Canonical records: the alert every adapter produces and the records socnoc publishes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.trusted import trusted

__all__ = [
    "SCHEMA_VERSION",
    "Severity",
    "Domain",
    "Status",
    "SEVERITY_BY_VALUE",
    "DOMAIN_BY_VALUE",
    "STATUS_BY_VALUE",
    "Disposition",
    "IncidentKind",
    "LifecycleEvent",
    "Alert",
    "Decision",
    "RootCause",
    "Incident",
    "IncidentEvent",
    "TimelineEntry",
    "DeadLetter",
    "SEVERITY_RANK",
    "trusted",
]

SCHEMA_VERSION = 1


class Severity(StrEnum):
    """Normalised severity, lowest first (see schemas/severity.py for the mapping table)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITY_RANK: dict[Severity, int] = {s: i for i, s in enumerate(Severity)}


class Domain(StrEnum):
    """Which team's tools produced the alert."""

    SECURITY = "security"
    OPS = "ops"


class Status(StrEnum):
    """Whether the condition is active or has cleared."""

    FIRING = "firing"
    RESOLVED = "resolved"


# Each member by its exact value: a dict lookup, where calling the enum takes ~0.5 µs (adapters
# reading a mapped field, a restore reading waiting alerts)
SEVERITY_BY_VALUE: Final[dict[str, Severity]] = {s.value: s for s in Severity}
DOMAIN_BY_VALUE: Final[dict[str, Domain]] = {d.value: d for d in Domain}
STATUS_BY_VALUE: Final[dict[str, Status]] = {s.value: s for s in Status}


class Disposition(StrEnum):
    """The one decision each input alert gets."""

    INCIDENT = "incident"
    NOISE = "noise"
    DUPLICATE = "duplicate"
    INVALID = "invalid"


class IncidentKind(StrEnum):
    """Which domains an incident's evidence comes from."""

    SECURITY = "security"
    OPERATIONAL = "operational"
    CONVERGED = "converged"


class LifecycleEvent(StrEnum):
    """Incident event types on the `incidents` topic."""

    OPENED = "opened"
    UPDATED = "updated"
    RESOLVED = "resolved"
    MERGED = "merged"


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Alert(BaseModel):
    """One normalised alert from any source; `raw` keeps the source record untouched."""

    model_config = _FROZEN

    schema_version: int = SCHEMA_VERSION
    id: str = Field(min_length=1, description="Stable alert id (see DESIGN.md 'Alert ids').")
    source: str = Field(min_length=1, description="Producing tool, e.g. wazuh, suricata.")
    domain: Domain
    time: AwareDatetime = Field(description="Event time from the source record.")
    ended_at: AwareDatetime | None = None
    asset: str = Field(min_length=1, description="Primary asset identifier as the source names it.")
    hostname: str | None = None
    ip: str | None = None
    mac: str | None = None
    device_id: str | None = None
    src_ip: str | None = Field(default=None, description="Remote/attacking address if known.")
    signature: str = Field(min_length=1)
    title: str = ""
    severity: Severity = Severity.MEDIUM
    status: Status = Status.FIRING
    tactics: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()
    ref: str | None = None
    fingerprint: str | None = Field(
        default=None, description="Source's stable key of the condition (Alertmanager)."
    )
    raw: str = ""

    def identifiers(self) -> tuple[str, ...]:
        """All asset identifiers carried by the alert, primary first, without repeats."""
        seen: list[str] = []
        for value in (self.asset, self.hostname, self.device_id, self.ip, self.mac):
            if value and value not in seen:
                seen.append(value)
        return tuple(seen)


class Decision(BaseModel):
    """The one decision for one input alert (`decisions.jsonl`, `alerts.decisions`)."""

    model_config = _FROZEN

    schema_version: int = SCHEMA_VERSION
    alert_id: str
    disposition: Disposition
    incident_id: str | None = None
    incident_kind: IncidentKind | None = None
    reason: str
    asset: str | None = None
    time: AwareDatetime | None = None


class RootCause(BaseModel):
    """Where an incident started: an asset and the alert that started it."""

    model_config = _FROZEN

    asset: str
    alert_id: str


class TimelineEntry(BaseModel):
    """One step of an incident's story."""

    model_config = _FROZEN

    time: AwareDatetime
    asset: str
    alert_id: str
    source: str
    signature: str
    severity: Severity
    note: str = ""


class Incident(BaseModel):
    """The state of one incident (`incidents.jsonl`)."""

    model_config = _FROZEN

    schema_version: int = SCHEMA_VERSION
    incident_id: str
    kind: IncidentKind
    assets: tuple[str, ...]
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    severity: Severity
    score: float = Field(ge=0, le=100)
    alert_count: int = Field(ge=0)
    root_cause: RootCause | None = None
    merged_into: str | None = None
    owners: tuple[str, ...] = ()
    summary: str = ""
    next_step: str = ""


class IncidentEvent(Incident):
    """A lifecycle event on the `incidents` topic, keyed by incident id."""

    event: LifecycleEvent
    version: int = Field(ge=1)
    alert_ids: tuple[str, ...] = ()
    alert_ids_total: int = 0
    reasons: tuple[str, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()


class DeadLetter(BaseModel):
    """A record that could not be decoded, with its raw bytes (base64) and the reason."""

    model_config = _FROZEN

    schema_version: int = SCHEMA_VERSION
    raw: str = Field(description="The record's value, base64.")
    topic: str
    partition: int
    offset: int
    error: str = Field(description="Class name of the typed error.")
    reason: str
    received_at: datetime


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict of a record (enums as values, datetimes as RFC 3339 strings)."""
    return model.model_dump(mode="json")
