"""The live terminal view of `socnoc run`: incident lines as they happen, a status block with
a progress bar, and the closing summary. Formatting is pure; `Screen` does the drawing
(redrawn in place on a terminal, plain periodic lines otherwise)."""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["Tally", "Screen", "bar", "incident_line", "status_lines", "summary_lines"]

_EVENT_COLOURS = {"opened": "31", "updated": "33", "resolved": "32", "merged": "36"}


@dataclass
class Tally:
    """What the view knows, folded from the output topics."""

    total: int
    sent: int = 0
    event_time: float | None = None
    decided: set[str] = field(default_factory=set)
    dispositions: Counter[str] = field(default_factory=Counter)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0

    def decision(self, record: dict[str, Any]) -> None:
        alert_id = str(record.get("alert_id"))
        if alert_id not in self.decided:
            self.decided.add(alert_id)
            self.dispositions[str(record.get("disposition"))] += 1

    def incident(self, event: dict[str, Any]) -> bool:
        """Fold an event; False if it is an old version (a redelivery)."""
        held = self.incidents.get(event["incident_id"])
        if held is not None and held["version"] >= event["version"]:
            return False
        self.incidents[event["incident_id"]] = event
        self.events[event["event"]] += 1
        return True

    def open_incidents(self) -> int:
        return sum(
            1
            for e in self.incidents.values()
            if e.get("resolved_at") is None and not e.get("merged_into")
        )

    def kinds(self) -> Counter[str]:
        return Counter(e["kind"] for e in self.incidents.values() if not e.get("merged_into"))


def bar(done: int, total: int, width: int = 30) -> str:
    """`[#####.....]`-style progress bar."""
    frac = 0.0 if total <= 0 else min(1.0, done / total)
    full = int(round(frac * width))
    return "[" + "█" * full + "░" * (width - full) + f"] {frac * 100:5.1f}%"


def _hms(value: str | None) -> str:
    if not value:
        return "--:--:--"
    return value.replace("Z", "+00:00")[11:19]


def incident_line(event: dict[str, Any], colour: bool = False) -> str:
    """One line per incident event: when, what, which incident, where, how bad."""
    kind = event["event"]
    label = f"{kind.upper():<8}"
    if colour:
        label = f"\x1b[{_EVENT_COLOURS.get(kind, '0')}m{label}\x1b[0m"
    when = event.get("resolved_at") if kind == "resolved" else event.get("updated_at")
    assets = event.get("assets") or []
    where = assets[0] + (f" +{len(assets) - 1}" if len(assets) > 1 else "") if assets else "?"
    extra = f" -> {event['merged_into']}" if event.get("merged_into") else ""
    return (
        f"{_hms(when)}  {label} {event['kind']:<11} {event['incident_id']}{extra}  "
        f"on {where}  score {event.get('score', 0):.0f}  {event.get('severity', '?')}  "
        f"{event.get('alert_count', 0)} alerts  v{event['version']}"
    )


def status_lines(tally: Tally, width: int = 100) -> list[str]:
    """The status block: event time and progress, decisions, incidents (under 80 columns)."""
    when = (
        datetime.fromtimestamp(tally.event_time, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        if tally.event_time
        else "-"
    )
    d = tally.dispositions
    return [
        f" {when}  sent {tally.sent:,}/{tally.total:,}  decided {bar(len(tally.decided), tally.total, 20)}",
        f" incident {d['incident']:,}  noise {d['noise']:,}  duplicate {d['duplicate']:,}  "
        f"invalid {d['invalid']:,}",
        f" incidents: {tally.open_incidents()} open, {len(tally.kinds())} in all",
    ]


def summary_lines(tally: Tally, elapsed_s: float, interrupted: bool) -> list[str]:
    """The closing summary."""
    d = tally.dispositions
    decided = len(tally.decided)
    kinds = tally.kinds()
    incidents = sum(kinds.values())
    valid = decided - d["invalid"]
    reduction = 1.0 - incidents / valid if valid else 0.0
    suppressed = d["noise"] + d["duplicate"]
    lines = [
        "",
        "socnoc run: " + ("interrupted" if interrupted else "done") + f" in {elapsed_s:.1f} s",
        f"  alerts in            {tally.sent:,} sent through Kafka, {decided:,} decided",
        f"  incidents            {incidents:,}"
        + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")" if kinds else ""),
        f"  alerts in incidents  {d['incident']:,}",
        f"  noise suppressed     {suppressed:,} (noise {d['noise']:,}, duplicate "
        f"{d['duplicate']:,}), invalid {d['invalid']:,}",
        f"  reduction            {reduction:.4%} (1 - incidents / alerts)",
    ]
    for event in sorted(tally.incidents.values(), key=lambda e: e["opened_at"]):
        if event.get("merged_into"):
            continue
        lines.append(f"  - {event['incident_id']} [{event['kind']}] {event.get('summary', '')}")
    return lines


class Screen:
    """Scrolling incident lines above a status block redrawn in place (on a terminal)."""

    def __init__(self, out: TextIO | None = None, interval_s: float = 0.2) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.interval_s = interval_s if self.tty else 5.0
        self._drawn = 0
        self._last = 0.0

    def _width(self) -> int:
        return shutil.get_terminal_size((100, 24)).columns

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def line(self, text: str, tally: Tally | None = None) -> None:
        """Print a line above the status block."""
        self._clear()
        self.out.write(text + "\n")
        if tally is not None and self.tty:
            self._draw(tally)
        self.out.flush()

    def status(self, tally: Tally, force: bool = False) -> None:
        """Redraw the status block (at most every `interval_s`)."""
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        self._clear()
        self._draw(tally)
        self.out.flush()

    def _draw(self, tally: Tally) -> None:
        lines = status_lines(tally, self._width())
        if self.tty:
            width = self._width()
            self.out.write("".join(line[: width - 1] + "\n" for line in lines))
            self._drawn = len(lines)
        else:
            self.out.write(" |".join(lines) + "\n")

    def done(self) -> None:
        """Leave the last status block on screen."""
        self._drawn = 0
        self.out.flush()
