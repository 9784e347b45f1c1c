"""The DESIGN.md evaluation formulas: score a replay's output against labelled data.

Labels are read from the raw dataset files here, never through the adapters, and matched to
decisions by alert id (`<file basename>:<line>`, or the Wazuh `id`). An alert counts as
"in" an incident when its decision names one; merged incidents count as the incident they
were merged into (following `merged_into`). Security incidents are of kind `security` or
`converged`. Reduction is taken over valid alerts (`invalid` decisions are not alerts).
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "Outcome",
    "load_outcome",
    "score_aitads",
    "score_wazuh",
    "score_huawei",
    "score_bgl",
    "SCORERS",
    "TARGETS",
]

SECURITY_KINDS = frozenset({"security", "converged"})
Metrics = dict[str, Any]

# metric -> (comparison, threshold) for the table; only the ones the brief sets.
TARGETS: dict[str, dict[str, tuple[str, float]]] = {
    "aitads": {
        "attack_recall": (">=", 0.95),
        "benign_inclusion": ("<=", 0.05),
        "incident_precision": (">=", 0.90),
        "phase_recall": (">=", 0.90),
        "reduction": (">=", 0.99),
        "median_latency_s": ("<=", 60.0),
    },
    "wazuh": {},
    "huawei": {"reduction": (">=", 0.95), "causal_consistency": (">=", 0.9)},
    "bgl": {},
}


def meets(value: object, target: tuple[str, float]) -> bool | None:
    """Whether a metric value meets its target (None if the value is missing)."""
    if not isinstance(value, int | float):
        return None
    op, threshold = target
    return value >= threshold if op == ">=" else value <= threshold


@dataclass
class Outcome:
    """A replay's output, resolved: which live incident holds each alert, and its facts."""

    incident_of: dict[str, str | None]  # alert id -> live incident id (None: not in one)
    kind: dict[str, str]  # live incident id -> kind
    opened: dict[str, datetime]  # live incident id -> earliest opened_at of it and its merges
    root: dict[str, str | None]  # live incident id -> root cause alert id
    alerts: int  # valid alerts (not `invalid`)
    decisions: int

    @property
    def incidents(self) -> int:
        return len(self.kind)

    def in_security(self, alert_id: str) -> bool:
        inc = self.incident_of.get(alert_id)
        return inc is not None and self.kind[inc] in SECURITY_KINDS

    def security_incidents(self) -> set[str]:
        return {i for i, k in self.kind.items() if k in SECURITY_KINDS}

    def members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for alert_id, inc in self.incident_of.items():
            if inc is not None:
                out[inc].append(alert_id)
        return out

    def reduction(self) -> float | None:
        return None if self.alerts <= 0 else 1.0 - self.incidents / self.alerts


