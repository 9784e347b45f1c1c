"""Engine snapshots: the whole correlation state as plain JSON, and back.

Used by the stream to checkpoint a partition's engine. Plain data only (no pickle): a
snapshot read back from Kafka cannot execute code. Heaps are rebuilt from windows and
incidents rather than stored.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

from correlators.config import EngineConfig
from correlators.lifecycle import IncidentState
from correlators.redelivery import SeenIds
from correlators.types import PACE, Earlier
from correlators.windows import Evidence, Waiting, Window
from schemas.context import Asset, Change, Feedback
from schemas.errors import SnapshotError, SocnocError
from schemas.models import (
    DOMAIN_BY_VALUE,
    SEVERITY_BY_VALUE,
    STATUS_BY_VALUE,
    Alert,
    Domain,
    RootCause,
    Severity,
    TimelineEntry,
)
from schemas.rules import parse_rules

if TYPE_CHECKING:
    from correlators.engine import Engine

__all__ = ["dump", "load", "FORMAT", "PACE"]

FORMAT = 1
_LONGEST = 10 * 365 * 86400.0  # longest duration setting accepted (10 years)
_LATEST = 4102444800.0 + _LONGEST  # 2100-01-01 (the adapters' limit) plus the longest setting
_DIVISORS = frozenset({"open_threshold", "baseline_half_life"})  # settings the engine divides by
# EngineStats counters, in snapshot order (new ones are appended)
_STATS = (
    "late", "alerts", "evicted_assets", "windows_closed_early", "assets_over_cap", "window_full", "incidents_capped",
    "incidents_pruned", "rule_groups_expired", "rule_groups_over_cap",
)
_AT_LEAST_ONE = frozenset({"max_windows", "max_rule_groups"})
_T = TypeVar("_T")
# the settings that may be None, with the type they have otherwise
_OPTIONAL_SETTINGS: dict[str, type] = {"precedence_min_lift": float, "retain_resolved": timedelta}


def _config(cfg: EngineConfig) -> dict[str, Any]:
    return {k: (v.total_seconds() if isinstance(v, timedelta) else v) for k, v in asdict(cfg).items()}


def _config_kinds() -> dict[str, type]:
    """Each setting's type, read off the defaults (the optional ones, None by default, say theirs).

    Not from the annotations: compiled (see schemas/native.py) a union annotation reads as `type`.
    """
    default = EngineConfig()
    return {f.name: _OPTIONAL_SETTINGS.get(f.name) or type(getattr(default, f.name)) for f in fields(EngineConfig)}


def _config_from(data: object) -> EngineConfig:
    kinds = _config_kinds()
    values: dict[str, Any] = {}
    for key, value in _obj(data, "config").items():
        kind = kinds.get(key)
        if kind is None:
            continue  # a setting this version no longer has
        what = f"config.{key}"
        if kind is int:
            values[key] = _int(value, what, low=1 if key in _AT_LEAST_ONE else 0)
        elif value is None and key in _OPTIONAL_SETTINGS:
            values[key] = None
        else:
            number = _num(value, what)
            if number < 0 or (number == 0 and key in _DIVISORS) or (kind is timedelta and number > _LONGEST):
                _bad(what, f"out of range: {number}")
            values[key] = timedelta(seconds=number) if kind is timedelta else number
    return EngineConfig(**values)


# -- strict readers: a snapshot is outside data once it went through Kafka -------------------


def _bad(what: str, detail: str) -> NoReturn:
    raise SnapshotError(f"corrupt engine snapshot: {what}: {detail}")


def _obj(x: object, what: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        _bad(what, f"expected an object, got {type(x).__name__}")
    return x


def _arr(x: object, what: str, size: int | None = None) -> list[Any]:
    if not isinstance(x, list):
        _bad(what, f"expected a list, got {type(x).__name__}")
    if size is not None and len(x) != size:
        _bad(what, f"expected {size} items, got {len(x)}")
    return x


def _str(x: object, what: str) -> str:
    if not isinstance(x, str):
        _bad(what, f"expected a string, got {type(x).__name__}")
    return x


def _bool(x: object, what: str) -> bool:
    if not isinstance(x, bool):
        _bad(what, f"expected a boolean, got {type(x).__name__}")
    return x


def _int(x: object, what: str, low: int = 0) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or x < low:
        _bad(what, f"expected an integer >= {low}, got {x!r:.40}")
    return x


def _num(x: object, what: str) -> float:
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        _bad(what, f"expected a finite number, got {x!r:.40}")
    return float(x)


def _time(x: object, what: str) -> float:
    # what adapters accept (1970-2100) plus room for the engine's own offsets: anything else
    # would overflow the engine's datetime conversions later
    number = _num(x, what)
    if not 0.0 <= number <= _LATEST:
        _bad(what, f"time out of range: {number}")
    return number


def _opt_time(x: object, what: str) -> float | None:
    return None if x is None else _time(x, what)


def _opt_str(x: object, what: str) -> str | None:
    return None if x is None else _str(x, what)


def _strs(x: object, what: str) -> list[str]:
    return [_str(v, what) for v in _arr(x, what)]


def _window(w: Window) -> dict[str, Any]:
    return {
        "asset": w.asset,
        "start": w.start,
        "last": w.last,
        "pending": [[p.alert_fields(w.asset), p.severity.value] for p in w.pending],
        "evidence": {k: [e.weight, e.count, e.note] for k, e in w.evidence.items()},
        "sources": sorted(w.sources),
        "domains": sorted(d.value for d in w.domains),
        "tactics": sorted(w.tactics),
        "findings": [list(f) for f in w.findings],
    }


def _window_from(x: object) -> Window:
    d = _obj(x, "window")
    pending: list[Waiting] = []
    for item in _arr(d["pending"], "window.pending"):
        alert, severity = _arr(item, "window.pending[]", 2)
        pending.append(_waiting(_obj(alert, "window.pending[].alert"), severity))
    evidence: dict[str, Evidence] = {}
    for key, value in _obj(d["evidence"], "window.evidence").items():
        weight, count, note = _arr(value, "window.evidence[]", 3)
        evidence[key] = Evidence(_num(weight, "evidence.weight"), _int(count, "evidence.count"), _str(note, "note"))
    findings: list[tuple[str, float]] = []
    for item in _arr(d["findings"], "window.findings"):
        text, weight = _arr(item, "window.findings[]", 2)
        findings.append((_str(text, "finding"), _num(weight, "finding.weight")))
    return Window(
        asset=_str(d["asset"], "window.asset"),
        start=_time(d["start"], "window.start"),
        last=_time(d["last"], "window.last"),
        pending=pending,
        evidence=evidence,
        sources=set(_strs(d["sources"], "window.sources")),
        domains={Domain(x) for x in _arr(d["domains"], "window.domains")},
        tactics=set(_strs(d["tactics"], "window.tactics")),
        findings=findings,
    )


def _memos(engine: Engine, memo: Callable[[dict[str, Any]], object]) -> list[object]:
    found: list[object] = []
    for w in engine._windows.values():
        held = w.memo
        if held is None:
            held = w.memo = memo(_window(w))
        found.append(held)
    return found


# What `Waiting.alert_fields` writes. Read directly (~10x faster than validating an `Alert`:
# the model was a third of restoring 100,000 assets' windows); anything else (whole alerts in
# snapshots of earlier versions, a value the direct reading does not take) through the model.
_WAITING_KEYS: Final = frozenset({"id", "source", "domain", "time", "asset", "signature", "status"})
# The form `to_jsonable_python` writes a zoned time in, and only that: `fromisoformat` also
# takes week dates, basic forms and offsets with seconds (which pydantic and orjson write back
# rounded to the minute: the time would move with each restore); those go through the model.
_WRITTEN_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})\Z"
)


def _waiting(d: dict[str, Any], severity: Any) -> Waiting:
    """A waiting alert from its fields in a snapshot, checked as `Alert` checks them."""
    level = SEVERITY_BY_VALUE.get(severity) if isinstance(severity, str) else None
    if level is None:
        level = Severity(severity)  # (raises what the model would: a corrupt snapshot)
    if d.keys() == _WAITING_KEYS:
        alert_id, source, asset, signature, when = d["id"], d["source"], d["asset"], d["signature"], d["time"]
        domain, status = d["domain"], d["status"]
        if (
            _text(alert_id) and _text(source) and _text(asset) and _text(signature)
            and isinstance(when, str) and isinstance(domain, str) and isinstance(status, str)
            and domain in DOMAIN_BY_VALUE and status in STATUS_BY_VALUE
            and _WRITTEN_TIME.match(when) is not None
        ):
            try:
                moment = datetime.fromisoformat(when)
            except ValueError:  # (a day or hour out of range: the model says so)
                moment = None
            if moment is not None:
                kind, state = DOMAIN_BY_VALUE[domain], STATUS_BY_VALUE[status]
                return Waiting(alert_id, moment, signature, source, kind, state, level)
    return Waiting.of(Alert.model_validate(d), level)


def _text(x: object) -> bool:
    """A non-empty string (`Field(min_length=1)`) that is valid Unicode (the standard `json`
    reads lone surrogates, which the model refuses and no encoder writes back)."""
    if not isinstance(x, str) or not x:
        return False
    if x.isascii():
        return True
    try:
        x.encode()
    except UnicodeEncodeError:
        return False
    return True


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


def _incident_from(x: object) -> IncidentState:
    d = _obj(x, "incident")
    assets = _strs(d["assets"], "incident.assets")
    if not assets:
        _bad("incident.assets", "empty")
    firing: dict[tuple[str, str], bool] = {}
    for item in _arr(d["firing"], "incident.firing"):
        asset, sig, value = _arr(item, "incident.firing[]", 3)
        firing[(_str(asset, "firing.asset"), _str(sig, "firing.signature"))] = _bool(value, "firing")
    evidence: set[tuple[str, str]] = set()
    for item in _arr(d["evidence"], "incident.evidence"):
        asset, sig = _arr(item, "incident.evidence[]", 2)
        evidence.add((_str(asset, "evidence.asset"), _str(sig, "evidence.signature")))
    signatures = {k: _int(v, "incident.signatures[]") for k, v in _obj(d["signatures"], "signatures").items()}
    threshold = _num(d["threshold"], "incident.threshold")
    if threshold <= 0:
        _bad("incident.threshold", "not positive")
    inc = IncidentState(
        id=_str(d["id"], "incident.id"),
        assets=assets,
        opened_at=_time(d["opened_at"], "incident.opened_at"),
        root=RootCause.model_validate(_obj(d["root"], "incident.root")),
        root_signature=_str(d["root_signature"], "incident.root_signature"),
        owners=set(_strs(d["owners"], "incident.owners")),
        domains={Domain(x) for x in _arr(d["domains"], "incident.domains")},
        severity=Severity(d["severity"]),
        raw=_num(d["raw"], "incident.raw"),
        threshold=threshold,
        alert_count=_int(d["alert_count"], "incident.alert_count"),
        updated_at=_time(d["updated_at"], "incident.updated_at"),
        last_activity=_time(d["last_activity"], "incident.last_activity"),
        resolved_at=_opt_time(d["resolved_at"], "incident.resolved_at"),
        merged_into=_opt_str(d["merged_into"], "incident.merged_into"),
        version=_int(d["version"], "incident.version"),
        last_emit=_time(d["last_emit"], "incident.last_emit"),
        dirty=_bool(d["dirty"], "incident.dirty"),
        alert_ids=_strs(d["alert_ids"], "incident.alert_ids"),
        reasons=_strs(d["reasons"], "incident.reasons"),
        timeline=[TimelineEntry.model_validate(_obj(t, "timeline[]")) for t in _arr(d["timeline"], "timeline")],
        signatures=signatures,
        firing=firing,
        evidence=evidence,
        consequences=_int(d["consequences"], "incident.consequences"),
        flapping=set(_strs(d["flapping"], "incident.flapping")),
        summary_note=_str(d["summary_note"], "incident.summary_note"),
    )
    inc.snapshot()  # the published shape must be buildable (scores, counts in range)
    return inc


def dump(engine: Engine, memory_from: int | None = None) -> bytes:
    """The engine's complete state as UTF-8 JSON."""
    return json.dumps(document(engine, memory_from), separators=(",", ":"), ensure_ascii=False).encode()


