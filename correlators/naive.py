"""The naive baseline: one incident per asset (or topology component) per quiet gap.

This is what `socnoc evaluate` prints beside the real engine, so that every figure has a
reference point. It has no scoring, no context and no rules: an alert joins the open incident
of its group when it arrives at most `gap` after the group's previous alert, and starts a new
incident otherwise (a session window). Every valid alert is decided `incident` on arrival.
Pure and deterministic: time only comes from the alerts and from `advance`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from schemas.context import Asset, Change, Feedback
from schemas.models import (
    SEVERITY_RANK,
    Alert,
    Decision,
    Disposition,
    Domain,
    Incident,
    IncidentEvent,
    IncidentKind,
    LifecycleEvent,
    RootCause,
    Severity,
)

from .types import Output

__all__ = ["NaiveCorrelator", "GroupBy", "DEFAULT_GAP", "COMPONENT_GAP"]

GroupBy = Literal["asset", "component"]
DEFAULT_GAP = timedelta(minutes=15)
COMPONENT_GAP = timedelta(minutes=5)
_SCORE_PER_RANK = 25.0


@dataclass
class _Session:
    """One naive incident: the alerts of a group that arrived less than `gap` apart."""

    incident_id: str
    key: str
    opened_at: datetime
    last: datetime
    root: RootCause
    severity: Severity
    assets: list[str] = field(default_factory=list)
    domains: set[Domain] = field(default_factory=set)
    alert_count: int = 0
    resolved_at: datetime | None = None
    version: int = 1

    @property
    def kind(self) -> IncidentKind:
        if self.domains == {Domain.SECURITY}:
            return IncidentKind.SECURITY
        if self.domains == {Domain.OPS}:
            return IncidentKind.OPERATIONAL
        return IncidentKind.CONVERGED


class NaiveCorrelator:
    """Session-window grouping per asset or per connected component of the inventory links."""

    def __init__(
        self,
        *,
        gap: timedelta = DEFAULT_GAP,
        group_by: GroupBy = "asset",
        assets: Iterable[Asset] = (),
    ) -> None:
        if gap <= timedelta(0):
            raise ValueError("gap must be positive")
        if group_by not in ("asset", "component"):
            raise ValueError(f"group_by must be 'asset' or 'component', not {group_by!r}")
        self.gap = gap
        self.group_by: GroupBy = group_by
        self._assets: dict[str, Asset] = {}
        self._alias: dict[str, str] = {}
        self._component: dict[str, str] | None = None
        self._open: dict[str, _Session] = {}
        self._all: dict[str, _Session] = {}
        self._counter: dict[str, int] = {}
        self._deadlines: list[tuple[datetime, str, str]] = []
        self._seen: set[str] = set()
        for asset in assets:
            self.on_context(asset)

    # -- context -------------------------------------------------------------------------

    def on_context(self, item: Asset | Change | Feedback) -> None:
        """Inventory assets feed alias resolution and components; the rest is ignored."""
        if not isinstance(item, Asset):
            return
        self._assets[item.id] = item
        self._alias[item.id] = item.id
        for alias in item.aliases:
            self._alias.setdefault(alias, item.id)
        self._component = None

    def _canonical(self, alert: Alert) -> str:
        for ident in alert.identifiers():
            found = self._alias.get(ident)
            if found is not None:
                return found
        return alert.asset

    def _components(self) -> dict[str, str]:
        """Asset id -> the smallest asset id of its connected component (links undirected)."""
        if self._component is not None:
            return self._component
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for asset in self._assets.values():
            find(asset.id)
            for link in asset.links:
                a, b = find(asset.id), find(self._alias.get(link.to, link.to))
                if a != b:
                    parent[max(a, b)] = min(a, b)
        self._component = {x: find(x) for x in list(parent)}
        return self._component

    def _group(self, asset: str) -> str:
        if self.group_by == "asset":
            return asset
        return self._components().get(asset, asset)

    # -- alerts --------------------------------------------------------------------------

    def on_alert(self, alert: Alert) -> list[Output]:
        """Decide the alert `incident` now: join its group's session or open a new one."""
        if alert.id in self._seen:
            return []
        self._seen.add(alert.id)
        asset = self._canonical(alert)
        key = self._group(asset)
        out: list[Output] = []
        session = self._open.get(key)
        if session is not None and alert.time - session.last > self.gap:
            out.append(self._close(session))
            session = None
        opened = session is None
        if session is None:
            session = self._start(key, asset, alert)
        if asset not in session.assets:
            session.assets.append(asset)
        session.domains.add(alert.domain)
        session.alert_count += 1
        if SEVERITY_RANK[alert.severity] > SEVERITY_RANK[session.severity]:
            session.severity = alert.severity
        session.opened_at = min(session.opened_at, alert.time)
        if alert.time > session.last:
            session.last = alert.time
            heapq.heappush(self._deadlines, (alert.time + self.gap, key, session.incident_id))
        if opened:
            out.append(self._event(session, LifecycleEvent.OPENED))
        out.append(
            Decision(
                alert_id=alert.id,
                disposition=Disposition.INCIDENT,
                incident_id=session.incident_id,
                incident_kind=session.kind,
                reason=(
                    f"naive baseline: {self.group_by} {key}, alerts at most "
                    f"{_minutes(self.gap)} apart form one incident"
                ),
                asset=asset,
                time=alert.time,
            )
        )
        return out

    def on_invalid(self, alert_id: str, reason: str) -> list[Output]:
        """The `invalid` decision of an input that could not be parsed (once per id)."""
        if alert_id in self._seen:
            return []
        self._seen.add(alert_id)
        return [Decision(alert_id=alert_id, disposition=Disposition.INVALID, reason=reason)]

    def _start(self, key: str, asset: str, alert: Alert) -> _Session:
        number = self._counter.get(key, 0) + 1
        self._counter[key] = number
        session = _Session(
            incident_id=f"naive:{self.group_by}:{key}:{number:06d}",
            key=key,
            opened_at=alert.time,
            last=alert.time,
            root=RootCause(asset=asset, alert_id=alert.id),
            severity=alert.severity,
        )
        self._open[key] = session
        self._all[session.incident_id] = session
        heapq.heappush(self._deadlines, (alert.time + self.gap, key, session.incident_id))
        return session

    def _close(self, session: _Session) -> IncidentEvent:
        session.resolved_at = session.last + self.gap
        session.version += 1
        del self._open[session.key]
        return self._event(session, LifecycleEvent.RESOLVED)

    # -- time ----------------------------------------------------------------------------

    def advance(self, watermark: datetime) -> list[Output]:
        """Resolve every session whose group has been quiet for more than `gap`."""
        out: list[Output] = []
        while self._deadlines and self._deadlines[0][0] < watermark:
            deadline, key, incident_id = heapq.heappop(self._deadlines)
            session = self._open.get(key)
            if session is None or session.incident_id != incident_id:
                continue
            if session.last + self.gap != deadline:
                continue  # a later alert pushed a newer deadline
            out.append(self._close(session))
        return out

    def flush(self) -> list[Output]:
        """Nothing waits: every alert was decided on arrival. Open sessions stay open."""
        return []

    # -- state ---------------------------------------------------------------------------

    def incidents(self) -> list[Incident]:
        """Final state of every incident, ordered by incident id."""
        return [self._incident(self._all[i]) for i in sorted(self._all)]

    def _incident(self, s: _Session) -> Incident:
        owners = {a.owner for name in s.assets if (a := self._assets.get(name)) and a.owner}
        shown = ", ".join(s.assets[:3])
        if len(s.assets) > 3:
            shown += f" and {len(s.assets) - 3} more"
        return Incident(
            incident_id=s.incident_id,
            kind=s.kind,
            assets=tuple(s.assets),
            opened_at=s.opened_at,
            updated_at=s.last,
            resolved_at=s.resolved_at,
            severity=s.severity,
            score=SEVERITY_RANK[s.severity] * _SCORE_PER_RANK,
            alert_count=s.alert_count,
            root_cause=s.root,
            merged_into=None,
            owners=tuple(sorted(owners)),
            summary=f"{s.alert_count} {s.kind.value} alerts on {shown} (naive grouping)",
            next_step="Baseline grouping only: review the alerts in time order.",
        )

    def _event(self, session: _Session, event: LifecycleEvent) -> IncidentEvent:
        return IncidentEvent(
            **self._incident(session).model_dump(),
            event=event,
            version=session.version,
            alert_ids=(session.root.alert_id,),
            alert_ids_total=session.alert_count,
        )


def _minutes(gap: timedelta) -> str:
    seconds = int(gap.total_seconds())
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
