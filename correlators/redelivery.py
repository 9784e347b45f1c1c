"""The redelivery memory: the ids of the alerts an engine decided, the newest `cap` of them.

An id delivered again (a redelivery after a crash) is recognised and gets no second decision.
Ids are numbered in the order remembered: the memory holds positions `[total - len, total)`,
which is how a checkpoint stores it in segments written once each (`streams/checkpoints.py`).

The ids sit in `SHARDS` dicts chosen by the id's hash, their order in one deque. One dict of
all of them stalled its engine each time it grew (CPython rebuilds a whole table at once:
9.7 ms at 349,525 ids, 21 ms at 699,051, in the engine alone; in the benchmark's worker, a
spike of 100-125 ms in its latency) and, once full, on the rebuilds its deletions force; a
shard is a 64th of that (the worst 1,000 ids of a million take 1.7 ms, against 21 ms). Which
shard holds an id depends on the process's string hashing, never on what is decided: the
order, and everything read from the memory, comes from the deque.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Final

__all__ = ["SeenIds", "SHARDS"]

SHARDS: Final = 64
_MASK: Final = SHARDS - 1
# The shard is chosen by high bits of the hash: a dict places a key by its low bits, and a
# shard whose keys all shared their low 6 bits used 1/64 of its table's first probes (the
# memory cost ~110 ns more an id than one dict; with bits 40-45, ~10 ns).
_SHIFT: Final = 40


class SeenIds:
    """Alert ids remembered, oldest first, at most `cap` (the oldest are forgotten)."""

    __slots__ = ("cap", "total", "_shards", "_order")

    def __init__(self, cap: int, ids: Iterable[str] = (), total: int | None = None) -> None:
        """A memory holding `ids` (oldest first, distinct, at most `cap`), the last of them
        at position `total - 1` (`total` defaults to their number)."""
        self.cap = cap
        self._shards: list[dict[str, None]] = [{} for _ in range(SHARDS)]
        self._order: deque[str] = deque()
        for alert_id in ids:
            shard = self._shards[(hash(alert_id) >> _SHIFT) & _MASK]
            if alert_id in shard:
                raise ValueError(f"alert id {alert_id!r} is remembered twice")
            shard[alert_id] = None
            self._order.append(alert_id)
        if len(self._order) > cap:
            raise ValueError(f"{len(self._order)} ids for a memory of {cap}")
        self.total = len(self._order) if total is None else total
        if self.total < len(self._order):
            raise ValueError(f"{len(self._order)} ids held of {self.total} remembered")

    def __len__(self) -> int:
        return len(self._order)

    def remember(self, alert_id: str) -> bool:
        """Remember an id; False if it is remembered already (a redelivery)."""
        shard = self._shards[(hash(alert_id) >> _SHIFT) & _MASK]
        held = len(shard)
        shard.setdefault(alert_id, None)  # one lookup, not two
        if len(shard) == held:
            return False
        order = self._order
        order.append(alert_id)
        self.total += 1
        if len(order) > self.cap:
            oldest = order.popleft()
            del self._shards[(hash(oldest) >> _SHIFT) & _MASK][oldest]
        return True

    def span(self) -> tuple[int, int]:
        """Positions `[first, end)` of the ids held."""
        return self.total - len(self._order), self.total

    def ids(self, start: int, end: int) -> list[str]:
        """The ids at positions `[start, end)` still held, oldest first."""
        first, total = self.span()
        start, end = max(start, first), min(end, total)
        if start >= end:
            return []
        order = self._order
        if start == first and end == total:
            return list(order)
        # from the newer end: segments and snapshot tails are near it
        return list(islice(reversed(order), total - end, total - start))[::-1]
