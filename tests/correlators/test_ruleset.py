"""Correlation rules: a distinct rule's running count of values matches counting them afresh."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from correlators import ruleset
from correlators.config import EngineConfig
from correlators.engine import Engine
from correlators.ruleset import RuleSet
from schemas.models import Alert, Domain
from schemas.rules import AnyRule, parse_rules

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _rule(count: int, minutes: int) -> RuleSet:
    rules = parse_rules(
        [
            {
                "id": "many-signatures",
                "type": "distinct",
                "match": {"domain": "security"},
                "field": "signature",
                "count": count,
                "timespan": f"{minutes}m",
                "group_by": ["src_ip"],
                "severity": "high",
            }
        ]
    )
    return RuleSet(rules, max_groups=3)


def _afresh(history: list[tuple[float, str, str]], now: float, src: str, span: float) -> int:
    """Distinct values in the group's events, counted from scratch (the old way)."""
    events = [(t, sig) for t, s, sig in history if s == src and t >= now - span][-ruleset.MAX_GROUP_EVENTS :]
    return len({sig for _, sig in events})


@pytest.mark.parametrize("seed", range(6))
def test_distinct_counts_match_a_fresh_count(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values leaving by age, by the per-group cap and with dropped groups, and after a restore."""
    monkeypatch.setattr(ruleset, "MAX_GROUP_EVENTS", 7)
    rng = random.Random(seed)
    rules = _rule(count=4, minutes=2)
    history: list[tuple[float, str, str]] = []
    dropped: set[str] = set()
    now = T0.timestamp()
    for i in range(3000):
        now += rng.choice((0.0, 1.0, 5.0, 40.0, 200.0))
        src = f"10.0.0.{rng.randrange(5)}"  # five groups, three kept: the least recent is dropped
        sig = f"sig-{rng.randrange(6)}"
        alert = Alert(id=f"a{i}", source="ids", domain=Domain.SECURITY, time=T0, asset="h", src_ip=src, signature=sig)
        before = set(rules._touched.get("many-signatures", {}))
        fired = bool(rules.correlate(alert, "h", now))
        after = set(rules._touched.get("many-signatures", {}))
        for gone in before - after:  # over the cap: the group's events were forgotten
            dropped.add(gone)
            history = [h for h in history if h[1] != gone]
        history.append((now, src, sig))
        distinct = _afresh(history, now, src, 120.0)
        assert len(rules._values[("many-signatures", src)][1]) == distinct, i
        assert fired == (distinct == 4), i
        if i % 500 == 499:  # a restore rebuilds the counts from the events
            state, seq, touched = dict(rules.counting_state()), dict(rules.sequence_state()), rules.touched_state()
            rules = _rule(count=4, minutes=2)
            rules.load_state(state, seq, touched)
    assert dropped


def test_a_flooding_source_costs_no_more_per_alert() -> None:
    """10,000 events in one group: each alert updates the count instead of recounting them."""
    rules = _rule(count=50, minutes=60)
    now = T0.timestamp()
    for i in range(20_000):
        alert = Alert(id=f"a{i}", source="ids", domain=Domain.SECURITY, time=T0, asset="h", src_ip="198.51.100.7",
                      signature=f"sig-{i % 40}")
        rules.correlate(alert, "h", now + i * 0.01)
    ((events, counts),) = rules._values.values()
    assert len(events) == ruleset.MAX_GROUP_EVENTS and counts == {f"sig-{n}": 250 for n in range(40)}


def _distinct_and_threshold_under_one_id() -> tuple[list[AnyRule], list[AnyRule]]:
    common = {"id": "x", "match": {}, "count": 3, "timespan": "10m", "group_by": ["src_ip"], "severity": "high"}
    return (
        parse_rules([{**common, "type": "distinct", "field": "signature"}]),
        parse_rules([{**common, "type": "threshold"}]),
    )


def test_a_later_rule_with_the_same_id_replaces_the_earlier_one() -> None:
    """Rule state is keyed by id: a rule file redefining a default rule must not share (and
    corrupt) its state. Both were live before, and the running distinct count then crashed."""
    distinct, threshold = _distinct_and_threshold_under_one_id()
    rules = RuleSet([*distinct, *threshold])
    assert [r.id for r in rules.all_rules()] == ["x"] and rules.all_rules()[0] == threshold[0]
    # a user threshold rule named like a shipped distinct rule
    override = parse_rules([{"id": "one-source-many-signatures", "type": "threshold", "match": {"domain": "security"},
                             "count": 3, "timespan": "1m", "group_by": ["src_ip"], "severity": "high"}])
    engine = Engine(EngineConfig(), rules=override, default_rules=True)
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    for i in range(40):
        alert = Alert(id=f"a{i}", source="ids", domain=Domain.SECURITY, time=t0 + timedelta(seconds=20 * i),
                      asset="h", src_ip="1.2.3.4", signature=f"sig-{i % 7}")
        engine.on_alert(alert)
    assert engine.stats.alerts == 40


def test_a_rule_changed_by_a_reload_starts_afresh() -> None:
    distinct, threshold = _distinct_and_threshold_under_one_id()
    rules = RuleSet(distinct)
    now = datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    found: list[str] = []

    def feed(n: int, signatures: list[str]) -> None:
        nonlocal now
        for i in range(n):
            now += 60
            alert = Alert(id=f"a{now}", source="s", domain=Domain.SECURITY, time=datetime(2024, 3, 1, tzinfo=UTC),
                          asset="h", src_ip="1.1.1.1", signature=signatures[i % len(signatures)])
            found.extend(f.detail for f in rules.correlate(alert, "h", now))

    feed(2, ["a", "b"])
    rules.replace(threshold)  # the same id, another rule: its events are not the distinct rule's
    feed(2, ["c"])
    assert found == []  # two threshold events so far, not four
    feed(1, ["c"])
    assert found == ["rule x: 3 matching alerts in 10m"]
    rules.replace(distinct)
    feed(3, ["a", "b", "c"])
    assert found[-1] == "rule x: 3 distinct signatures in 10m"
