"""Rule execution: suppression, severity overrides, and Sigma-style correlation rules.

Correlation rules keep, per rule and group, only the matching events inside the rule's
timespan. A group whose state can no longer matter (older than the rule's timespan in event
time) is dropped by `expire`, and each rule keeps at most `max_groups` groups: beyond that the
least recently updated one is dropped (counted in `over_cap`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from schemas.models import Alert, Severity
from schemas.rules import (
    AnyRule,
    DistinctRule,
    Match,
    SequenceRule,
    SeverityRule,
    SuppressRule,
    ThresholdRule,
)

__all__ = ["Finding", "RuleSet", "MAX_GROUP_EVENTS"]

MAX_GROUP_EVENTS = 10_000
_MEMO_SIZE: Final = 65_536
_CorrRule = ThresholdRule | DistinctRule | SequenceRule
# (first suppression rule, severity override, the correlation rules the alert matches in order,
# each with the steps it matches for a sequence rule, () for a counting rule)
# (suppression, severity override, matching correlation rules with their steps matched and group fields)
_Profile = tuple[
    SuppressRule | None, tuple[Severity, str] | None, tuple[tuple[_CorrRule, tuple[bool, ...], tuple[str, ...]], ...]
]


@dataclass(frozen=True, slots=True)
class Finding:
    """A correlation rule fired for a group."""

    rule_id: str
    severity: Severity
    tactic: str | None
    detail: str


def _group_key(group_by: tuple[str, ...], alert: Alert, asset: str) -> str | None:
    """A rule's group (its `group_by` fields) for this alert; None when a grouping field is
    absent (rule skipped)."""
    if len(group_by) == 1:  # the usual case, without building a list and joining it
        field = group_by[0]
        if field == "asset":
            return asset
        if field == "src_ip":
            return alert.src_ip or None
        return alert.signature if field == "signature" else alert.source
    parts = []
    for field in group_by:
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


def _drop(counts: dict[str, int], value: str) -> None:
    """One event holding `value` left a distinct rule's group."""
    left = counts[value] - 1
    if left:
        counts[value] = left
    else:
        del counts[value]


