"""Conservation checks shared by the fault tests: each input decided once, incidents whole."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any


def assert_decided_once(
    decisions: list[dict[str, Any]],
    expected: set[str],
    on_repeat: Callable[[dict[str, int]], None] | None = None,
) -> None:
    """Every id of `expected`, and nothing else, has exactly one decision (`on_repeat` may
    print diagnostics before a repeat fails the test)."""
    counts = Counter(d["alert_id"] for d in decisions)
    repeated = {k: n for k, n in counts.items() if n > 1}
    if repeated and on_repeat is not None:
        on_repeat(repeated)
    assert not repeated, f"{len(repeated)} alerts decided more than once"
    assert set(counts) == expected


def assert_incidents_whole(events: list[dict[str, Any]]) -> set[str]:
    """No incident opened twice, and each one's versions run 1, 2, 3... with none repeated or
    missing; the incident ids."""
    versions: dict[str, list[int]] = defaultdict(list)
    opened: Counter[str] = Counter()
    for event in events:
        versions[event["incident_id"]].append(event["version"])
        if event["event"] == "opened":
            opened[event["incident_id"]] += 1
    assert all(n == 1 for n in opened.values()), opened
    for incident_id, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), (incident_id, seen)
    return set(versions)
