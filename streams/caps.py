"""State caps reached by a worker, as the `socnoc_caps_hit_total` metric and rate-limited logs.

The engine counts in `EngineStats` every time it stays within a cap by giving something up
(evicting an asset's state, closing a window early, deciding an alert unscored, listing only
the first alert ids of an incident); the correlate stage reports the increase once per batch.
Log lines are per cap and at most one per `log_every_s`, with the count since the last one, so
a flood produces a handful of lines rather than one per alert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.metrics import Metrics

__all__ = ["ENGINE_CAPS", "CapWatch"]

log = logging.getLogger(__name__)

# EngineStats counter -> (the cap it reports, what reaching it costs)
ENGINE_CAPS: dict[str, tuple[str, str]] = {
    "assets_over_cap": ("max_assets", "evicted the state (baseline, dedup memory) of least recently seen assets"),
    "windows_closed_early": ("max_windows", "closed the oldest evidence windows early (their alerts: noise)"),
    "window_full": ("max_pending_per_asset", "decided alerts as noise without scoring them (window full)"),
    "incidents_capped": ("max_alert_ids_per_event", "incidents list only their first alert ids (totals count all)"),
    "rule_groups_over_cap": (
        "max_rule_groups",
        "dropped the state of least recently updated correlation-rule groups",
    ),
}
RECORD_CAP = ("max_record_bytes", "sent records over the size limit to the DLQ as RecordTooLarge")


@dataclass
class _Pending:
    count: int = 0
    cost: str = ""
    last_log: float | None = None
    partitions: set[int] = field(default_factory=set)


class CapWatch:
    """Turns increases of a correlator's cap counters into metrics and rate-limited log lines."""

    def __init__(
        self, metrics: Metrics, *, log_every_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self._every = log_every_s
        self._clock = clock
        self._seen: dict[int, tuple[int, tuple[int, ...]]] = {}
        self._pending: dict[str, _Pending] = {}

    def observe(self, partition: int, correlator: object) -> None:
        """Report what the partition's correlator gave up since the last call (no-op the first time
        a correlator is seen: a restored one's counters include its predecessors')."""
        stats = getattr(correlator, "stats", None)
        if stats is None:
            return
        current = tuple(int(getattr(stats, name, 0)) for name in ENGINE_CAPS)
        before = self._seen.get(partition)
        self._seen[partition] = (id(correlator), current)
        if before is not None and before[0] == id(correlator):
            cfg = getattr(correlator, "cfg", None)
            for name, now, then in zip(ENGINE_CAPS, current, before[1], strict=True):
                if now > then:
                    cap, cost = ENGINE_CAPS[name]
                    limit = getattr(cfg, cap, None)
                    self.hit(cap, f"{cost}; {cap}={limit}" if limit is not None else cost, now - then, partition)
        self.flush()

    def hit(self, cap: str, cost: str, count: int = 1, partition: int | None = None) -> None:
        """Count `count` hits of `cap`; log now if this cap has not logged in the last interval."""
        self.metrics.observe_cap_hit(cap, count)
        pending = self._pending.setdefault(cap, _Pending())
        pending.count += count
        pending.cost = cost
        if partition is not None:
            pending.partitions.add(partition)
        self._log(cap, pending)

    def record_too_large(self, partition: int | None = None) -> None:
        """An input record over `SOCNOC_MAX_RECORD_BYTES` (it gets `invalid` and a dead letter)."""
        self.hit(*RECORD_CAP, partition=partition)

    def forget(self, partition: int) -> None:
        """The partition moved away: its next correlator starts a new baseline."""
        self._seen.pop(partition, None)

    def flush(self) -> None:
        """Log the counts still waiting for their interval to end."""
        for cap, pending in self._pending.items():
            if pending.count:
                self._log(cap, pending)

    def _log(self, cap: str, pending: _Pending) -> None:
        now = self._clock()
        if pending.last_log is not None and now - pending.last_log < self._every:
            return
        since = "" if pending.last_log is None else f" in the last {now - pending.last_log:.0f} s"
        where = ",".join(map(str, sorted(pending.partitions))) or "-"
        log.warning(
            "state cap %s reached %d times%s (partitions %s): %s",
            cap,
            pending.count,
            since,
            where,
            pending.cost,
            extra={"cap": cap, "count": pending.count},
        )
        pending.count = 0
        pending.partitions.clear()
        pending.last_log = now