def document(
    engine: Engine, memory_from: int | None = None, memo: Callable[[dict[str, Any]], object] | None = None
) -> dict[str, Any]:
    """The engine's complete state as a JSON document: plain dicts (string keys), lists,
    strings, finite numbers, booleans and nulls, so any JSON encoder writes what `load`
    reads (the worker's checkpoints use orjson: 4-5x faster than `json` on this).

    `memo`: an encoder's own form of a window's document (the worker's: its JSON, embedded
    as is), in the document in its place. Kept on the window until the window changes, so a
    window is encoded once however many checkpoints it stays open through. The same for each
    asset's baseline (kept until its stats change).

    `memory_from`: the redelivery memory (`seen`) from that position on only; `load` then
    needs the ids before it (`Earlier`). The memory is most of a long-running engine's state
    (up to `max_seen_ids` ids), so a checkpoint stores it in segments written once each.
    """
    rules = engine.rules
    first, total = engine.memory_span()
    seen = engine.memory_ids(first if memory_from is None else memory_from, total)
    doc = {
        "format": FORMAT,
        "config": _config(engine.cfg),
        "rules": [r.model_dump(mode="json") for r in rules.all_rules()],
        "rule_state": [[k[0], k[1], list(map(list, v))] for k, v in rules.counting_state().items()],
        "rule_seq": [[k[0], k[1], v[0], v[1]] for k, v in rules.sequence_state().items()],
        "rule_touched": [list(t) for t in rules.touched_state()],
        "assets": [a.model_dump(mode="json") for a in engine.identity.assets()],
        "changes": [c.model_dump(mode="json") for c in engine.explainer.changes()],
        "feedback": [f.model_dump(mode="json") for f in engine.explainer.feedback()],
        "baseline": engine.baseline.export() if memo is None else engine.baseline.export_memo(memo),
        "precedence": engine.precedence.export(),
        "clock": engine._clock if engine._clock != float("-inf") else None,
        "first": engine._first,
        "seen": seen,
        "seen_total": total,
        "seen_held": total - first,
        "stats": [getattr(engine.stats, name) for name in _STATS],
        "windows": [_window(w) for w in engine._windows.values()] if memo is None else _memos(engine, memo),
        "incidents": [_incident(i) for i in engine._incidents.values()],
        "open_by_asset": engine._open_by_asset,
        "dirty": sorted(engine._dirty),
        "last_noise": {a: {s: list(v) for s, v in m.items()} for a, m in engine._last_noise.items()},
        "toggles": engine._toggles,
        "sig_incident": {k: list(v) for k, v in engine._sig_incident.items()},
        "recent_assets": list(engine._recent_assets.items()),
    }
    return doc


