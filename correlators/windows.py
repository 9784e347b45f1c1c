"""Evidence windows: per-asset session windows (gap + maximum length) holding waiting alerts."""

from __future__ import annotations

from collections.abc import Hashable, Set
from datetime import datetime
from typing import Any, Final, TypeVar

from pydantic_core import to_jsonable_python

from correlators.scoring import (
    CROSS_DOMAIN,
    DETECTOR_BONUS,
    FIRST_WEIGHT,
    SEVERITY_WEIGHT,
    TACTIC_BONUS,
    repeat_bonus,
)
from schemas.epoch import epoch_seconds
from schemas.models import Alert, Domain, Severity, Status

__all__ = ["Evidence", "Waiting", "Window", "DIVERSITY_MIN"]

# Alerts this weak (warm-up) add their own weight but do not count as extra detectors/tactics.
DIVERSITY_MIN = 0.2

_T = TypeVar("_T", bound=Hashable)
_EMPTY: Final[frozenset[str]] = frozenset()
_NO_DOMAINS: Final[frozenset[Domain]] = frozenset()
# A window's detectors, domains and tactics are a handful of the same few values, so windows
# share one immutable set per combination (an empty set costs 216 bytes; most assets have a
# window). Bounded: the values come from the input.
_SHARED: Final[dict[tuple[frozenset[object], object], frozenset[object]]] = {}
_MAX_SHARED: Final = 4096


def _plus(current: Set[_T], item: _T) -> Set[_T]:
    """`current` with `item`, as a shared immutable set (`current` itself if it holds it)."""
    if item in current:
        return current
    base = frozenset(current)
    key = (base, item)
    found = _SHARED.get(key)
    if found is None:
        if len(_SHARED) >= _MAX_SHARED:
            _SHARED.clear()
        found = _SHARED[key] = base | {item}
    return found  # type: ignore[return-value]


class Waiting:
    """A waiting alert: only what its decision and the incident it may join need.

    Holding the validated `Alert` until its window closes cost ~900 bytes a waiting alert
    (the model, its `__dict__`, `raw`, the addresses); these fields are the ones read after
    `Window.add`, and they are the alert's own (validated) values.
    """

    __slots__ = ("id", "time", "signature", "source", "domain", "status", "severity")

    def __init__(
        self, id: str, time: datetime, signature: str, source: str, domain: Domain, status: Status, severity: Severity
    ) -> None:
        # (fields, not the alert: a restore makes them from a snapshot without an `Alert`)
        self.id = id
        self.time = time
        self.signature = signature
        self.source = source
        self.domain = domain
        self.status = status
        self.severity = severity  # after severity rules (the alert's own is not needed)

    @staticmethod
    def of(alert: Alert, severity: Severity) -> Waiting:
        """The fields of `alert` a waiting alert keeps."""
        return Waiting(alert.id, alert.time, alert.signature, alert.source, alert.domain, alert.status, severity)

    def alert_fields(self, asset: str) -> dict[str, Any]:
        """The kept fields as the JSON of an `Alert` on `asset` (snapshots: `Alert.model_validate` reads it back)."""
        return {
            "id": self.id,
            "source": self.source,
            "domain": self.domain.value,
            "time": to_jsonable_python(self.time),  # as `Alert.model_dump(mode="json")` writes it
            "asset": asset,
            "signature": self.signature,
            "status": self.status.value,
        }


class Evidence:
    """What one signature contributes inside a window (a plain class: compiled, ~20 ns to
    make, where a dataclass's `__init__` stays interpreted, ~160 ns)."""

    __slots__ = ("weight", "count", "note")

    def __init__(self, weight: float, count: int, note: str) -> None:
        self.weight = weight
        self.count = count
        self.note = note

    def __repr__(self) -> str:
        return f"Evidence({self.weight!r}, {self.count!r}, {self.note!r})"


