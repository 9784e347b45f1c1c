"""The correlation engine: per-asset event-time correlation with one decision per alert.

Order of questions for each alert (the first that answers decides):
redelivered? -> analyst verdict -> suppression rule -> change window / authorised scan ->
recovery of a known condition -> open incident on the asset -> consequence of a linked
device's incident -> same signature as a live campaign on another asset -> routine
(baseline) or duplicate -> evidence in the asset's window (weakly weighted during warm-up) (decided when the window
opens an incident or closes without one).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from correlators.baseline import Baseline, Familiarity
from correlators.config import EngineConfig
from correlators.explain import Explainer
from correlators.identity import Identity
from correlators.lifecycle import IncidentState, incident_id, kind_of, to_dt
from correlators.redelivery import SeenIds
from correlators.ruleset import Finding, RuleSet
from correlators.scoring import (
    FIRST_WEIGHT,
    NOVEL,
    NOVEL_HERE,
    SEVERITY_WEIGHT,
    UNCOMMON,
    criticality_factor,
)
from correlators.topology import Precedence, Topology
from correlators.types import Earlier, Output
from correlators.windows import Waiting, Window
from schemas.context import Asset, Change, Exposure, Feedback, FeedbackKind
from schemas.epoch import epoch_seconds
from schemas.models import (
    SCHEMA_VERSION,
    SEVERITY_RANK,
    Alert,
    Decision,
    Disposition,
    Domain,
    Incident,
    LifecycleEvent,
    RootCause,
    Severity,
    Status,
    trusted,
)
from schemas.rules import AnyRule
from schemas.rules import default_rules as load_default_rules

__all__ = ["Engine", "EngineStats"]

_FAR_FUTURE: Final = 4102444800.0  # 2100-01-01
_MAX_ROTATIONS: Final = 64  # pinned assets (waiting window, live incident) skipped per eviction pass
# Module constants for what the hot path asks per alert. `Final`: compiled, a final name is a
# C static, where any other module global is a lookup in the module's dict; and `Domain.OPS`
# itself is a class attribute lookup through the enum metaclass (~65 ns).
_INCIDENT: Final = Disposition.INCIDENT
_NOISE: Final = Disposition.NOISE
_DUPLICATE: Final = Disposition.DUPLICATE
_INVALID: Final = Disposition.INVALID
_OPS: Final = Domain.OPS
_SECURITY: Final = Domain.SECURITY
_FIRING: Final = Status.FIRING
_RESOLVED: Final = Status.RESOLVED
_OPENED_EVENT: Final = LifecycleEvent.OPENED
_UPDATED_EVENT: Final = LifecycleEvent.UPDATED
_RESOLVED_EVENT: Final = LifecycleEvent.RESOLVED
_MERGED_EVENT: Final = LifecycleEvent.MERGED
_RANK: Final = SEVERITY_RANK
_HIGH_RANK: Final = SEVERITY_RANK[Severity.HIGH]
_DECISION: Final = Decision
_VERSION: Final = SCHEMA_VERSION
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop


class EngineStats:
    """Counters the shell exports as metrics."""

    __slots__ = (
        "late", "alerts", "evicted_assets", "windows_closed_early", "assets_over_cap", "window_full",
        "incidents_capped", "incidents_pruned", "rule_groups_expired", "rule_groups_over_cap",
    )

    def __init__(self) -> None:
        self.windows_closed_early = 0  # max_windows: windows closed before their time
        self.late = 0
        self.alerts = 0
        self.evicted_assets = 0  # idle past max_idle, or beyond max_assets
        self.assets_over_cap = 0  # max_assets: evicted while not idle
        self.window_full = 0  # max_pending_per_asset: alerts decided without being scored
        self.incidents_capped = 0  # max_alert_ids_per_event: incidents listing only some ids
        self.incidents_pruned = 0  # retain_resolved: resolved/merged incidents forgotten (routine)
        self.rule_groups_expired = 0  # correlation-rule groups older than the rule's timespan (routine)
        self.rule_groups_over_cap = 0  # max_rule_groups: least recently updated groups dropped


@lru_cache(maxsize=4096)
def _when(ts: float) -> str:
    return to_dt(ts).strftime("%Y-%m-%d %H:%M:%S UTC")


class Engine:
    """Pure, deterministic correlator (implements `correlators.types.Correlator`)."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        assets: list[Asset] | None = None,
        changes: list[Change] | None = None,
        rules: list[AnyRule] | None = None,
        feedback: list[Feedback] | None = None,
        default_rules: bool = False,
    ) -> None:
        cfg = config or EngineConfig()
        if default_rules:
            rules = [*load_default_rules(), *(rules or [])]
        self.cfg = cfg
        self.stats = EngineStats()
        self.identity = Identity()
        self.topology = Topology()
        self.explainer = Explainer()
        self.rules = RuleSet(rules or [], max_groups=cfg.max_rule_groups)
        self.baseline = Baseline(cfg.baseline_half_life.total_seconds(), cfg.routine_count)
        self.precedence = Precedence(cfg.topology_window.total_seconds(), cfg.precedence_min_lift)
        self._gap = cfg.session_gap.total_seconds()
        self._max_window = cfg.max_window.total_seconds()
        self._lateness = cfg.allowed_lateness.total_seconds()
        self._quiet = cfg.quiet_period.total_seconds()
        self._reopen = cfg.reopen_window.total_seconds()
        self._interval = cfg.update_interval.total_seconds()
        self._clock = float("-inf")
        self._first: float | None = None
        self._seen = SeenIds(cfg.max_seen_ids)  # the redelivery memory
        # oldest first (the first closes early at `max_windows`); an OrderedDict for the same
        # reason as `_recent_assets` below: under a storm of new assets each early close took
        # `next(iter())` over the holes at a plain dict's front, ~60 µs an alert at 100,000 windows
        self._windows: OrderedDict[str, Window] = OrderedDict()
        self._window_heap: list[tuple[float, str, float]] = []
        self._incidents: dict[str, IncidentState] = {}
        self._open_by_asset: dict[str, str] = {}
        self._quiet_heap: list[tuple[float, str]] = []
        # incidents known to hold an entry in `_quiet_heap`: one entry each, re-armed when it
        # comes due early, instead of a push per update (the heap stayed as long as the stream)
        self._quiet_armed: set[str] = set()
        # (resolved_at + retain_resolved, id), pushed on each resolution or merge; stale entries
        # (reopened, resolved again later, already pruned) are skipped when they come due
        self._retain = cfg.retain_resolved.total_seconds() if cfg.retain_resolved is not None else None
        self._prune_heap: list[tuple[float, str]] = []
        self._dirty: set[str] = set()
        self._last_noise: dict[str, dict[str, tuple[float, str, int]]] = {}
        self._toggles: dict[str, dict[str, list[float]]] = {}
        self._sig_incident: dict[str, tuple[str, float]] = {}
        # least recently seen first; an OrderedDict because a plain dict emptied from the front
        # makes `next(iter())` scan the holes left behind (quadratic under a flood of new assets)
        self._recent_assets: OrderedDict[str, float] = OrderedDict()
        self._max_idle = cfg.max_idle.total_seconds()
        self._warmup = cfg.warmup.total_seconds()
        self._dedup = cfg.dedup_window.total_seconds()
        self._campaign_span = cfg.campaign_window.total_seconds()
        self._flap_span = cfg.flap_window.total_seconds()
        self._max_assets = cfg.max_assets
        self._caps_pair = (cfg.max_alert_ids_per_event, cfg.max_timeline)  # the config is frozen
        # context last: an acknowledgement looks up incidents, so state must exist first
        for asset in assets or ():
            self.on_context(asset)
        for change in changes or ():
            self.on_context(change)
        for item in feedback or ():
            self.on_context(item)

    # -- context -----------------------------------------------------------------------
    def on_context(self, item: Asset | Change | Feedback) -> None:
        """Add or replace inventory, change windows or analyst verdicts."""
        if isinstance(item, Asset):
            self.identity.add(item)
            self.topology.add(item)
        elif isinstance(item, Change):
            self.explainer.add_change(item)
        else:
            self.explainer.add_feedback(item)
            if item.kind is FeedbackKind.ACK and item.incident_id in self._incidents:
                inc = self._incidents[item.incident_id]
                who = f" by {item.analyst}" if item.analyst else ""
                inc.note_reason(f"acknowledged{who} at {_when(item.time.timestamp())}")
                inc.dirty = True
                self._dirty.add(inc.id)

    def snapshot(self, memory_from: int | None = None) -> bytes:
        """The complete state as JSON bytes (see correlators/state.py); with `memory_from`,
        the redelivery memory only from that position on (the rest is stored elsewhere, see
        `memory_ids`, and handed back to `restore` as `earlier`)."""
        from correlators.state import dump

        return dump(self, memory_from)

    def snapshot_document(
        self, memory_from: int | None = None, memo: Callable[[dict[str, Any]], object] | None = None
    ) -> dict[str, Any]:
        """The complete state as a JSON-ready document, for a faster encoder than `json`
        (`snapshot()` is this document, encoded). `memo`: the encoder's form of a window's
        document, put in its place and kept until the window changes (`state.document`)."""
        from correlators.state import document

        return document(self, memory_from, memo)

    @classmethod
    def restore(
        cls,
        data: bytes,
        earlier: Earlier | None = None,
        config: EngineConfig | None = None,
        *,
        parse: Callable[[bytes], Any] | None = None,
        pause: Callable[[], None] | None = None,
    ) -> Engine:
        """An engine in the state a `snapshot()` captured. `earlier`: the redelivery memory a
        `snapshot(memory_from)` left out; `config`: settings to run with instead of the ones
        the snapshot was taken with (a restart with changed settings); `parse` and `pause`:
        see `correlators.state.load`."""
        from correlators.state import load

        return load(data, earlier, config, parse=parse, pause=pause)

    # -- redelivery memory: alert ids already decided, numbered in the order remembered --
    def memory_span(self) -> tuple[int, int]:
        """Positions `[first, end)` of the ids the redelivery memory holds."""
        return self._seen.span()

    def memory_ids(self, start: int, end: int) -> list[str]:
        """The remembered ids at positions `[start, end)` still held, oldest first."""
        return self._seen.ids(start, end)

    def replace_rules(self, rules: list[AnyRule]) -> None:
        """Hot reload of the rule set."""
        self.rules.replace(rules)

    # -- inputs ------------------------------------------------------------------------
    def on_invalid(self, alert_id: str, reason: str) -> list[Output]:
        """An input that could not be parsed gets its `invalid` decision."""
        if not self._seen.remember(alert_id):
            return []
        return [Decision(alert_id=alert_id, disposition=_INVALID, reason=reason)]

    def on_alert(self, alert: Alert) -> list[Output]:
        """Decide (now or when its window ends) one alert; returns whatever became due."""
        if not self._seen.remember(alert.id):
            return []
        self.stats.alerts += 1
        out: list[Output] = []
        ts = epoch_seconds(alert.time)
        if self._first is None:
            self._first = ts
        late = ts < self._clock - self._lateness
        if ts > self._clock:
            self._advance(ts, out)
        asset = self.identity.resolve(alert)
        recent = self._recent_assets
        recent[asset] = ts
        recent.move_to_end(asset)
        if late:
            self.stats.late += 1
        self._decide(alert, asset, ts, late, out)
        signature = alert.signature
        self.baseline.observe(asset, signature, ts)
        if alert.domain is _OPS and alert.status is _FIRING:
            self.precedence.observe(ts, asset, signature, self.topology.neighbours(asset))
        # after the alert made its state: evicting first forgot this (newest) asset while its
        # baseline and window were created just after, untracked and never evicted again
        if len(recent) > self._max_assets:
            self._evict(ts)
        return out

    def advance(self, watermark: datetime) -> list[Output]:
        """Move event time forward (idle partitions): close windows, resolve quiet incidents."""
        out: list[Output] = []
        ts = epoch_seconds(watermark)
        if ts > self._clock:
            self._advance(ts, out)
        return out

    def flush(self) -> list[Output]:
        """End of input: decide every waiting alert and publish pending updates."""
        out: list[Output] = []
        for asset in sorted(self._windows):
            self._close_window(asset, out)
        self._window_heap.clear()
        for inc_id in sorted(self._dirty):
            inc = self._incidents[inc_id]
            if inc.dirty:
                out.append(inc.event(_UPDATED_EVENT, inc.updated_at))
        self._dirty.clear()
        return out

    def incidents(self) -> list[Incident]:
        """Final state of every incident, by id."""
        return [self._incidents[k].snapshot() for k in sorted(self._incidents)]

    # -- decision flow -----------------------------------------------------------------
    def _decide(self, alert: Alert, asset: str, ts: float, late: bool, out: list[Output]) -> None:
        explainer = self.explainer
        domain, signature = alert.domain, alert.signature  # read once: each read of a record's field is a lookup
        verdict = explainer.verdict(alert, asset) if explainer.has_feedback else None
        if verdict is not None:
            who = f" by {verdict.analyst}" if verdict.analyst else ""
            note = f": {verdict.note}" if verdict.note else ""
            self._noise(alert, asset, f"analyst verdict {verdict.kind.value} {verdict.id}{who}{note}", out)
            return
        rule = self.rules.suppression(alert)
        if rule is not None:
            self._noise(alert, asset, f"suppressed by rule {rule.id}: {rule.reason}", out)
            return
        explained = explainer.change_reason(alert, asset) if explainer.has_changes else None
        if explained is not None:
            self._noise(alert, asset, explained, out)
            return
        severity, sev_rule = self.rules.severity(alert)
        if alert.status is _RESOLVED:
            self._recovery(alert, asset, severity, ts, out)
            return
        fam = self.baseline.familiarity(asset, signature, ts)
        findings = self.rules.correlate(alert, asset, ts)
        if self.rules.over_cap:
            self.stats.rule_groups_over_cap += self.rules.over_cap
            self.rules.over_cap = 0
        # a firing alert only flaps where a recovery left toggles (`_flapping` makes none for it)
        flapping = asset in self._toggles and self._flapping(alert, asset, ts)
        routine = self.baseline.is_routine(fam) and not findings and not flapping
        inc = self._live_incident(asset, ts)
        if inc is not None and not self._fits(inc, alert):
            inc = None
        if inc is not None and (
            not routine or (asset, signature) in inc.evidence or domain not in inc.domains
        ):
            if not routine and domain is _SECURITY:
                other = self._campaign(alert, asset, ts)
                if other is not None and other.id != inc.id:
                    loser, inc = sorted((inc, other), key=lambda i: (i.opened_at, i.id), reverse=True)
                    self._merge(loser, inc, ts, out)
            if not routine:
                inc.evidence.add((asset, signature))
            self._join(inc, alert, asset, severity, self._member_note(fam, asset), ts, out)
            inc.raw += self._contribution(inc, alert, severity, fam)
            return
        if late:
            self._noise(
                alert, asset, f"late: {self._clock - ts:.0f} s behind the watermark, no open incident on {asset}", out
            )
            return
        if domain is _OPS and not routine:
            parent = self._parent_incident(signature, asset, ts)
            if parent is not None:
                parent.consequences += 1
                note = f"consequence of {parent.root.asset} {parent.root_signature} (incident {parent.id})"
                self._join(parent, alert, asset, severity, note, ts, out)
                return
        if domain is _OPS:
            sec = self._corroborates(alert, asset, fam, ts)
            if sec is not None:
                note = f"ops symptom on {asset} during security incident {sec.id} on {sec.root.asset}"
                self._join(sec, alert, asset, severity, note, ts, out)
                return
        if domain is _SECURITY and not routine:
            camp = self._campaign(alert, asset, ts)
            if camp is not None:
                span = self.cfg.campaign_window
                note = f"same signature as incident {camp.id} on {camp.root.asset} within {span} (one campaign)"
                self._join(camp, alert, asset, severity, note, ts, out)
                return
        if routine:
            self._routine(alert, asset, fam, ts, out)
            return
        warm = (
            self._first is not None
            and ts < self._first + self._warmup
            and _RANK[severity] < _HIGH_RANK
            and not findings
            and not flapping
        )
        self._evidence(alert, asset, severity, fam, findings, flapping, sev_rule, ts, out, warm=warm)

    def _root_of(self, window: Window) -> tuple[Waiting, set[str]]:
        """Root alert of a window, and the ids of ops alarms that are not plausible effects of it.

        Security windows: the first alert is the root. Ops windows: the alarm type that explains
        first alarm; later alarms that are not learned effects of it are kept apart.
        """
        first = window.pending[0]
        if _SECURITY in window.domains:
            return first, set()
        best = first
        apart = {
            a.id
            for a in window.pending
            if a.domain is _OPS and not self.precedence.plausible(best.signature, a.signature)
        }
        return best, apart

    def _fits(self, inc: IncidentState, alert: Alert) -> bool:
        """An ops alarm joins an operational incident only as the root's type or a plausible effect."""
        if alert.domain is not _OPS or _SECURITY in inc.domains:
            return True
        return self.precedence.plausible(inc.root_signature, alert.signature)

    @property
    def _first_ts(self) -> float:
        return self._first if self._first is not None else self._clock

    def _novelty(self, fam: Familiarity) -> float:
        if fam.novel:
            if fam.seen_elsewhere <= 0:
                return NOVEL
            return NOVEL_HERE if fam.seen_elsewhere <= 2 else UNCOMMON
        return UNCOMMON

    def _contribution(self, inc: IncidentState, alert: Alert, severity: Severity, fam: Familiarity) -> float:
        """Evidence a joining alert adds to an open incident's score."""
        weight = SEVERITY_WEIGHT[severity]
        if inc.signatures.get(alert.signature, 0) <= 1:
            if self.baseline.is_routine(fam):
                return weight * UNCOMMON
            return weight * self._novelty(fam) * FIRST_WEIGHT
        return 0.0

    def _member_note(self, fam: Familiarity, asset: str) -> str:
        if fam.novel:
            return f"never seen on {asset} before"
        return f"seen {fam.total} times on {asset} before"

    def _evidence(
        self,
        alert: Alert,
        asset: str,
        severity: Severity,
        fam: Familiarity,
        findings: list[Finding],
        flapping: bool,
        sev_rule: str | None,
        ts: float,
        out: list[Output],
        *,
        warm: bool = False,
    ) -> None:
        novelty = self._novelty(fam)
        if fam.novel:
            note = (
                "never seen before"
                if fam.seen_elsewhere <= 0
                else f"new on {asset} (known on {fam.seen_elsewhere} other assets)"
            )
        elif self.baseline.is_routine(fam):
            note = f"burst of a routine signature ({fam.total} seen before)"
        else:
            note = f"uncommon ({fam.total} seen before)"
        if sev_rule is not None:
            note += f", severity {severity.value} by rule {sev_rule}"
        if warm:
            # No baseline yet: everything looks new. Keep the alert as weak evidence, so it
            # is decided with its window (and joins an incident a strong signal opens).
            novelty *= self.cfg.warmup_weight
            note += f" (baseline warm-up until {_when(self._first_ts + self._warmup)})"
        window = self._windows.get(asset)
        if window is None:
            if len(self._windows) >= self.cfg.max_windows:
                self.stats.windows_closed_early += 1
                self._close_window(next(iter(self._windows)), out, early=True)
            window = Window(asset=asset, start=ts, last=ts)
            self._windows[asset] = window
            _heappush(self._window_heap, (ts + self._gap, asset, ts))
        elif len(window.pending) >= self.cfg.max_pending_per_asset:
            self.stats.window_full += 1
            self._noise(
                alert,
                asset,
                f"window on {asset} full ({self.cfg.max_pending_per_asset} waiting alerts): not scored",
                out,
            )
            return
        window.add(alert, severity, novelty, note)
        for finding in findings:
            window.add_finding(finding.detail, SEVERITY_WEIGHT[finding.severity] * FIRST_WEIGHT)
            if finding.tactic:
                window.add_tactic(finding.tactic)
        if flapping:
            window.add_finding(f"{alert.signature} flapping on {asset}", self.cfg.open_threshold)
        factor = self._factor(asset)
        score = window.score(factor)
        if score >= self.cfg.open_threshold:
            self._open(window, score, factor, ts, out, flapping=alert.signature if flapping else None)

    def _open(
        self, window: Window, score: float, factor: float, ts: float, out: list[Output], flapping: str | None
    ) -> None:
        asset = window.asset
        del self._windows[asset]
        explanation = window.explain(score, self.cfg.open_threshold)
        first, apart = self._root_of(window)
        target = self._group_target(window, ts, out)
        if target is None:
            inc = IncidentState(
                id=incident_id(asset, ts, first.id),
                assets=[asset],
                opened_at=ts,
                root=RootCause(asset=asset, alert_id=first.id),
                root_signature=first.signature,
                owners=self._owners(asset),
                threshold=self.cfg.open_threshold,
            )
            inc.raw = score
            self._incidents[inc.id] = inc
            opening = True
        else:
            inc, opening = target, False
            inc.raw += score
            inc.owners |= self._owners(asset)
        if flapping:
            inc.flapping.add(flapping)
        inc.note_reason(f"{asset}: {explanation}")
        self._open_by_asset[asset] = inc.id
        inc.evidence.update((asset, sig) for sig, ev in window.evidence.items() if ev.weight > 0)
        for alert in window.pending:
            if alert.id in apart:
                reason = (
                    f"window on {asset} opened incident {inc.id}, but {alert.signature} is not a "
                    f"known effect of its root {first.signature}: kept apart"
                )
                out.append(self._decision(alert, asset, _NOISE, reason, None))
                continue
            inc.add(alert, asset, alert.severity, "", self._caps())
            self._capped(inc)
            self._sig_incident[alert.signature] = (inc.id, ts)
            reason = f"evidence in incident {inc.id}: {explanation}"
            out.append(self._decision(alert, asset, _INCIDENT, reason, inc))
        if opening:
            inc.updated_at = ts
            out.append(inc.event(_OPENED_EVENT, ts))
        else:
            self._mark(inc, ts, out)
        self._arm_quiet(inc)

    def _join(
        self, inc: IncidentState, alert: Alert, asset: str, severity: Severity, note: str, ts: float, out: list[Output]
    ) -> None:
        if inc.resolved_at is not None:
            inc.resolved_at = None
            inc.note_reason(f"reopened at {_when(ts)} on new evidence")
        inc_id = inc.id
        self._open_by_asset.setdefault(asset, inc_id)
        if asset not in inc.assets:
            inc.owners |= self._owners(asset)
        inc.add(alert, asset, severity, note, self._caps_pair, ts)
        if inc.alert_count == self._caps_pair[0] + 1:
            self.stats.incidents_capped += 1
        self._sig_incident[alert.signature] = (inc_id, ts)
        reason = f"joins open incident {inc_id} on {inc.root.asset}: {note}"
        out.append(self._decision(alert, asset, _INCIDENT, reason, inc))
        # self._mark(inc, ts, out) and self._arm_quiet(inc), inline: once per joining alert
        if ts - inc.last_emit >= self._interval:
            out.append(inc.event(_UPDATED_EVENT, ts))
            self._dirty.discard(inc_id)
        else:
            self._dirty.add(inc_id)
        if inc_id not in self._quiet_armed:
            self._quiet_armed.add(inc_id)
            _heappush(self._quiet_heap, (inc.last_activity + self._quiet, inc_id))

    def _recovery(self, alert: Alert, asset: str, severity: Severity, ts: float, out: list[Output]) -> None:
        inc = self._condition_incident(asset, alert.signature, ts)
        if inc is None:
            self._flapping(alert, asset, ts)
            self._noise(alert, asset, f"recovery of {alert.signature} on {asset}: no open incident holds it", out)
            return
        inc.add(alert, asset, severity, "recovery", self._caps(), ts)
        self._capped(inc)
        reason = f"recovery of {alert.signature} on {asset} in incident {inc.id}"
        out.append(self._decision(alert, asset, _INCIDENT, reason, inc))
        flapping = self._flapping(alert, asset, ts)
        if inc.all_clear() and not flapping and not inc.flapping and inc.resolved_at is None:
            inc.resolved_at = ts
            inc.note_reason(f"all conditions cleared at {_when(ts)}")
            out.append(inc.event(_RESOLVED_EVENT, ts))
            self._dirty.discard(inc.id)
            self._retire(inc)
        else:
            self._mark(inc, ts, out)

    def _routine(self, alert: Alert, asset: str, fam: Familiarity, ts: float, out: list[Output]) -> None:
        key = alert.signature
        memory = self._last_noise.get(asset)
        if memory is None:
            memory = self._last_noise[asset] = {}
        prev = memory.get(key)
        if prev is not None and ts - prev[0] <= self._dedup:
            count = prev[2] + 1
            memory[key] = (prev[0], prev[1], count)
            reason = (
                f"duplicate of {prev[1]}: {alert.signature} repeated {count} times on {asset} since {_when(prev[0])}"
            )
            out.append(self._decision(alert, asset, _DUPLICATE, reason, None))
            return
        memory[key] = (ts, alert.id, 1)
        reason = (
            f"routine: {alert.signature} seen {fam.total} times on {asset} "
            f"(~{fam.rate_per_hour:.1f}/h, in {fam.hours_seen} distinct hours of day)"
        )
        out.append(self._decision(alert, asset, _NOISE, reason, None))

    # -- cross-asset grouping ----------------------------------------------------------
    def _live_incident(self, asset: str, ts: float) -> IncidentState | None:
        inc_id = self._open_by_asset.get(asset)
        if inc_id is None:
            return None
        inc = self._incidents[inc_id]
        if inc.resolved_at is None:
            return inc
        if ts - inc.resolved_at <= self._reopen:
            return inc
        del self._open_by_asset[asset]
        return None

    def _parent_incident(self, signature: str, asset: str, ts: float) -> IncidentState | None:
        near = self.topology.upstream(asset) | self.topology.neighbours(asset)
        span = self.cfg.topology_window.total_seconds()
        best: IncidentState | None = None
        for other in sorted(near):
            inc_id = self._open_by_asset.get(other)
            if inc_id is None:
                continue
            inc = self._incidents[inc_id]
            if inc.resolved_at is not None or ts - inc.last_activity > span:
                continue
            if inc.kind.value == "security":
                continue
            if not self.precedence.plausible(inc.root_signature, signature):
                continue
            if best is None or inc.opened_at < best.opened_at:
                best = inc
        return best

    def _campaign(self, alert: Alert, asset: str, ts: float) -> IncidentState | None:
        hit = self._sig_incident.get(alert.signature)
        if hit is None:
            return None
        inc = self._incidents[hit[0]]
        if inc.resolved_at is not None or ts - hit[1] > self._campaign_span:
            return None
        if asset in inc.assets or _SECURITY not in inc.domains:
            return None
        return inc

    def _corroborates(self, alert: Alert, asset: str, fam: Familiarity, ts: float) -> IncidentState | None:
        if fam.rate_per_hour >= 1.0:
            return None
        span = self.cfg.corroboration_window.total_seconds()
        linked = self.topology.neighbours(asset) | self.topology.upstream(asset)
        best: IncidentState | None = None
        for inc_id in sorted(set(self._open_by_asset.values())):
            inc = self._incidents[inc_id]
            if inc.resolved_at is not None or _SECURITY not in inc.domains:
                continue
            if ts - inc.last_activity > span or inc.raw < 1.5 * self.cfg.open_threshold:
                continue
            if linked and not linked.intersection(inc.assets):
                continue
            if best is None or inc.raw > best.raw:
                best = inc
        return best

    def _group_target(self, window: Window, ts: float, out: list[Output]) -> IncidentState | None:
        """An open incident this window's evidence belongs to (campaign or topology).

        When the window's signatures are live in several security incidents, they are one
        campaign: the others are merged into the oldest.
        """
        if _SECURITY in window.domains:
            span = self._campaign_span
            found: dict[str, IncidentState] = {}
            for sig in sorted(window.evidence):
                hit = self._sig_incident.get(sig)
                if hit is None or ts - hit[1] > span:
                    continue
                inc = self._incidents[hit[0]]
                if inc.resolved_at is None and _SECURITY in inc.domains:
                    found[inc.id] = inc
            if not found:
                return None
            ordered = sorted(found.values(), key=lambda i: (i.opened_at, i.id))
            for other in ordered[1:]:
                self._merge(other, ordered[0], ts, out)
            return ordered[0]
        return self._parent_incident(window.pending[0].signature, window.asset, ts)

    def _merge(self, loser: IncidentState, winner: IncidentState, ts: float, out: list[Output]) -> None:
        """Fold one incident into another: `merged` event for the loser, update for the winner."""
        loser.merged_into = winner.id
        loser.resolved_at = ts
        loser.updated_at = max(loser.updated_at, ts)
        loser.note_reason(f"merged into {winner.id} (same campaign)")
        out.append(loser.event(_MERGED_EVENT, ts))
        self._dirty.discard(loser.id)
        self._retire(loser)
        for asset in loser.assets:
            if asset not in winner.assets:
                winner.assets.append(asset)
            if self._open_by_asset.get(asset) == loser.id:
                self._open_by_asset[asset] = winner.id
        for sig, (inc_id, when) in list(self._sig_incident.items()):
            if inc_id == loser.id:
                self._sig_incident[sig] = (winner.id, when)
        winner.alert_count += loser.alert_count
        winner.domains |= loser.domains
        winner.owners |= loser.owners
        winner.evidence |= loser.evidence
        winner.raw += loser.raw
        for sig, n in loser.signatures.items():
            winner.signatures[sig] = winner.signatures.get(sig, 0) + n
        if _RANK[loser.severity] > _RANK[winner.severity]:
            winner.severity = loser.severity
        winner.last_activity = max(winner.last_activity, loser.last_activity)
        winner.note_reason(f"absorbed {loser.id} ({loser.alert_count} alerts on {', '.join(loser.assets[:5])})")
        winner.dirty = True

    def _condition_incident(self, asset: str, signature: str, ts: float) -> IncidentState | None:
        inc = self._live_incident(asset, ts)
        if inc is not None and (asset, signature) in inc.firing:
            return inc
        return None

    def _flapping(self, alert: Alert, asset: str, ts: float) -> bool:
        """Firing/resolved toggles of one condition: flapping at `flap_transitions` in the span."""
        key = alert.signature
        per_asset = self._toggles.get(asset)
        marks = per_asset.get(key) if per_asset is not None else None
        if alert.status is _RESOLVED or marks is not None:
            if per_asset is None:
                per_asset = self._toggles[asset] = {}
            if marks is None:
                marks = per_asset[key] = []
            if not marks or (len(marks) % 2 == 0) == (alert.status is _FIRING):
                marks.append(ts)
            horizon = ts - self._flap_span
            while marks and marks[0] < horizon:
                marks.pop(0)
            if not marks:
                del per_asset[key]
                if not per_asset:
                    del self._toggles[asset]
            return len(marks) >= self.cfg.flap_transitions
        return False

    # -- time --------------------------------------------------------------------------
    def _advance(self, ts: float, out: list[Output]) -> None:
        self._clock = ts
        heap = self._window_heap
        closing: list[tuple[float, str]] = []
        while heap and heap[0][0] <= ts:
            _, asset, start = _heappop(heap)
            window = self._windows.get(asset)
            if window is None or window.start != start:
                continue
            deadline = min(window.last + self._gap, window.start + self._max_window)
            if deadline <= ts:
                closing.append((deadline, asset))
            else:
                _heappush(heap, (deadline, asset, start))
        # close in true-deadline order, whatever stale heap entries said (restores match)
        for _, asset in sorted(set(closing)):
            self._close_window(asset, out)
        qheap = self._quiet_heap
        quiet: list[tuple[float, str]] = []
        armed = self._quiet_armed
        while qheap and qheap[0][0] <= ts:
            _, inc_id = _heappop(qheap)
            armed.discard(inc_id)
            inc = self._incidents.get(inc_id)
            if inc is None or inc.resolved_at is not None:
                continue
            due = inc.last_activity + self._quiet
            if due > ts:
                _heappush(qheap, (due, inc_id))
                armed.add(inc_id)
                continue
            quiet.append((due, inc_id))
        # resolve in true-deadline order too, whatever stale heap entries said (restores match)
        for due, inc_id in sorted(set(quiet)):
            inc = self._incidents[inc_id]
            inc.resolved_at = due
            inc.updated_at = max(inc.updated_at, due)
            inc.note_reason(f"quiet for {self.cfg.quiet_period} after {_when(inc.last_activity)}")
            out.append(inc.event(_RESOLVED_EVENT, due))
            self._dirty.discard(inc_id)
            self._retire(inc)
        if self._dirty:
            for inc_id in sorted(self._dirty):
                inc = self._incidents[inc_id]
                if inc.last_emit + self._interval <= ts:
                    if inc.dirty:
                        out.append(inc.event(_UPDATED_EVENT, ts))
                    self._dirty.discard(inc_id)
        if self._prune_heap and self._prune_heap[0][0] <= ts:
            self._prune(ts)
        rules = self.rules
        rules.expire(ts - self._lateness)
        if rules.expired:
            self.stats.rule_groups_expired += rules.expired
            rules.expired = 0
        recent = self._recent_assets
        if recent and next(iter(recent.values())) < ts - self._max_idle:
            self._evict(ts)

    def _retire(self, inc: IncidentState) -> None:
        """The incident resolved or merged: forget it `retain_resolved` later (when set)."""
        if self._retain is not None and inc.resolved_at is not None:
            _heappush(self._prune_heap, (inc.resolved_at + self._retain, inc.id))

    def _prune(self, ts: float) -> None:
        """Forget incidents resolved (or merged) more than `retain_resolved` ago, and every index entry
        pointing at them, so their assets can be evicted like any other."""
        assert self._retain is not None
        heap = self._prune_heap
        while heap and heap[0][0] <= ts:
            _, inc_id = _heappop(heap)
            inc = self._incidents.get(inc_id)
            if inc is None or inc.resolved_at is None or inc.resolved_at + self._retain > ts:
                continue  # pruned already, reopened, or resolved again later (a newer entry exists)
            del self._incidents[inc_id]
            for asset in inc.assets:
                if self._open_by_asset.get(asset) == inc_id:
                    del self._open_by_asset[asset]
            for sig in inc.signatures:
                hit = self._sig_incident.get(sig)
                if hit is not None and hit[0] == inc_id:
                    del self._sig_incident[sig]
            self._dirty.discard(inc_id)
            self._quiet_armed.discard(inc_id)
            self.stats.incidents_pruned += 1

    def _evict(self, now: float) -> None:
        """Forget the state of assets idle past `max_idle`, or the least recent beyond `max_assets`.

        An asset with a waiting window or a live incident is never evicted (it is moved to the
        back of the queue instead); eviction costs that asset its baseline and dedup memory.
        """
        recent = self._recent_assets
        horizon = now - self._max_idle
        # Pinned assets met at the front are moved to the back, a bounded number per call: when
        # nearly every tracked asset is pinned, rotating them all on each alert was quadratic.
        budget = min(len(recent), _MAX_ROTATIONS)
        while recent and budget > 0:
            asset, seen = next(iter(recent.items()))
            if seen >= horizon and len(recent) <= self.cfg.max_assets:
                return
            if asset in self._windows or asset in self._open_by_asset:
                budget -= 1
                recent.move_to_end(asset)
                continue
            del recent[asset]
            self.baseline.forget_asset(asset)
            self._last_noise.pop(asset, None)
            self._toggles.pop(asset, None)
            self.stats.evicted_assets += 1
            if seen >= horizon:
                self.stats.assets_over_cap += 1

    def tracked_assets(self) -> int:
        """Assets with state in the engine (for the tracked-assets metric)."""
        return len(self._recent_assets)

    def _close_window(self, asset: str, out: list[Output], early: bool = False) -> None:
        window = self._windows.pop(asset)
        score = window.score(self._factor(asset))
        why = window.explain(score, self.cfg.open_threshold)
        how = f"closed early (more than {self.cfg.max_windows} open windows)" if early else "closed"
        for alert in window.pending:
            reason = f"window on {asset} {how} without incident: {why}"
            out.append(self._decision(alert, asset, _NOISE, reason, None))

    # -- helpers -----------------------------------------------------------------------
    def _arm_quiet(self, inc: IncidentState) -> None:
        """Make sure the incident's quiet timeout is checked no later than it can fall due.

        `last_activity` only grows, so an entry already in the heap is never late: when it
        comes due early, `_advance` pushes it again at the true deadline.
        """
        if inc.id not in self._quiet_armed:
            self._quiet_armed.add(inc.id)
            _heappush(self._quiet_heap, (inc.last_activity + self._quiet, inc.id))

    def _mark(self, inc: IncidentState, ts: float, out: list[Output]) -> None:
        if ts - inc.last_emit >= self._interval:
            out.append(inc.event(_UPDATED_EVENT, ts))
            self._dirty.discard(inc.id)
        else:
            self._dirty.add(inc.id)

    def _noise(self, alert: Alert, asset: str, reason: str, out: list[Output]) -> None:
        out.append(self._decision(alert, asset, _NOISE, reason, None))

    def _decision(
        self, alert: Alert | Waiting, asset: str, disposition: Disposition, reason: str, inc: IncidentState | None
    ) -> Decision:
        # every value is the validated alert's, the engine's own enum, or its text
        return trusted(
            _DECISION,
            {
                "schema_version": _VERSION,
                "alert_id": alert.id,
                "disposition": disposition,
                "incident_id": inc.id if inc is not None else None,
                "incident_kind": kind_of(inc.domains) if inc is not None else None,
                "reason": reason,
                "asset": asset,
                "time": alert.time,
            },
        )

    def _factor(self, asset: str) -> float:
        entry = self.identity.asset(asset)
        if entry is None:
            return criticality_factor(3, False)
        return criticality_factor(entry.criticality, entry.exposure is Exposure.INTERNET)

    def _owners(self, asset: str) -> set[str]:
        entry = self.identity.asset(asset)
        return {entry.owner} if entry is not None and entry.owner else set()

    def _caps(self) -> tuple[int, int]:
        return self._caps_pair

    def _capped(self, inc: IncidentState) -> None:
        """Count an incident whose list of alert ids just became full (its events count the rest)."""
        if inc.alert_count == self._caps_pair[0] + 1:
            self.stats.incidents_capped += 1
