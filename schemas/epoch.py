"""Event time as epoch seconds and back (compiled with the core: see schemas/native.py).

An alert's time is asked as epoch seconds at each step of the stream (the partition, the
reorder buffer, the engine, its window): `datetime.timestamp()` costs ~0.1 µs each time. The
last answer is kept for the datetime object it came from, so the steps after the first get it
for an identity check. Adapters also share one datetime between records of the same second.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, final

__all__ = ["epoch_seconds", "utc_datetime"]

# `Final`: compiled, C statics instead of lookups in the module's dict
_UTC: Final = UTC
_fromtimestamp: Final = datetime.fromtimestamp


@final
class _Last:
    """The last datetime converted, and its epoch seconds."""

    __slots__ = ("moment", "seconds")

    def __init__(self) -> None:
        self.moment: datetime | None = None
        self.seconds = 0.0


_LAST: Final = _Last()


def epoch_seconds(moment: datetime) -> float:
    """`moment.timestamp()`, from the last call's answer when `moment` is the same object.

    datetimes are immutable, so the same object always has the same answer.
    """
    last = _LAST
    if moment is last.moment:
        return last.seconds
    seconds = moment.timestamp()
    last.moment = moment
    last.seconds = seconds
    return seconds


def utc_datetime(seconds: float) -> datetime:
    """Epoch seconds -> UTC datetime (no range check: `epoch_to_datetime` is the one for input)."""
    return _fromtimestamp(seconds, _UTC)
