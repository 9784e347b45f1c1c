"""Event-time order across input partitions, for one correlation partition.

A correlation partition's log interleaves the alerts of many input partitions (and, with
several decoding workers, of several decoders), in batches: the decoder hands over a whole
fetch of one input partition, then of the next. An engine fed in log order would see event
time jump ahead with the first batch and take the next partition's older alerts for late
ones. Like Flink's per-partition watermarks (and Kafka Streams' task buffers), this buffer
releases alerts in event-time order, from what the log itself says, so a partition restored
from a checkpoint decides exactly as before:

- every alert names its input partition (`source`); a source that delivers alerts holds back
  alerts newer than its own progress (the newest event time it delivered);
- a source stops holding others back when the decoder reports it *quiet* (nothing new for
  `SOCNOC_ORDER_WAIT`) or idle, and holds again with its next alert; a source never seen
  holds nothing, except that a decoder announces every input partition it takes on (`start`)
  before it sends any alert: until such a source delivers or goes quiet, it holds back every
  other source's alerts, so the first fetch of one partition cannot race ahead of the rest;
  with several decoders, each also names the input partitions its topics' metadata lists and
  another decoder owns (`expect`): a source never heard of holds from then on, so a decoder
  whose first fetch comes before the other decoder's announcement cannot race ahead either;
- the buffer is bounded: an alert whose input record is more than `max_hold_ms` older (by
  the records' Kafka timestamps) than the newest record seen is released anyway, so a source
  that keeps sending from far behind (a device with a wrong clock) delays the others by at
  most that much; and the oldest alert goes when `max_pending` are held. Such an alert may
  then be late for the engine, as it would have been without the buffer.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas.epoch import epoch_seconds
from schemas.models import Alert
from streams.records import AlertItem

__all__ = ["Reorder", "SourceProgress"]


class SourceProgress:
    """The newest event time an input partition has delivered, and whether it holds others.

    Never changed once made (a new one replaces it). A plain class: one is made per alert,
    and a frozen dataclass's `__init__` stays interpreted when compiled (~0.9% of the worker).
    """

    __slots__ = ("watermark", "holding")

    def __init__(self, watermark: float, holding: bool) -> None:
        self.watermark = watermark
        self.holding = holding

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SourceProgress):
            return NotImplemented
        return (self.watermark, self.holding) == (other.watermark, other.holding)

    __hash__ = None  # type: ignore[assignment]  # (equal by value)

    def __repr__(self) -> str:
        return f"SourceProgress({self.watermark!r}, {self.holding!r})"


@dataclass
class Reorder:
    """Alerts held until every input partition still sending has passed their event time."""

    max_hold_ms: int = 5_000
    max_pending: int = 50_000
    sources: dict[str, SourceProgress] = field(default_factory=dict)
    newest_arrival: int | None = None
    _heap: list[tuple[float, int, AlertItem]] = field(default_factory=list)
    _seq: int = 0
    # held alerts by arrival (ms, seq, event time); entries not in `_timed` were released
    _arrivals: list[tuple[int, int, float]] = field(default_factory=list)
    _timed: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: AlertItem) -> Iterable[AlertItem]:
        """Take one alert; the alerts now due, oldest first (possibly this one)."""
        ts = self._note(item)
        arrived = item.arrived_ms
        if not self._heap and ts <= self.bound():
            # Nothing held and this one due: it goes at once, as `release` would let it, without
            # the two heaps (the usual case with one input partition, where the heaps, the
            # generator and the overdue scan were ~10,000 instructions an alert of the stages).
            self._seq += 1
            return (item,)
        heapq.heappush(self._heap, (ts, self._seq, item))
        if arrived is not None:
            heapq.heappush(self._arrivals, (arrived, self._seq, ts))
            self._timed.add(self._seq)
        self._seq += 1
        return self.release()

    def _note(self, item: AlertItem) -> float:
        """The progress an alert shows, its source's and the newest arrival; its event time."""
        ts = epoch_seconds(item.alert.time)
        if item.source is not None:
            known = self.sources.get(item.source)
            mark = ts if known is None else max(known.watermark, ts)
            self.sources[item.source] = SourceProgress(mark, True)
        arrived = item.arrived_ms
        if arrived is not None and (self.newest_arrival is None or arrived > self.newest_arrival):
            self.newest_arrival = arrived
        return ts

    def progress(self, source: str, watermark: float, *, quiet: bool) -> Iterator[AlertItem]:
        """A tick of `source`: how far it got, and whether it went quiet (or idle); yields the
        alerts now due."""
        known = self.sources.get(source)
        if known is not None:
            self.sources[source] = SourceProgress(max(known.watermark, watermark), known.holding and not quiet)
        return self.release()

    def start(self, source: str) -> None:
        """A decoder took `source` on: it holds the others back from its own progress so far
        (from the beginning of time if new) until it delivers or goes quiet."""
        known = self.sources.get(source)
        self.sources[source] = SourceProgress(-math.inf if known is None else known.watermark, True)

    def expect(self, source: str) -> None:
        """Another decoder owns `source`: if it was never heard of, it holds the others back
        from the beginning of time until its owner delivers or reports it quiet; a source
        already known keeps its state (re-holding a quiet one would stall the others until
        it sends again)."""
        if source not in self.sources:
            self.sources[source] = SourceProgress(-math.inf, True)

    def oldest(self) -> float | None:
        """Event time of the oldest held alert (the partition's clock must not pass it)."""
        return self._heap[0][0] if self._heap else None

    def bound(self) -> float:
        """Alerts at or below this event time can no longer be overtaken by an older one."""
        low = math.inf
        for source in self.sources.values():
            if source.holding and source.watermark < low:
                low = source.watermark
        return low

    def release(self) -> Iterator[AlertItem]:
        """The alerts now due, oldest first."""
        limit = max(self.bound(), self._overdue())
        heap = self._heap
        while heap and (heap[0][0] <= limit or len(heap) > self.max_pending):
            yield self._pop()

    def _overdue(self) -> float:
        """The newest event time among alerts held longer than `max_hold_ms` (by arrival)."""
        arrivals, timed = self._arrivals, self._timed
        cut = -math.inf
        if self.newest_arrival is None:
            return cut
        oldest_allowed = self.newest_arrival - self.max_hold_ms
        while arrivals and (arrivals[0][1] not in timed or arrivals[0][0] < oldest_allowed):
            _, seq, ts = heapq.heappop(arrivals)
            if seq in timed and ts > cut:
                cut = ts  # held too long: it and everything older in event time go now
        return cut

    def _pop(self) -> AlertItem:
        _, seq, item = heapq.heappop(self._heap)
        self._timed.discard(seq)
        return item

    def drain(self) -> Iterator[AlertItem]:
        """Every held alert, oldest first (end of input)."""
        while self._heap:
            yield self._pop()
        self._arrivals.clear()

    # -- checkpoints -------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        """JSON-ready state; the held alerts keep their order."""
        return {
            "seq": self._seq,
            "newest_arrival": self.newest_arrival,
            "sources": {
                k: [s.watermark if math.isfinite(s.watermark) else None, s.holding]
                for k, s in sorted(self.sources.items())
            },
            "held": [
                [ts, seq, item.source, item.arrived_ms, item.alert.model_dump_json()]
                for ts, seq, item in sorted(self._heap)
            ],
        }

    @classmethod
    def load(cls, data: dict[str, Any], *, max_hold_ms: int = 5_000, max_pending: int = 50_000) -> Reorder:
        """Inverse of `dump` (malformed data raises KeyError, TypeError or ValueError)."""
        newest = data["newest_arrival"]
        reorder = cls(
            max_hold_ms=max_hold_ms,
            max_pending=max_pending,
            sources={
                str(k): SourceProgress(-math.inf if w is None else float(w), bool(b))
                for k, (w, b) in data["sources"].items()
            },
            newest_arrival=None if newest is None else int(newest),
            _seq=int(data["seq"]),
        )
        for ts, seq, source, arrived, alert in data["held"]:
            if not math.isfinite(float(ts)):
                raise ValueError(f"held alert at {ts!r}")
            item = AlertItem(
                Alert.model_validate_json(alert),
                int(arrived) if arrived is not None else None,
                source=None if source is None else str(source),
            )
            reorder._heap.append((float(ts), int(seq), item))
            if item.arrived_ms is not None:
                reorder._arrivals.append((item.arrived_ms, int(seq), float(ts)))
                reorder._timed.add(int(seq))
        heapq.heapify(reorder._heap)
        heapq.heapify(reorder._arrivals)
        return reorder