class Window:
    """One asset's open evidence window (a plain class: compiled, its `__init__` is native,
    where a dataclass's stays interpreted).

    `memo`: whatever a snapshot encoder made of this window's state (`correlators.state`), kept
    until the window changes. Every change goes through a method here, which drops it: a
    window that did not change since the last checkpoint is not encoded again (in a storm of
    100,000 new assets, encoding the windows was 1.6 s of a checkpoint's ~3.5).
    """

    __slots__ = ("asset", "start", "last", "pending", "evidence", "sources", "domains", "tactics", "findings", "memo")

    def __init__(
        self,
        asset: str,
        start: float,
        last: float,
        pending: list[Waiting] | None = None,
        evidence: dict[str, Evidence] | None = None,
        sources: Set[str] = _EMPTY,
        domains: Set[Domain] = _NO_DOMAINS,
        tactics: Set[str] = _EMPTY,
        findings: list[tuple[str, float]] | None = None,
    ) -> None:
        self.asset = asset
        self.start = start
        self.last = last
        self.pending: list[Waiting] = [] if pending is None else pending
        self.evidence: dict[str, Evidence] = {} if evidence is None else evidence
        self.sources = sources
        self.domains = domains
        self.tactics = tactics
        self.findings: list[tuple[str, float]] = [] if findings is None else findings
        self.memo: object = None

    def __repr__(self) -> str:
        return f"Window({self.asset!r}, start={self.start!r}, last={self.last!r}, pending={len(self.pending)})"

    def add(self, alert: Alert, severity: Severity, novelty: float, note: str) -> None:
        """Add a waiting alert with its novelty factor (0 = routine, 1 = never seen)."""
        self.memo = None
        self.pending.append(Waiting.of(alert, severity))
        ts = epoch_seconds(alert.time)
        self.last = max(self.last, ts)
        ev = self.evidence.get(alert.signature)
        if ev is None:
            weight = SEVERITY_WEIGHT[severity] * novelty
            self.evidence[alert.signature] = Evidence(weight, 1, note)
        else:
            ev.count += 1
        if novelty >= DIVERSITY_MIN:
            self.sources = _plus(self.sources, alert.source)
            self.domains = _plus(self.domains, alert.domain)
            for tactic in alert.tactics:
                self.tactics = _plus(self.tactics, tactic)

    def add_tactic(self, tactic: str) -> None:
        """A tactic a correlation rule found."""
        self.memo = None
        self.tactics = _plus(self.tactics, tactic)

    def add_finding(self, text: str, weight: float) -> None:
        """A finding (a rule's, or flapping) with the weight it adds to the score."""
        self.memo = None
        self.findings.append((text, weight))

    def score(self, factor: float) -> float:
        """Total evidence, scaled by the asset's importance."""
        total = 0.0
        for ev in self.evidence.values():
            total += ev.weight * FIRST_WEIGHT + repeat_bonus(ev.count, ev.weight)
        if total <= 0 and not self.findings:
            return 0.0
        total += DETECTOR_BONUS * max(0, len(self.sources) - 1)
        total += TACTIC_BONUS * max(0, len(self.tactics) - 1)
        total += sum(w for _, w in self.findings)
        if len(self.domains) > 1:
            total *= CROSS_DOMAIN
        return total * factor

    def explain(self, score: float, threshold: float) -> str:
        """Human-readable account of the score."""
        parts = [
            f"{sig}: {ev.note}" + (f" x{ev.count}" if ev.count > 1 else "")
            for sig, ev in sorted(self.evidence.items(), key=lambda kv: -kv[1].weight)
            if ev.weight > 0
        ][:4]
        if len(self.sources) > 1:
            parts.append(f"{len(self.sources)} detectors ({', '.join(sorted(self.sources))})")
        if len(self.tactics) > 1:
            parts.append(f"tactics {', '.join(sorted(self.tactics))}")
        parts.extend(text for text, _ in self.findings)
        if len(self.domains) > 1:
            parts.append("security and ops signals on the same asset")
        return f"score {score:.1f} vs threshold {threshold:.1f} ({'; '.join(parts) or 'no evidence'})"