def load(
    data: bytes,
    earlier: Earlier | None = None,
    config: EngineConfig | None = None,
    *,
    parse: Callable[[bytes], Any] | None = None,
    pause: Callable[[], None] | None = None,
) -> Engine:
    """An engine in exactly the state `dump` saw.

    `earlier`: the redelivery memory a `dump(memory_from)` left out (at least the ids it
    needs, ending where the snapshot's own begin). `config`: the settings to run with instead
    of those stored in the snapshot (which are still checked); a smaller `max_seen_ids` drops
    the oldest remembered ids. `parse`: reads the JSON (default `json.loads`; a faster reader
    must read every document `json.loads` reads, as `json.loads` does, or raise ValueError).
    `pause`: called every `PACE` items of each big collection, and between them (a caller in
    a thread lets other threads run there). Every document `json.loads` reads, the default
    reads alike; a `parse` that reads some other way may make a good snapshot look corrupt.

    Raises `SnapshotError`, and nothing else, when `data` is not a whole, well-formed snapshot
    of this format (or `earlier` does not complete it): a checkpoint read back from Kafka is
    outside data, and a partition must be able to fall back to an older one instead of
    failing on every restart.
    """
    try:
        return _load(data, earlier, config, parse or json.loads, pause)
    except SnapshotError:
        raise
    except _MALFORMED as exc:
        raise SnapshotError(f"corrupt engine snapshot: {type(exc).__name__}: {exc}"[:500]) from exc


