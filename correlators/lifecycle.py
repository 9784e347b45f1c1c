"""Incident lifecycle: open, update (coalesced), resolve, reopen, merge; stable ids, versions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Final

from schemas.epoch import epoch_seconds
from schemas.epoch import utc_datetime as to_dt
from schemas.models import (
    SEVERITY_RANK,
    Alert,
    Domain,
    Incident,
    IncidentEvent,
    IncidentKind,
    LifecycleEvent,
    RootCause,
    Severity,
    Status,
    TimelineEntry,
    trusted,
)

if TYPE_CHECKING:
    from correlators.windows import Waiting

__all__ = ["IncidentState", "incident_id", "kind_of", "to_dt"]

# Enum members as module constants (a class attribute lookup through the enum metaclass costs
# ~65 ns, and these are asked per alert). `Final`: compiled, a C static instead of a lookup in
# the module's dict.
_RANK: Final = SEVERITY_RANK
_COUNT: Final = itemgetter(1)
_FIRING: Final = Status.FIRING
_SECURITY: Final = Domain.SECURITY
_OPS: Final = Domain.OPS
_CONVERGED: Final = IncidentKind.CONVERGED
_SEC_KIND: Final = IncidentKind.SECURITY
_OPERATIONAL: Final = IncidentKind.OPERATIONAL
_TIMELINE_ENTRY: Final = TimelineEntry
_INCIDENT_EVENT: Final = IncidentEvent




def incident_id(asset: str, opened: float, first_alert_id: str) -> str:
    """Stable, readable id: asset, opening time and a hash of the first alert's id."""
    digest = hashlib.sha1(f"{asset}\x1f{first_alert_id}".encode()).hexdigest()[:8]
    stamp = to_dt(opened).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in asset)[:48]
    return f"INC-{safe}-{stamp}-{digest}"


def kind_of(domains: set[Domain]) -> IncidentKind:
    """Incident kind from the domains of its evidence."""
    if _SECURITY in domains:
        return _CONVERGED if _OPS in domains else _SEC_KIND
    return _OPERATIONAL


def _teams(domains: set[Domain]) -> set[str]:
    teams = set()
    if Domain.SECURITY in domains:
        teams.add("soc")
    if Domain.OPS in domains:
        teams.add("noc")
    return teams


_NEXT_STEP: Final = {
    IncidentKind.SECURITY: "Triage on {asset}: review the timeline; if confirmed, isolate the "
    "host and reset credentials it holds.",
    IncidentKind.CONVERGED: "Joint SOC+NOC triage on {asset}: security evidence coincides with "
    "an operational symptom; check for compromise before restarting services.",
    IncidentKind.OPERATIONAL: "Check {asset} and its upstream links; restore service, then confirm the alarms clear.",
}


