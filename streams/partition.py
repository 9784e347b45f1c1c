"""Correlation stage, pure part: one partition's engine fed in log order, and its watermark.

Everything that reaches the engine is a record of the partition's log, so processing is a
deterministic function of the log: a partition restored from a checkpoint and fed the same
records again produces the same outputs, which is what lets a restarted worker skip what it
already published. Engine calls mirror `socnoc replay` exactly (advance to an alert's time
when it moves event time forward, then `on_alert`).

The watermark of a quiet partition follows the inputs: each input partition (a *source*)
broadcasts ticks; the partition advances to the slowest active source, or, when every source
is idle, to the wall-clock watermark the idle ticks carry (`SOCNOC_IDLE_TIMEOUT`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from correlators.types import Correlator, Output
from schemas.models import Decision
from streams.records import (
    AlertItem,
    ContextItem,
    Emitted,
    FlushItem,
    InvalidItem,
    Item,
    RulesItem,
    TickItem,
    dead_letter,
)

__all__ = ["Processor", "SourceMark", "Snapshotter", "effective_watermark"]

_FORMAT = 1


@dataclass(frozen=True, slots=True)
class SourceMark:
    """Latest tick of one source."""

    watermark: float
    idle: bool


def effective_watermark(sources: dict[str, SourceMark]) -> float | None:
    """Slowest active source; if every source is idle, the most advanced idle watermark."""
    active = [m.watermark for m in sources.values() if not m.idle]
    if active:
        return min(active)
    if sources:
        return max(m.watermark for m in sources.values())
    return None


@dataclass
class Snapshotter:
    """How a correlator becomes bytes and back (the engine's own snapshot when it has one)."""

    dump: Callable[[Correlator], bytes]
    load: Callable[[bytes], Correlator]


@dataclass
class Processor:
    """One partition: its correlator, watermark and the sources' latest ticks."""

    correlator: Correlator
    watermark: float | None = None
    sources: dict[str, SourceMark] = field(default_factory=dict)
    alerts: int = 0

    def feed(self, item: Item) -> list[Emitted]:
        """Outputs due after one internal record, in the order the engine gave them."""
        if isinstance(item, AlertItem):
            out: list[Emitted] = []
            ts = item.alert.time.timestamp()
            if self.watermark is None or ts > self.watermark:
                self.watermark = ts
                out.extend(self._advance(item.alert.time))
            out.extend(self.correlator.on_alert(item.alert))
            self.alerts += 1
            return out
        if isinstance(item, InvalidItem):
            if not item.decide:
                return [dead_letter(item)]
            decided: list[Emitted] = list(self.correlator.on_invalid(item.alert_id, item.reason))
            if any(isinstance(o, Decision) and o.alert_id == item.alert_id for o in decided):
                decided.append(dead_letter(item))  # not again for a redelivered input
            return decided
        if isinstance(item, ContextItem):
            self.correlator.on_context(item.item)
            return []
        if isinstance(item, TickItem):
            self.sources[item.source] = SourceMark(item.watermark, item.idle)
            target = effective_watermark(self.sources)
            if target is not None and (self.watermark is None or target > self.watermark):
                self.watermark = target
                return list(self._advance(datetime.fromtimestamp(target, tz=UTC)))
            return []
        if isinstance(item, RulesItem):
            replace = getattr(self.correlator, "replace_rules", None)
            if callable(replace):
                replace(list(item.rules))
            return []
        assert isinstance(item, FlushItem)
        return list(self.correlator.flush())

    def _advance(self, when: datetime) -> list[Output]:
        return self.correlator.advance(when)

    # -- checkpoints -----------------------------------------------------------------------
    def dump(self, snap: Snapshotter) -> bytes:
        """The partition's state: a small JSON header and the correlator's snapshot."""
        head = orjson.dumps(
            {
                "format": _FORMAT,
                "watermark": self.watermark,
                "alerts": self.alerts,
                "sources": {k: [m.watermark, m.idle] for k, m in sorted(self.sources.items())},
            }
        )
        body = snap.dump(self.correlator)
        return zlib.compress(len(head).to_bytes(4, "big") + head + body, 1)

    @classmethod
    def load(cls, data: bytes, snap: Snapshotter) -> Processor:
        """Inverse of `dump`."""
        plain = zlib.decompress(data)
        size = int.from_bytes(plain[:4], "big")
        head = orjson.loads(plain[4 : 4 + size])
        if head.get("format") != _FORMAT:
            raise ValueError(f"unknown checkpoint format {head.get('format')!r}")
        correlator = snap.load(plain[4 + size :])
        sources = {k: SourceMark(float(v[0]), bool(v[1])) for k, v in head["sources"].items()}
        return cls(correlator, head["watermark"], sources, int(head.get("alerts", 0)))

