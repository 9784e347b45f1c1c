"""Per-asset baselines in event time: what is routine, what is novel, what is a burst.

Counts decay exponentially (half-life in event time), so a signature that stops firing
becomes novel again. A signature is *routine* on an asset once its decayed count reaches
`routine_count` and it was seen in more than one hour of the day. State is nested per asset,
so an idle asset's whole baseline can be evicted at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["SignatureStats", "Baseline", "Familiarity"]

_LN2: Final = math.log(2.0)
# one shared int per hour of day (bits 8-23 are not small ints: each observation made its own)
_HOUR_BITS: Final = tuple(1 << hour for hour in range(24))


class SignatureStats:
    """Decayed occurrence count and activity profile of one signature on one asset (a plain
    class: compiled, ~20 ns to make, where a dataclass's `__init__` stays interpreted)."""

    __slots__ = ("count", "last", "first", "hours", "total")

    def __init__(self, count: float, last: float, first: float, hours: int, total: int) -> None:
        self.count = count
        self.last = last
        self.first = first
        self.hours = hours
        self.total = total

    def __repr__(self) -> str:
        return f"SignatureStats({self.count!r}, {self.last!r}, {self.first!r}, {self.hours!r}, {self.total!r})"

    def decayed(self, now: float, half_life: float) -> float:
        if now <= self.last:
            return self.count
        return self.count * math.exp(-_LN2 * (now - self.last) / half_life)


def _export(sigs: dict[str, SignatureStats]) -> dict[str, Any]:
    return {sig: [s.count, s.last, s.first, s.hours, s.total] for sig, s in sigs.items()}


class Familiarity:
    """How familiar a signature is on an asset at a moment (a value: never changed once made).

    A plain class, made once per alert: compiled, ~20 ns to make, where a dataclass's
    `__init__` stays interpreted (~160 ns; a frozen one ~1 µs).
    """

    __slots__ = ("count", "total", "hours_seen", "rate_per_hour", "seen_elsewhere")

    def __init__(self, count: float, total: int, hours_seen: int, rate_per_hour: float, seen_elsewhere: int) -> None:
        self.count = count
        self.total = total
        self.hours_seen = hours_seen
        self.rate_per_hour = rate_per_hour
        self.seen_elsewhere = seen_elsewhere

    def __repr__(self) -> str:
        return (
            f"Familiarity(count={self.count!r}, total={self.total!r}, hours_seen={self.hours_seen!r}, "
            f"rate_per_hour={self.rate_per_hour!r}, seen_elsewhere={self.seen_elsewhere!r})"
        )

    @property
    def novel(self) -> bool:
        return self.total == 0


class Baseline:
    """Signature statistics per asset, plus how many assets know each signature."""

    def __init__(self, half_life_s: float, routine_count: float) -> None:
        self._half_life = half_life_s
        self._routine = routine_count
        self._stats: dict[str, dict[str, SignatureStats]] = {}
        self._assets_with: dict[str, int] = {}
        # a snapshot encoder's form of each asset's export, until the asset's stats change
        # (`export(memo)`; as `Window.memo`)
        self._memo: dict[str, object] = {}

    def familiarity(self, asset: str, signature: str, now: float) -> Familiarity:
        """Familiarity before counting the current alert."""
        per_asset = self._stats.get(asset)
        stats = per_asset.get(signature) if per_asset is not None else None
        elsewhere = self._assets_with.get(signature, 0)
        if stats is None:
            return Familiarity(0.0, 0, 0, 0.0, elsewhere)
        # stats.decayed(now, half_life), inline (once per alert)
        count = stats.count
        if now > stats.last:
            count *= math.exp(-_LN2 * (now - stats.last) / self._half_life)
        span_h = (now - stats.first) / 3600.0
        if not span_h > 1.0:  # max(1.0, span_h)
            span_h = 1.0
        return Familiarity(count, stats.total, stats.hours.bit_count(), stats.total / span_h, elsewhere - 1)

    def is_routine(self, fam: Familiarity) -> bool:
        """Seen regularly: enough decayed occurrences spread over more than one hour."""
        return fam.count >= self._routine and fam.hours_seen >= 2

    def observe(self, asset: str, signature: str, now: float) -> None:
        """Count one occurrence."""
        memo = self._memo
        if memo:
            memo.pop(asset, None)
        per_asset = self._stats.get(asset)
        if per_asset is None:
            per_asset = self._stats[asset] = {}
        stats = per_asset.get(signature)
        hour_bit = _HOUR_BITS[int((now // 3600) % 24)]
        if stats is None:
            per_asset[signature] = SignatureStats(1.0, now, now, hour_bit, 1)
            self._assets_with[signature] = self._assets_with.get(signature, 0) + 1
            return
        if now > stats.last:  # stats.decayed(now, half_life) + 1, inline (once per alert)
            stats.count = stats.count * math.exp(-_LN2 * (now - stats.last) / self._half_life) + 1.0
            stats.last = now
        else:
            stats.count += 1.0
        stats.hours |= hour_bit
        stats.total += 1

    def forget_asset(self, asset: str) -> int:
        """Drop an asset's statistics (idle-state eviction); returns signatures removed."""
        self._memo.pop(asset, None)
        per_asset = self._stats.pop(asset, None)
        if not per_asset:
            return 0
        for signature in per_asset:
            left = self._assets_with.get(signature, 1) - 1
            if left > 0:
                self._assets_with[signature] = left
            else:
                self._assets_with.pop(signature, None)
        return len(per_asset)

    def assets(self) -> int:
        """Number of assets with a baseline."""
        return len(self._stats)

    def __len__(self) -> int:
        return sum(len(v) for v in self._stats.values())

    def export(self) -> dict[str, dict[str, list[float]]]:
        """Plain data for snapshots: asset -> signature -> [count, last, first, hours, total]."""
        return {asset: _export(sigs) for asset, sigs in self._stats.items()}

    def export_memo(self, memo: Callable[[dict[str, Any]], object]) -> dict[str, object]:
        """`export()` with each asset's data in the form `memo` makes of it, made again only
        for the assets whose stats changed since (in a storm of 100,000 new assets, exporting
        and encoding the baselines was 0.25 s of every checkpoint)."""
        held = self._memo
        out: dict[str, object] = {}
        for asset, sigs in self._stats.items():
            value = held.get(asset)
            if value is None:
                value = held[asset] = memo(_export(sigs))
            out[asset] = value
        return out

    def load(self, data: dict[str, dict[str, list[float]]]) -> None:
        """Replace the state with an `export()`."""
        self.load_items(data.items())

    def load_items(self, data: Iterable[tuple[str, dict[str, list[float]]]]) -> None:
        """`load` from an `export()`'s items, read one by one (`correlators.state.load` paces
        them)."""
        all_stats: dict[str, dict[str, SignatureStats]] = {}
        assets_with: dict[str, int] = {}
        for asset, sigs in data:
            stats = all_stats[asset] = {
                sig: SignatureStats(float(v[0]), float(v[1]), float(v[2]), int(v[3]), int(v[4]))
                for sig, v in sigs.items()
            }
            for sig in stats:
                assets_with[sig] = assets_with.get(sig, 0) + 1
        self._memo = {}
        self._stats = all_stats
        self._assets_with = assets_with