def _jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def load_outcome(directory: Path) -> Outcome:
    """Read `decisions.jsonl` and `incidents.jsonl` of a replay and resolve merges."""
    records = {r["incident_id"]: r for r in _jsonl(directory / "incidents.jsonl")}

    def live(incident_id: str) -> str:
        seen = {incident_id}
        while (target := records.get(incident_id, {}).get("merged_into")) and target not in seen:
            seen.add(target)
            incident_id = target
        return incident_id

    kind: dict[str, str] = {}
    opened: dict[str, datetime] = {}
    root: dict[str, str | None] = {}
    for incident_id, rec in records.items():
        target = live(incident_id)
        at = _time(rec["opened_at"])
        opened[target] = min(at, opened.get(target, at))
        if target == incident_id:
            kind[target] = rec["kind"]
            root[target] = (rec.get("root_cause") or {}).get("alert_id")
    incident_of: dict[str, str | None] = {}
    alerts = decisions = 0
    for d in _jsonl(directory / "decisions.jsonl"):
        decisions += 1
        if d["disposition"] != "invalid":
            alerts += 1
        inc = d.get("incident_id") if d["disposition"] == "incident" else None
        if inc is not None:
            inc = live(inc)
            if inc not in kind:  # named by a decision but absent from incidents.jsonl
                kind[inc] = d.get("incident_kind") or "operational"
                root[inc] = None
                if d.get("time"):
                    opened.setdefault(inc, _time(d["time"]))
        incident_of[d["alert_id"]] = inc
    return Outcome(incident_of, kind, opened, root, alerts, decisions)


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _csv_rows(path: Path) -> Iterable[tuple[str, dict[str, str]]]:
    """(alert id, row) of a CSV file; the id is `<basename>:<first physical line>`."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        start = reader.line_num + 1 if reader.fieldnames else 2
        for row in reader:
            yield f"{path.name}:{start}", row
            start = reader.line_num + 1


# -- AIT-ADS --------------------------------------------------------------------------------


def score_aitads(outcome: Outcome, labels: Path, **_: Path) -> Metrics:
    """Attack recall, benign inclusion, precision, phase recall, reduction, latency."""
    label: dict[str, str] = {}
    first: dict[str, float] = {}
    for alert_id, row in _csv_rows(labels):
        event = row["event_label"]
        label[alert_id] = event
        if event != "-":
            first[event] = min(float(row["time"]), first.get(event, float("inf")))
    attack = [a for a, e in label.items() if e != "-"]
    benign = [a for a, e in label.items() if e == "-"]
    members = outcome.members()
    security = outcome.security_incidents()
    with_attack = {i for i in security if any(label.get(a, "-") != "-" for a in members[i])}
    latency: dict[str, float | None] = {}
    for cls in sorted(first):
        holding = {
            outcome.incident_of[a] for a in attack if label[a] == cls and outcome.in_security(a)
        }
        if not holding:
            latency[cls] = None
            continue
        opened = min(outcome.opened[i] for i in holding if i is not None).timestamp()
        latency[cls] = max(0.0, opened - first[cls])
    detected = [v for v in latency.values() if v is not None]
    return {
        "alerts": outcome.alerts,
        "incidents": outcome.incidents,
        "security_incidents": len(security),
        "attack_recall": _share(sum(outcome.in_security(a) for a in attack), len(attack)),
        "benign_inclusion": _share(sum(outcome.in_security(a) for a in benign), len(benign)),
        "incident_precision": _share(len(with_attack), len(security)),
        "phase_recall": _share(len(detected), len(latency)),
        "reduction": outcome.reduction(),
        "latency_s": latency,
        "median_latency_s": statistics.median(detected) if detected else None,
    }


# -- Wazuh spiral ---------------------------------------------------------------------------


def score_wazuh(
    outcome: Outcome, labels: Path, *, phases: Path | None = None, **_: Path
) -> Metrics:
    """Attack phases detected (an alert in the window held by a security incident)."""
    times: dict[str, float] = {}
    with labels.open("rb") as fh:
        for line in fh:
            try:
                rec = orjson.loads(line)
                times[str(rec["id"])] = _time(rec["timestamp"]).timestamp()
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue  # not a labelled alert: it has no place in any window
    windows = _phase_windows(phases or labels.with_name("attack_phases.json"))
    detected = {
        name: any(lo <= t < hi and outcome.in_security(a) for a, t in times.items())
        for name, (lo, hi) in windows.items()
    }
    outside = [a for a, t in times.items() if not any(lo <= t < hi for lo, hi in windows.values())]
    return {
        "alerts": outcome.alerts,
        "incidents": outcome.incidents,
        "security_incidents": len(outcome.security_incidents()),
        "phases_detected": sum(detected.values()),
        "phases_with_alerts": sum(
            any(lo <= t < hi for t in times.values()) for lo, hi in windows.values()
        ),
        "phases": len(detected),
        "phase_recall": _share(sum(detected.values()), len(detected)),
        "detected": detected,
        "outside_window_inclusion": _share(
            sum(outcome.in_security(a) for a in outside), len(outside)
        ),
        "reduction": outcome.reduction(),
    }


def _phase_windows(path: Path) -> dict[str, tuple[float, float]]:
    data = orjson.loads(path.read_bytes())
    (scenario,) = data.values()
    return {
        name: (float(w["start_epoch"]), float(w["end_epoch"]))
        for name, w in scenario.items()
        if not name.startswith("false_positive")
    }


# -- Huawei alarms --------------------------------------------------------------------------


def score_huawei(outcome: Outcome, labels: Path, *, dag: Path | None = None, **_: Path) -> Metrics:
    """Reduction and causal consistency of (root, member) pairs against `dag_edges.csv`."""
    alarm: dict[str, tuple[str, float, int]] = {}
    for number, (alert_id, row) in enumerate(_csv_rows(labels)):
        alarm[alert_id] = (row["alarm_id"].strip(), float(row["start_timestamp"]), number)
    reach = _reachability(dag or labels.with_name("dag_edges.csv"))
    pairs = consistent = multi = rootless = 0
    for inc, alerts in sorted(outcome.members().items()):
        known = [a for a in alerts if a in alarm]
        if len(known) < 2:
            continue
        multi += 1
        root = outcome.root.get(inc)
        if root not in alarm:
            rootless += 1
            root = min(known, key=lambda a: alarm[a][1:])
        assert root is not None
        cause = alarm[root][0]
        for member in known:
            if member == root:
                continue
            pairs += 1
            effect = alarm[member][0]
            consistent += effect == cause or effect in reach.get(cause, set())
    return {
        "alerts": outcome.alerts,
        "incidents": outcome.incidents,
        "reduction": outcome.reduction(),
        "multi_alarm_incidents": multi,
        "incidents_without_root": rootless,
        "pairs": pairs,
        "causal_consistency": _share(consistent, pairs),
    }


def _reachability(path: Path) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for _, row in _csv_rows(path):
        edges[row["cause_alarm_id"].strip()].add(row["effect_alarm_id"].strip())
    reach: dict[str, set[str]] = {}
    for start in list(edges):
        seen: set[str] = set()
        stack = list(edges[start])
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(edges.get(node, ()))
        reach[start] = seen
    return reach


# -- BGL ------------------------------------------------------------------------------------


def score_bgl(outcome: Outcome, labels: Path, **_: Path) -> Metrics:
    """Share of alert-category lines inside incidents vs normal lines inside incidents."""
    alert_lines: list[str] = []
    normal_lines: list[str] = []
    with labels.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            category = line.split(maxsplit=1)[0]
            target = normal_lines if category == b"-" else alert_lines
            target.append(f"{labels.name}:{number}")

    def inside(ids: list[str]) -> float | None:
        return _share(sum(outcome.incident_of.get(a) is not None for a in ids), len(ids))

    return {
        "alerts": outcome.alerts,
        "incidents": outcome.incidents,
        "reduction": outcome.reduction(),
        "alert_lines": len(alert_lines),
        "alert_lines_in_incidents": inside(alert_lines),
        "normal_lines_in_incidents": inside(normal_lines),
    }


Scorer = Callable[..., Metrics]
SCORERS: dict[str, Scorer] = {
    "aitads": score_aitads,
    "wazuh": score_wazuh,
    "huawei": score_huawei,
    "bgl": score_bgl,
}