# What reading a malformed document can raise on the way (missing keys, bad enum values,
# pydantic's ValidationError and json's JSONDecodeError are ValueErrors, deep nesting).
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OverflowError, SocnocError)


def _load_memory(engine: Engine, doc: dict[str, Any], earlier: Earlier | None) -> None:
    """The redelivery memory: the snapshot's ids, after those of `earlier` it left out."""
    tail = _strs(doc["seen"], "seen")
    # absent from snapshots of earlier versions, which held the whole memory
    total = _int(doc.get("seen_total", len(tail)), "seen_total")
    held = _int(doc.get("seen_held", len(tail)), "seen_held")
    if not len(tail) <= held <= total:
        _bad("seen", f"{len(tail)} ids of {held} held, {total} remembered")
    missing = held - len(tail)
    ids = tail
    if missing:
        if earlier is None:
            _bad("seen", f"the {missing} ids stored apart from the snapshot are missing")
        if earlier.end != total - len(tail) or len(earlier.ids) < missing:
            _bad(
                "seen",
                f"the earlier ids end at {earlier.end} with {len(earlier.ids)} ids; "
                f"the snapshot needs {missing} ending at {total - len(tail)}",
            )
        ids = _strs(earlier.ids[len(earlier.ids) - missing :], "earlier") + tail
    cap = engine.cfg.max_seen_ids
    if len(ids) > cap:  # restored under a smaller cap: the oldest go, as they would have
        ids = ids[len(ids) - cap :]
    try:
        engine._seen = SeenIds(cap, ids, total)
    except ValueError as exc:
        _bad("seen", str(exc))