def _span(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


class RuleSet:
    """All active rules, applied to alerts in event-time order."""

    def __init__(self, rules: list[AnyRule] | None = None, *, max_groups: int = 100_000) -> None:
        self._suppress: list[SuppressRule] = []
        self._severity: list[SeverityRule] = []
        self._corr: list[ThresholdRule | DistinctRule | SequenceRule] = []
        self._state: dict[tuple[str, str], deque[tuple[float, str]]] = {}
        # distinct rules: how many of a group's events hold each value (its len() is the number
        # of distinct values), with the deque it counts: a group dropped and begun again, or
        # restored, is counted afresh from its events. Counting the deque's values per alert
        # cost O(events): ~0.5 ms an alert when one address floods (10,000 events).
        self._values: dict[tuple[str, str], tuple[deque[tuple[float, str]], dict[str, int]]] = {}
        self._seq: dict[tuple[str, str], tuple[int, float]] = {}
        # per rule, its groups least recently updated first, with the time that decides when
        # the group's state stops mattering (latest event of a counting rule, start of a sequence)
        self._touched: dict[str, OrderedDict[str, float]] = {}
        self._spans: dict[str, float] = {}
        self._defined: dict[str, AnyRule] = {}  # the live correlation rules by id
        self.max_groups = max_groups
        self.over_cap = 0  # groups dropped beyond `max_groups` (the engine collects and resets it)
        self.expired = 0  # groups dropped because their state could no longer matter
        self.replace(rules or [])

    def replace(self, rules: list[AnyRule]) -> None:
        """Swap the rule set (hot reload); correlation state of removed or changed rules is
        dropped. A rule whose id repeats an earlier one replaces it (a rule file redefining a
        default rule): rule state is keyed by id, so two live rules must never share one."""
        rules = list({r.id: r for r in rules}.values())
        self._suppress = [r for r in rules if isinstance(r, SuppressRule) and r.enabled]
        self._severity = [r for r in rules if isinstance(r, SeverityRule) and r.enabled]
        self._corr = [r for r in rules if isinstance(r, ThresholdRule | DistinctRule | SequenceRule) and r.enabled]
        self._memo: dict[tuple[object, ...], _Profile] = {}
        self._last_alert: Alert | None = None
        self._last_profile: _Profile = (None, None, ())
        # the alert's asset is part of the memo key only when a rule looks at it: otherwise
        # every new asset would miss the memo (and fill it) for alerts it has seen before
        self._by_asset = any(m.asset is not None for m in self._matchers())
        before = self._defined
        self._defined = {r.id: r for r in self._corr}
        keep = {i for i, r in self._defined.items() if before.get(i, r) == r}  # a changed rule starts afresh
        self._state = {k: v for k, v in self._state.items() if k[0] in keep}
        self._values = {}  # counted afresh from the events kept
        self._seq = {k: v for k, v in self._seq.items() if k[0] in keep}
        self._spans = {r.id: r.timespan.total_seconds() for r in self._corr}
        self._touched = {k: v for k, v in self._touched.items() if k in keep}

    def groups(self) -> int:
        """Correlation-rule groups holding state."""
        return len(self._state) + len(self._seq)

    def touched_state(self) -> list[tuple[str, str, float]]:
        """(rule, group, time) of every group, least recently updated first per rule (for snapshots)."""
        return [(rule, group, t) for rule, groups in self._touched.items() for group, t in groups.items()]

    def expire(self, horizon: float) -> None:
        """Drop groups whose state no alert at `horizon` or later can see (older than the timespan).

        Each rule's groups are swept from the least recently updated and the sweep stops at the
        first one still live, so the cost is paid once per dropped group.
        """
        for rule_id, groups in self._touched.items():
            if not groups:
                continue
            limit = horizon - self._spans[rule_id]
            while groups:
                group, t = next(iter(groups.items()))
                if t >= limit:
                    break
                del groups[group]
                self._state.pop((rule_id, group), None)
                self._values.pop((rule_id, group), None)
                self._seq.pop((rule_id, group), None)
                self.expired += 1

    def _touch(self, rule_id: str, group: str, t: float) -> None:
        groups = self._touched.get(rule_id)
        if groups is None:
            groups = self._touched[rule_id] = OrderedDict()
        groups[group] = t
        groups.move_to_end(group)
        while len(groups) > self.max_groups:
            old, _ = groups.popitem(last=False)
            self._state.pop((rule_id, old), None)
            self._values.pop((rule_id, old), None)
            self._seq.pop((rule_id, old), None)
            self.over_cap += 1

    def _untouch(self, rule_id: str, group: str) -> None:
        groups = self._touched.get(rule_id)
        if groups is not None:
            groups.pop(group, None)

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
        touched: list[tuple[str, str, float]] | None = None,
    ) -> None:
        """Restore correlation-rule state from a snapshot.

        `touched` is the recency order `touched_state()` gave; snapshots without it (older
        versions) get one rebuilt from the state, oldest first.
        """
        self._state = {k: deque(v, maxlen=MAX_GROUP_EVENTS) for k, v in counting.items()}
        self._values = {}
        self._seq = dict(sequence)
        known: dict[tuple[str, str], float] = {k: max(t for t, _ in v) for k, v in self._state.items() if v}
        known.update((k, started) for k, (_, started) in self._seq.items())
        order: list[tuple[str, str, float]] = []
        if touched is not None:
            order = [(r, g, t) for r, g, t in touched if (r, g) in known]
        listed = {(r, g) for r, g, _ in order}
        rest = [(r, g, t) for (r, g), t in known.items() if (r, g) not in listed]
        order += sorted(rest, key=lambda x: (x[2], x[0], x[1]))
        self._touched = {}
        for rule_id, group, t in order:
            if rule_id in self._spans:
                self._touched.setdefault(rule_id, OrderedDict())[group] = t

    def _matchers(self) -> list[Match]:
        out = [r.match for r in self._suppress] + [r.match for r in self._severity]
        for r in self._corr:
            out.extend(r.steps if isinstance(r, SequenceRule) else [r.match])
        return out

    def _profile(self, alert: Alert) -> _Profile:
        """Which rules match this kind of alert, memoised: alerts repeat the same fields a lot."""
        if alert is self._last_alert:  # suppression, severity and correlation ask in turn
            return self._last_profile
        key = (
            alert.signature,
            alert.title,
            alert.source,
            alert.asset if self._by_asset else None,
            alert.domain,
            alert.severity,
            alert.tactics,
        )
        profile = self._memo.get(key)
        if profile is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            suppress = next((r for r in self._suppress if r.match.matches(alert)), None)
            severity = next(((r.severity, r.id) for r in self._severity if r.match.matches(alert)), None)
            # each rule's group fields go with it: read once, not from the rule model per alert
            corr: list[tuple[_CorrRule, tuple[bool, ...], tuple[str, ...]]] = []
            for r in self._corr:
                if isinstance(r, SequenceRule):
                    steps = tuple(st.matches(alert) for st in r.steps)
                    if True in steps:  # no step matches: the group's progress cannot change
                        corr.append((r, steps, tuple(r.group_by)))
                elif r.match.matches(alert):
                    corr.append((r, (), tuple(r.group_by)))
            profile = self._memo[key] = (suppress, severity, tuple(corr))
        self._last_alert, self._last_profile = alert, profile
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
        for rule, steps, group_by in self._profile(alert)[2]:
            group = _group_key(group_by, alert, asset)
            if group is None:  # a grouping field is absent: the rule skips the alert
                continue
            if isinstance(rule, SequenceRule):
                hit = self._sequence(rule, steps, group, now)
            else:
                hit = self._counting(rule, alert, asset, group, now)
            if hit is not None:
                found.append(hit)
        return found

    def _counting(
        self, rule: ThresholdRule | DistinctRule, alert: Alert, asset: str, group: str, now: float
    ) -> Finding | None:
        key = (rule.id, group)
        events = self._state.get(key)
        if events is None:
            events = self._state[key] = deque(maxlen=MAX_GROUP_EVENTS)
            latest = now
        else:
            groups = self._touched.get(rule.id)
            prev = groups.get(group) if groups is not None else None
            latest = now if prev is None else max(now, prev)
        self._touch(rule.id, group, latest)
        horizon = now - self._spans[rule.id]
        if isinstance(rule, DistinctRule):
            counts = self._counts(key, events)
            while events and events[0][0] < horizon:
                _drop(counts, events.popleft()[1])
            value = {
                "signature": alert.signature,
                "source": alert.source,
                "asset": asset,
                "src_ip": alert.src_ip or "-",
            }[rule.field]
            if len(events) == events.maxlen:  # the append pushes the oldest event out
                _drop(counts, events[0][1])
            events.append((now, value))
            counts[value] = counts.get(value, 0) + 1
            distinct = len(counts)
            if distinct == rule.count:
                return Finding(
                    rule.id,
                    rule.severity,
                    rule.tactic,
                    f"rule {rule.id}: {distinct} distinct {rule.field}s in {_span(rule.timespan)}",
                )
            return None
        while events and events[0][0] < horizon:
            events.popleft()
        events.append((now, ""))
        if len(events) == rule.count:
            return Finding(
                rule.id,
                rule.severity,
                rule.tactic,
                f"rule {rule.id}: {rule.count} matching alerts in {_span(rule.timespan)}",
            )
        return None

    def _counts(self, key: tuple[str, str], events: deque[tuple[float, str]]) -> dict[str, int]:
        """The value counts of a distinct rule's group (made from its events when not held)."""
        held = self._values.get(key)
        if held is not None and held[0] is events:
            return held[1]
        counts: dict[str, int] = {}
        for _, value in events:
            counts[value] = counts.get(value, 0) + 1
        self._values[key] = (events, counts)
        return counts

    def _sequence(self, rule: SequenceRule, steps: tuple[bool, ...], group: str, now: float) -> Finding | None:
        key = (rule.id, group)
        step, started = self._seq.get(key, (0, now))
        if step and now - started > self._spans[rule.id]:
            step, started = 0, now
        if steps[step]:
            if step == 0:
                started = now
            step += 1
            if step == len(rule.steps):
                self._seq.pop(key, None)
                self._untouch(rule.id, group)
                return Finding(
                    rule.id,
                    rule.severity,
                    rule.tactic,
                    f"rule {rule.id}: sequence of {len(rule.steps)} steps within {_span(rule.timespan)}",
                )
            self._seq[key] = (step, started)
            self._touch(rule.id, group, started)
        return None
