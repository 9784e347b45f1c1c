"""Engine snapshots: the whole correlation state as plain JSON, and back.

Used by the stream to checkpoint a partition's engine. Plain data only (no pickle): a
snapshot read back from Kafka cannot execute code. Heaps are rebuilt from windows and
incidents rather than stored.
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from dataclasses import asdict, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from correlators.config import EngineConfig
from correlators.lifecycle import IncidentState
from correlators.windows import Evidence, Window
from schemas.context import Asset, Change, Feedback
from schemas.models import Alert, Domain, RootCause, Severity, TimelineEntry
from schemas.rules import parse_rules

if TYPE_CHECKING:
    from correlators.engine import Engine

__all__ = ["dump", "load", "FORMAT"]

FORMAT = 1


def _config(cfg: EngineConfig) -> dict[str, Any]:
    return {k: (v.total_seconds() if isinstance(v, timedelta) else v) for k, v in asdict(cfg).items()}


def _config_from(data: dict[str, Any]) -> EngineConfig:
    kinds = {f.name: f.type for f in fields(EngineConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in kinds:
            continue
        values[key] = timedelta(seconds=value) if "timedelta" in str(kinds[key]) else value
    return EngineConfig(**values)


def _window(w: Window) -> dict[str, Any]:
    return {
        "asset": w.asset,
        "start": w.start,
        "last": w.last,
        "pending": [[a.model_dump(mode="json"), s.value] for a, s in w.pending],
        "evidence": {k: [e.weight, e.count, e.note] for k, e in w.evidence.items()},
        "sources": sorted(w.sources),
        "domains": sorted(d.value for d in w.domains),
        "tactics": sorted(w.tactics),
        "findings": [list(f) for f in w.findings],
    }


def _window_from(d: dict[str, Any]) -> Window:
    return Window(
        asset=d["asset"],
        start=d["start"],
        last=d["last"],
        pending=[(Alert.model_validate(a), Severity(s)) for a, s in d["pending"]],
        evidence={k: Evidence(float(v[0]), int(v[1]), str(v[2])) for k, v in d["evidence"].items()},
        sources=set(d["sources"]),
        domains={Domain(x) for x in d["domains"]},
        tactics=set(d["tactics"]),
        findings=[(str(t), float(w)) for t, w in d["findings"]],
    )


def _incident(i: IncidentState) -> dict[str, Any]:
    return {
        "id": i.id,
        "assets": i.assets,
        "opened_at": i.opened_at,
        "root": i.root.model_dump(mode="json"),
        "root_signature": i.root_signature,
        "owners": sorted(i.owners),
        "domains": sorted(d.value for d in i.domains),
        "severity": i.severity.value,
        "raw": i.raw,
        "threshold": i.threshold,
        "alert_count": i.alert_count,
        "updated_at": i.updated_at,
        "last_activity": i.last_activity,
        "resolved_at": i.resolved_at,
        "merged_into": i.merged_into,
        "version": i.version,
        "last_emit": i.last_emit,
        "dirty": i.dirty,
        "alert_ids": i.alert_ids,
        "reasons": i.reasons,
        "timeline": [t.model_dump(mode="json") for t in i.timeline],
        "signatures": i.signatures,
        "firing": [[a, s, v] for (a, s), v in i.firing.items()],
        "evidence": sorted([a, s] for a, s in i.evidence),
        "consequences": i.consequences,
        "flapping": sorted(i.flapping),
        "summary_note": i.summary_note,
    }


def _incident_from(d: dict[str, Any]) -> IncidentState:
    return IncidentState(
        id=d["id"],
        assets=list(d["assets"]),
        opened_at=d["opened_at"],
        root=RootCause.model_validate(d["root"]),
        root_signature=d["root_signature"],
        owners=set(d["owners"]),
        domains={Domain(x) for x in d["domains"]},
        severity=Severity(d["severity"]),
        raw=d["raw"],
        threshold=d["threshold"],
        alert_count=d["alert_count"],
        updated_at=d["updated_at"],
        last_activity=d["last_activity"],
        resolved_at=d["resolved_at"],
        merged_into=d["merged_into"],
        version=d["version"],
        last_emit=d["last_emit"],
        dirty=d["dirty"],
        alert_ids=list(d["alert_ids"]),
        reasons=list(d["reasons"]),
        timeline=[TimelineEntry.model_validate(t) for t in d["timeline"]],
        signatures=dict(d["signatures"]),
        firing={(a, s): bool(v) for a, s, v in d["firing"]},
        evidence={(a, s) for a, s in d["evidence"]},
        consequences=d["consequences"],
        flapping=set(d["flapping"]),
        summary_note=d["summary_note"],
    )


def dump(engine: Engine) -> bytes:
    """The engine's complete state as UTF-8 JSON."""
    rules = engine.rules
    doc = {
        "format": FORMAT,
        "config": _config(engine.cfg),
        "rules": [r.model_dump(mode="json") for r in rules.all_rules()],
        "rule_state": [[k[0], k[1], list(map(list, v))] for k, v in rules.counting_state().items()],
        "rule_seq": [[k[0], k[1], v[0], v[1]] for k, v in rules.sequence_state().items()],
        "assets": [a.model_dump(mode="json") for a in engine.identity.assets()],
        "changes": [c.model_dump(mode="json") for c in engine.explainer.changes()],
        "feedback": [f.model_dump(mode="json") for f in engine.explainer.feedback()],
        "baseline": engine.baseline.export(),
        "precedence": engine.precedence.export(),
        "clock": engine._clock if engine._clock != float("-inf") else None,
        "first": engine._first,
        "seen": list(engine._seen),
        "stats": [
            engine.stats.late,
            engine.stats.alerts,
            engine.stats.evicted_assets,
            engine.stats.windows_closed_early,
        ],
        "windows": [_window(w) for w in engine._windows.values()],
        "incidents": [_incident(i) for i in engine._incidents.values()],
        "open_by_asset": engine._open_by_asset,
        "dirty": sorted(engine._dirty),
        "last_noise": {a: {s: list(v) for s, v in m.items()} for a, m in engine._last_noise.items()},
        "toggles": engine._toggles,
        "sig_incident": {k: list(v) for k, v in engine._sig_incident.items()},
        "recent_assets": list(engine._recent_assets.items()),
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def load(data: bytes) -> Engine:
    """An engine in exactly the state `dump` saw."""
    from correlators.engine import Engine

    doc = json.loads(data)
    if doc.get("format") != FORMAT:
        raise ValueError(f"unsupported engine snapshot format {doc.get('format')!r}")
    engine = Engine(
        _config_from(doc["config"]),
        assets=[Asset.model_validate(a) for a in doc["assets"]],
        changes=[Change.model_validate(c) for c in doc["changes"]],
        rules=parse_rules(doc["rules"]),
        feedback=[Feedback.model_validate(f) for f in doc["feedback"]],
    )
    engine.rules.load_state(
        {(r, g): deque((float(t), str(v)) for t, v in ev) for r, g, ev in doc["rule_state"]},
        {(r, g): (int(step), float(t)) for r, g, step, t in doc["rule_seq"]},
    )
    engine.baseline.load(doc["baseline"])
    engine.precedence.load(doc["precedence"])
    engine._clock = doc["clock"] if doc["clock"] is not None else float("-inf")
    engine._first = doc["first"]
    engine._seen = dict.fromkeys(doc["seen"])
    (engine.stats.late, engine.stats.alerts, engine.stats.evicted_assets, engine.stats.windows_closed_early) = doc[
        "stats"
    ]
    for wd in doc["windows"]:
        w = _window_from(wd)
        engine._windows[w.asset] = w
        deadline = min(w.last + engine._gap, w.start + engine._max_window)
        heapq.heappush(engine._window_heap, (deadline, w.asset, w.start))
    for idoc in doc["incidents"]:
        inc = _incident_from(idoc)
        engine._incidents[inc.id] = inc
        if inc.resolved_at is None:
            heapq.heappush(engine._quiet_heap, (inc.last_activity + engine._quiet, inc.id))
    engine._open_by_asset = dict(doc["open_by_asset"])
    engine._dirty = set(doc["dirty"])
    engine._last_noise = {
        a: {s: (float(v[0]), str(v[1]), int(v[2])) for s, v in m.items()} for a, m in doc["last_noise"].items()
    }
    engine._toggles = {a: {s: [float(t) for t in v] for s, v in m.items()} for a, m in doc["toggles"].items()}
    engine._sig_incident = {k: (str(v[0]), float(v[1])) for k, v in doc["sig_incident"].items()}
    engine._recent_assets = {str(a): float(t) for a, t in doc["recent_assets"]}
    return engine