def _paced(items: Iterable[_T], pause: Callable[[], None] | None) -> Iterable[_T]:
    """`items`, with `pause` called after every `PACE` of them (and once at the end)."""
    return items if pause is None else _pacing(items, pause)


def _pacing(items: Iterable[_T], pause: Callable[[], None]) -> Iterator[_T]:
    n = 0
    for item in items:
        yield item
        n += 1
        if n == PACE:
            n = 0
            pause()
    pause()


def _load(
    data: bytes,
    earlier: Earlier | None,
    config: EngineConfig | None,
    parse: Callable[[bytes], Any],
    pause: Callable[[], None] | None,
) -> Engine:
    from correlators.engine import Engine

    doc = _obj(parse(data), "document")
    if pause is not None:
        pause()
    if doc.get("format") != FORMAT:
        raise SnapshotError(f"unsupported engine snapshot format {doc.get('format')!r:.40}")
    raw_rules = _arr(doc["rules"], "rules")  # no count cap: several files may hold 10k rules each
    stored = _config_from(doc["config"])
    engine = Engine(
        stored if config is None else config,
        assets=[Asset.model_validate(_obj(a, "asset")) for a in _arr(doc["assets"], "assets")],
        changes=[Change.model_validate(_obj(c, "change")) for c in _arr(doc["changes"], "changes")],
        rules=parse_rules(raw_rules),
        feedback=[Feedback.model_validate(_obj(f, "feedback")) for f in _arr(doc["feedback"], "feedback")],
    )
    counting: dict[tuple[str, str], deque[tuple[float, str]]] = {}
    for item in _paced(_arr(doc["rule_state"], "rule_state"), pause):
        rule, group, events = _arr(item, "rule_state[]", 3)
        counting[(_str(rule, "rule_state.rule"), _str(group, "rule_state.group"))] = deque(
            (_time(t, "rule_state.time"), _str(v, "rule_state.value"))
            for t, v in (_arr(e, "rule_state.event", 2) for e in _arr(events, "rule_state.events"))
        )
    sequence: dict[tuple[str, str], tuple[int, float]] = {}
    for item in _arr(doc["rule_seq"], "rule_seq"):
        rule, group, step, started = _arr(item, "rule_seq[]", 4)
        key = (_str(rule, "rule_seq.rule"), _str(group, "rule_seq.group"))
        sequence[key] = (_int(step, "rule_seq.step"), _time(started, "rule_seq.started"))
    touched: list[tuple[str, str, float]] | None = None
    if "rule_touched" in doc:  # absent from snapshots of earlier versions: rebuilt from the state
        touched = [
            (_str(r, "rule_touched.rule"), _str(g, "rule_touched.group"), _time(t, "rule_touched.time"))
            for r, g, t in (_arr(x, "rule_touched[]", 3) for x in _arr(doc["rule_touched"], "rule_touched"))
        ]
    engine.rules.load_state(counting, sequence, touched)
    baseline = {
        _str(asset, "baseline.asset"): {
            sig: [_num(c, "count"), _time(last, "last"), _time(first, "first"), _int(h, "hours"), _int(n, "total")]
            for sig, (c, last, first, h, n) in (
                (k, _arr(v, "baseline[][]", 5)) for k, v in _obj(sigs, "baseline[]").items()
            )
        }
        for asset, sigs in _paced(_obj(doc["baseline"], "baseline").items(), pause)
    }
    engine.baseline.load_items(_paced(baseline.items(), pause))
    prec = _obj(doc["precedence"], "precedence")
    engine.precedence.load(
        {
            "recent": [
                [_time(t, "precedence.time"), _str(a, "precedence.asset"), _str(k, "precedence.kind")]
                for t, a, k in (_arr(r, "precedence.recent[]", 3) for r in _arr(prec["recent"], "precedence.recent"))
            ],
            "pair": [
                [_str(a, "precedence.cause"), _str(b, "precedence.effect"), _int(n, "precedence.count")]
                for a, b, n in (_arr(p, "precedence.pair[]", 3) for p in _arr(prec["pair"], "precedence.pair"))
            ],
            "type": {k: _int(v, "precedence.type[]") for k, v in _obj(prec["type"], "precedence.type").items()},
            "total": _int(prec["total"], "precedence.total"),
        }
    )
    clock = _opt_time(doc["clock"], "clock")
    engine._clock = clock if clock is not None else float("-inf")
    engine._first = _opt_time(doc["first"], "first")
    _load_memory(engine, doc, earlier)
    if pause is not None:
        pause()
    counts = _arr(doc["stats"], "stats")
    if not 4 <= len(counts) <= len(_STATS):  # the first four: snapshots of earlier versions
        _bad("stats", f"{len(counts)} counters")
    for name, value in zip(_STATS, counts, strict=False):
        setattr(engine.stats, name, _int(value, f"stats.{name}"))
    for wd in _paced(_arr(doc["windows"], "windows"), pause):
        w = _window_from(wd)
        engine._windows[w.asset] = w
        deadline = min(w.last + engine._gap, w.start + engine._max_window)
        heapq.heappush(engine._window_heap, (deadline, w.asset, w.start))
    for idoc in _paced(_arr(doc["incidents"], "incidents"), pause):
        inc = _incident_from(idoc)
        engine._incidents[inc.id] = inc
        if inc.resolved_at is None:
            heapq.heappush(engine._quiet_heap, (inc.last_activity + engine._quiet, inc.id))
            engine._quiet_armed.add(inc.id)
        else:
            engine._retire(inc)
    known = engine._incidents

    def incident_ref(x: object, what: str) -> str:
        inc_id = _str(x, what)
        if inc_id not in known:
            _bad(what, f"unknown incident {inc_id!r:.80}")
        return inc_id

    engine._open_by_asset = {
        k: incident_ref(v, "open_by_asset[]") for k, v in _obj(doc["open_by_asset"], "open_by_asset").items()
    }
    engine._dirty = {incident_ref(v, "dirty[]") for v in _arr(doc["dirty"], "dirty")}
    engine._last_noise = {
        a: {
            s: (_time(t, "last_noise.time"), _str(i, "last_noise.alert"), _int(n, "last_noise.count"))
            for s, (t, i, n) in ((s, _arr(v, "last_noise[][]", 3)) for s, v in _obj(m, "last_noise[]").items())
        }
        for a, m in _paced(_obj(doc["last_noise"], "last_noise").items(), pause)
    }
    engine._toggles = {
        a: {s: [_time(t, "toggles.time") for t in _arr(v, "toggles[][]")] for s, v in _obj(m, "toggles[]").items()}
        for a, m in _paced(_obj(doc["toggles"], "toggles").items(), pause)
    }
    sig_incident = _obj(doc["sig_incident"], "sig_incident")
    engine._sig_incident = {
        k: (incident_ref(i, "sig_incident.incident"), _time(t, "sig_incident.time"))
        for k, (i, t) in ((k, _arr(v, "sig_incident[]", 2)) for k, v in sig_incident.items())
    }
    engine._recent_assets = OrderedDict(
        (_str(a, "recent_assets.asset"), _time(t, "recent_assets.time"))
        for a, t in (_arr(r, "recent_assets[]", 2) for r in _paced(_arr(doc["recent_assets"], "recent_assets"), pause))
    )
    return engine
