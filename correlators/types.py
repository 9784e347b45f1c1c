"""The interface every correlator offers to the shell (replay, stream, bench)."""

from __future__ import annotations

from datetime import datetime
from typing import Final, NamedTuple, Protocol

from schemas.context import Asset, Change, Feedback
from schemas.models import Alert, Decision, Incident, IncidentEvent

# Items of a restore's big collections (windows, baselines, assets ...) between two calls of
# its `pause` (`correlators.state.load`: a worker restores in a thread, and each call lets its
# event loop run; compiled, the restore would otherwise hold the interpreter from start to end)
PACE: Final = 1024

__all__ = ["Output", "Correlator", "Earlier"]

Output = Decision | IncidentEvent


class Earlier(NamedTuple):
    """Remembered alert ids a snapshot left out: the ones just before position `end`, oldest
    first (an engine's redelivery memory, checkpointed in segments)."""

    end: int
    ids: list[str]


class Correlator(Protocol):
    """Pure, deterministic correlation: time only ever comes in as an argument."""

    def on_alert(self, alert: Alert) -> list[Output]:
        """Take one alert (in event-time order, within allowed lateness); emit what is due."""
        ...

    def on_invalid(self, alert_id: str, reason: str) -> list[Output]:
        """Record an input that could not be parsed; returns its `invalid` decision."""
        ...

    def on_context(self, item: Asset | Change | Feedback) -> None:
        """Add or replace an inventory asset, change window or analyst verdict."""
        ...

    def advance(self, watermark: datetime) -> list[Output]:
        """Move event time forward: close windows, resolve quiet incidents."""
        ...

    def flush(self) -> list[Output]:
        """End of input: decide every waiting alert (replay only)."""
        ...

    def incidents(self) -> list[Incident]:
        """Final state of every incident, ordered by incident id."""
        ...