@dataclass(slots=True)
class IncidentState:
    """Mutable state of one incident inside the engine."""

    id: str
    assets: list[str]
    opened_at: float
    root: RootCause
    root_signature: str
    owners: set[str]
    domains: set[Domain] = field(default_factory=set)
    severity: Severity = Severity.INFO
    raw: float = 0.0
    threshold: float = 14.0
    alert_count: int = 0
    updated_at: float = 0.0
    last_activity: float = 0.0
    resolved_at: float | None = None
    merged_into: str | None = None
    version: int = 0
    last_emit: float = 0.0
    dirty: bool = False
    alert_ids: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    signatures: dict[str, int] = field(default_factory=dict)
    firing: dict[tuple[str, str], bool] = field(default_factory=dict)
    evidence: set[tuple[str, str]] = field(default_factory=set)
    consequences: int = 0
    flapping: set[str] = field(default_factory=set)
    summary_note: str = ""

    @property
    def kind(self) -> IncidentKind:
        return kind_of(self.domains)

    def add(
        self,
        alert: Alert | Waiting,
        asset: str,
        severity: Severity,
        note: str,
        caps: tuple[int, int],
        ts: float | None = None,
    ) -> None:
        """Record one member alert (`ts`: its time as epoch seconds, when the caller has it)."""
        max_ids, max_timeline = caps
        if ts is None:
            ts = epoch_seconds(alert.time)
        self.alert_count += 1
        self.domains.add(alert.domain)
        if _RANK[severity] > _RANK[self.severity]:
            self.severity = severity
        if asset not in self.assets:
            self.assets.append(asset)
        signature = alert.signature
        signatures = self.signatures
        seen = signatures[signature] = signatures.get(signature, 0) + 1
        if len(self.alert_ids) < max_ids:
            self.alert_ids.append(alert.id)
        timeline = self.timeline
        if len(timeline) < max_timeline and (seen == 1 or len(timeline) < 20):
            # every value is the validated alert's, the engine's resolved asset and its own text
            timeline.append(
                trusted(
                    _TIMELINE_ENTRY,
                    {
                        "time": alert.time,
                        "asset": asset,
                        "alert_id": alert.id,
                        "source": alert.source,
                        "signature": signature,
                        "severity": severity,
                        "note": note,
                    },
                )
            )
        self.firing[(asset, signature)] = alert.status is _FIRING
        if ts > self.last_activity:
            self.last_activity = ts
        if ts > self.updated_at:
            self.updated_at = ts
        self.dirty = True

    def note_reason(self, reason: str, cap: int = 20) -> None:
        if reason not in self.reasons and len(self.reasons) < cap:
            self.reasons.append(reason)

    def all_clear(self) -> bool:
        """Every condition that fired has a recovery (ops incidents resolve on this)."""
        return bool(self.firing) and not any(self.firing.values())

    def summary(self) -> str:
        # most frequent first, ties by name: by name, then stably by count (both sorts in C),
        # of the signatures counted at least as often as the third most frequent one only (an
        # incident with 60 signatures: a sort of 60 counts instead of two of 60 pairs)
        signatures = self.signatures
        counts = sorted(signatures.values(), reverse=True)
        least = counts[2] if len(counts) > 3 else 0
        top = sorted(sorted([(s, n) for s, n in signatures.items() if n >= least]), key=_COUNT, reverse=True)[:3]
        sigs = ", ".join(f"{s} x{n}" for s, n in top)
        where = self.assets[0] + (f" (+{len(self.assets) - 1} assets)" if len(self.assets) > 1 else "")
        extra = f"; {self.summary_note}" if self.summary_note else ""
        flap = f"; flapping: {', '.join(sorted(self.flapping))}" if self.flapping else ""
        return (
            f"{self.kind.value} incident on {where}: {self.alert_count} alerts, "
            f"{len(self.signatures)} signatures ({sigs}){flap}{extra}"
        )

    def snapshot(self) -> Incident:
        kind = self.kind
        return Incident(
            incident_id=self.id,
            kind=kind,
            assets=tuple(self.assets),
            opened_at=to_dt(self.opened_at),
            updated_at=to_dt(self.updated_at),
            resolved_at=to_dt(self.resolved_at) if self.resolved_at is not None else None,
            severity=self.severity,
            score=round(min(100.0, self.raw / self.threshold * 50.0), 1),
            alert_count=self.alert_count,
            root_cause=self.root,
            merged_into=self.merged_into,
            owners=tuple(sorted(self.owners | _teams(self.domains))),
            summary=self.summary(),
            next_step=_NEXT_STEP[kind].format(asset=self.root.asset),
        )

    def event(self, kind: LifecycleEvent, now: float) -> IncidentEvent:
        """Next versioned lifecycle event; clears the dirty flag."""
        self.version += 1
        self.last_emit = now
        self.dirty = False
        base = self.snapshot()
        # the snapshot is validated; the rest are validated ids, timeline entries and counts
        return trusted(
            _INCIDENT_EVENT,
            {
                **base.__dict__,
                "event": kind,
                "version": self.version,
                "alert_ids": tuple(self.alert_ids),
                "alert_ids_total": self.alert_count,
                "reasons": tuple(self.reasons),
                "timeline": tuple(self.timeline),
            },
        )
