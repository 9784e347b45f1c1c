"""Topology: neighbours and upstream devices from the inventory, and alarm-type precedence.

Precedence is learned from history, as OpenNMS ALEC learns: how often alarm type B follows
type A within a short span on the same or a linked device, against how often B occurs at
all. A member alarm is accepted as a consequence of a root when the learned lift is high.
"""

from __future__ import annotations

from collections import deque

from schemas.context import Asset, LinkKind

__all__ = ["Topology", "Precedence"]


class Topology:
    """Undirected neighbour sets plus the directed upstream relation."""

    def __init__(self) -> None:
        self._peers: dict[str, set[str]] = {}
        self._upstream: dict[str, set[str]] = {}
        self._declared: dict[str, tuple[tuple[str, LinkKind], ...]] = {}
        self._count: dict[tuple[str, str], int] = {}

    def add(self, asset: Asset) -> None:
        """Add or replace an asset's links (both directions for neighbours).

        Replacing an entry drops the links it no longer declares; a link declared from both
        ends stays until both ends drop it.
        """
        new = tuple((link.to, link.kind) for link in asset.links)
        for to, kind in self._declared.get(asset.id, ()):
            self._unlink(asset.id, to, kind)
        self._declared[asset.id] = new
        for to, kind in new:
            pair = (asset.id, to) if asset.id <= to else (to, asset.id)
            self._count[pair] = self._count.get(pair, 0) + 1
            self._peers.setdefault(asset.id, set()).add(to)
            self._peers.setdefault(to, set()).add(asset.id)
            if kind is LinkKind.UPSTREAM:
                self._upstream.setdefault(asset.id, set()).add(to)

    def _unlink(self, a: str, b: str, kind: LinkKind) -> None:
        pair = (a, b) if a <= b else (b, a)
        left = self._count.get(pair, 0) - 1
        if left > 0:
            self._count[pair] = left
        else:
            self._count.pop(pair, None)
            self._peers.get(a, set()).discard(b)
            self._peers.get(b, set()).discard(a)
        if kind is LinkKind.UPSTREAM:
            self._upstream.get(a, set()).discard(b)

    def neighbours(self, asset: str) -> set[str]:
        """Directly linked assets."""
        return self._peers.get(asset, set())

    def upstream(self, asset: str) -> set[str]:
        """Assets that feed this one."""
        return self._upstream.get(asset, set())


class Precedence:
    """Counts of alarm type pairs (A then B nearby in time and topology)."""

    def __init__(self, span_s: float, min_lift: float | None, memory: int = 64) -> None:
        self._span = span_s
        self.min_lift = min_lift
        self._recent: deque[tuple[float, str, str]] = deque(maxlen=memory)
        self._pair: dict[tuple[str, str], int] = {}
        self._type: dict[str, int] = {}
        self._total = 0

    def observe(self, now: float, asset: str, kind: str, near: set[str]) -> None:
        """Record an alarm; pairs it with recent alarms on the same or neighbouring assets."""
        seen: set[str] = set()
        for t, other_asset, other_kind in self._recent:
            if now - t <= self._span and (other_asset == asset or other_asset in near):
                if other_kind not in seen:
                    seen.add(other_kind)
                    key = (other_kind, kind)
                    self._pair[key] = self._pair.get(key, 0) + 1
        self._recent.append((now, asset, kind))
        self._type[kind] = self._type.get(kind, 0) + 1
        self._total += 1

    def lift(self, cause: str, effect: str) -> float:
        """P(effect follows cause) / P(effect follows anything) - 1 means independent."""
        n_cause = self._type.get(cause, 0)
        n_effect = self._type.get(effect, 0)
        if n_cause < 5 or n_effect < 5 or self._total == 0:
            return 0.0
        pair = self._pair.get((cause, effect), 0)
        reverse = self._pair.get((effect, cause), 0)
        if pair <= reverse:
            return 0.0
        expected = n_cause * (n_effect / self._total)
        return pair / max(expected, 1e-9)

    def export(self) -> dict[str, object]:
        """Plain data for snapshots."""
        return {
            "recent": [list(r) for r in self._recent],
            "pair": [[a, b, n] for (a, b), n in self._pair.items()],
            "type": self._type,
            "total": self._total,
        }

    def load(self, data: dict[str, object]) -> None:
        """Replace the state with an `export()`."""
        recent = data["recent"]
        pairs = data["pair"]
        types = data["type"]
        total = data["total"]
        assert isinstance(recent, list) and isinstance(pairs, list) and isinstance(types, dict)
        self._recent.clear()
        self._recent.extend((float(t), str(a), str(k)) for t, a, k in recent)
        self._pair = {(str(a), str(b)): int(n) for a, b, n in pairs}
        self._type = {str(k): int(v) for k, v in types.items()}
        self._total = int(total) if isinstance(total, int) else 0

    def plausible(self, cause: str, effect: str) -> bool:
        """Whether `effect` is a plausible consequence of `cause` (same type, or a strong link)."""
        if cause == effect:
            return True
        return self.min_lift is not None and self.lift(cause, effect) >= self.min_lift
