"""Rule execution: suppression, severity overrides, and Sigma-style correlation rules.

Correlation rules keep, per rule and group, only the matching events inside the rule's
timespan, so their state is bounded by the timespan and the group count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import timedelta

from schemas.models import Alert, Severity
from schemas.rules import (
    AnyRule,
    DistinctRule,
    SequenceRule,
    SeverityRule,
    SuppressRule,
    ThresholdRule,
)

__all__ = ["Finding", "RuleSet", "MAX_GROUP_EVENTS"]

MAX_GROUP_EVENTS = 10_000
_MEMO_SIZE = 65_536
_Profile = tuple[SuppressRule | None, tuple[Severity, str] | None, tuple[bool | tuple[bool, ...], ...]]


@dataclass(frozen=True, slots=True)
class Finding:
    """A correlation rule fired for a group."""

    rule_id: str
    severity: Severity
    tactic: str | None
    detail: str


def _group_key(rule: ThresholdRule | DistinctRule | SequenceRule, alert: Alert, asset: str) -> str | None:
    """The rule's group for this alert; None when a grouping field is absent (rule skipped)."""
    parts = []
    for field in rule.group_by:
        if field == "asset":
            parts.append(asset)
        elif field == "src_ip":
            if not alert.src_ip:
                return None
            parts.append(alert.src_ip)
        elif field == "signature":
            parts.append(alert.signature)
        else:
            parts.append(alert.source)
    return "\x1f".join(parts)


def _span(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


class RuleSet:
    """All active rules, applied to alerts in event-time order."""

    def __init__(self, rules: list[AnyRule] | None = None) -> None:
        self._suppress: list[SuppressRule] = []
        self._severity: list[SeverityRule] = []
        self._corr: list[ThresholdRule | DistinctRule | SequenceRule] = []
        self._state: dict[tuple[str, str], deque[tuple[float, str]]] = {}
        self._seq: dict[tuple[str, str], tuple[int, float]] = {}
        self.replace(rules or [])

    def replace(self, rules: list[AnyRule]) -> None:
        """Swap the rule set (hot reload); correlation state of removed rules is dropped."""
        self._suppress = [r for r in rules if isinstance(r, SuppressRule) and r.enabled]
        self._severity = [r for r in rules if isinstance(r, SeverityRule) and r.enabled]
        self._corr = [r for r in rules if isinstance(r, ThresholdRule | DistinctRule | SequenceRule) and r.enabled]
        self._memo: dict[tuple[object, ...], _Profile] = {}
        keep = {r.id for r in self._corr}
        self._state = {k: v for k, v in self._state.items() if k[0] in keep}
        self._seq = {k: v for k, v in self._seq.items() if k[0] in keep}

    def __len__(self) -> int:
        return len(self._suppress) + len(self._severity) + len(self._corr)

    def all_rules(self) -> list[AnyRule]:
        """Every enabled rule (for snapshots)."""
        return [*self._suppress, *self._severity, *self._corr]

    def counting_state(self) -> dict[tuple[str, str], deque[tuple[float, str]]]:
        return self._state

    def sequence_state(self) -> dict[tuple[str, str], tuple[int, float]]:
        return self._seq

    def load_state(
        self,
        counting: dict[tuple[str, str], deque[tuple[float, str]]],
        sequence: dict[tuple[str, str], tuple[int, float]],
    ) -> None:
        """Restore correlation-rule state from a snapshot."""
        self._state = {k: deque(v, maxlen=MAX_GROUP_EVENTS) for k, v in counting.items()}
        self._seq = dict(sequence)

    def _profile(self, alert: Alert) -> _Profile:
        """Which rules match this kind of alert, memoised: alerts repeat the same fields a lot."""
        key = (alert.signature, alert.title, alert.source, alert.asset, alert.domain, alert.severity, alert.tactics)
        profile = self._memo.get(key)
        if profile is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            suppress = next((r for r in self._suppress if r.match.matches(alert)), None)
            severity = next(((r.severity, r.id) for r in self._severity if r.match.matches(alert)), None)
            corr = tuple(
                tuple(st.matches(alert) for st in r.steps) if isinstance(r, SequenceRule) else r.match.matches(alert)
                for r in self._corr
            )
            profile = self._memo[key] = (suppress, severity, corr)
        return profile

    def suppression(self, alert: Alert) -> SuppressRule | None:
        """The first suppression rule matching the alert."""
        return self._profile(alert)[0] if self._suppress else None

    def severity(self, alert: Alert) -> tuple[Severity, str | None]:
        """Severity after overrides, and the id of the rule that set it."""
        hit = self._profile(alert)[1] if self._severity else None
        return hit if hit is not None else (alert.severity, None)

    def correlate(self, alert: Alert, asset: str, now: float) -> list[Finding]:
        """Feed the alert to every correlation rule; returns the rules that fire now."""
        found: list[Finding] = []
        if not self._corr:
            return found
        matched = self._profile(alert)[2]
        for rule, match in zip(self._corr, matched, strict=True):
            if isinstance(rule, SequenceRule):
                assert isinstance(match, tuple)
                hit = self._sequence(rule, match, alert, asset, now)
            elif match:
                hit = self._counting(rule, alert, asset, now)
            else:
                continue
            if hit is not None:
                found.append(hit)
        return found

    def _counting(self, rule: ThresholdRule | DistinctRule, alert: Alert, asset: str, now: float) -> Finding | None:
        group = _group_key(rule, alert, asset)
        if group is None:
            return None
        key = (rule.id, group)
        events = self._state.setdefault(key, deque(maxlen=MAX_GROUP_EVENTS))
        horizon = now - rule.timespan.total_seconds()
        while events and events[0][0] < horizon:
            events.popleft()
        if isinstance(rule, DistinctRule):
            value = {
                "signature": alert.signature,
                "source": alert.source,
                "asset": asset,
                "src_ip": alert.src_ip or "-",
            }[rule.field]
            events.append((now, value))
            distinct = len({v for _, v in events})
            if distinct == rule.count:
                return Finding(
                    rule.id,
                    rule.severity,
                    rule.tactic,
                    f"rule {rule.id}: {distinct} distinct {rule.field}s in {_span(rule.timespan)}",
                )
            return None
        events.append((now, ""))
        if len(events) == rule.count:
            return Finding(
                rule.id,
                rule.severity,
                rule.tactic,
                f"rule {rule.id}: {rule.count} matching alerts in {_span(rule.timespan)}",
            )
        return None

    def _sequence(
        self, rule: SequenceRule, steps: tuple[bool, ...], alert: Alert, asset: str, now: float
    ) -> Finding | None:
        group = _group_key(rule, alert, asset)
        if group is None:
            return None
        key = (rule.id, group)
        step, started = self._seq.get(key, (0, now))
        if step and now - started > rule.timespan.total_seconds():
            step, started = 0, now
        if steps[step]:
            if step == 0:
                started = now
            step += 1
            if step == len(rule.steps):
                self._seq.pop(key, None)
                return Finding(
                    rule.id,
                    rule.severity,
                    rule.tactic,
                    f"rule {rule.id}: sequence of {len(rule.steps)} steps within {_span(rule.timespan)}",
                )
            self._seq[key] = (step, started)
        return None
