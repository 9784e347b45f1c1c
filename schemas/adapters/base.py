"""The adapter contract: raw bytes of one record -> alerts, or a typed error."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from types import MappingProxyType
from typing import Final, Protocol, final

from schemas.epoch import utc_datetime
from schemas.errors import BadTimestamp, DecodeError, InvalidInput, RecordTooLarge
from schemas.models import Alert

__all__ = [
    "ParseContext",
    "Rejected",
    "Parsed",
    "Adapter",
    "MAX_RECORD_BYTES",
    "epoch_to_datetime",
    "check_time",
    "decode_text",
]

MAX_RECORD_BYTES: Final = 1024 * 1024
# `Final`: compiled, a C static instead of a lookup in the module's dict
_NO_OPTIONS: Final[Mapping[str, str]] = MappingProxyType({})
_LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
_LATEST_EPOCH: Final = _LATEST.timestamp()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@final
class ParseContext:
    """What an adapter may know besides the bytes.

    `record_id` is the fallback id (`<file>:<line>` or `<topic>:<partition>:<offset>`);
    `transport_time` is the Kafka record timestamp or the previous record's time in a file
    (RFC 3164 syslog takes its year from it); `default_tz` is `SOCNOC_DEFAULT_TZ`.
    Never changed once made, but for `transport_time` given as `transport_ms` (epoch ms, as
    Kafka has it): made into a datetime only if an adapter asks (only syslog does; making one
    a record was ~3% of the worker). One is made per record: a plain class, which compiled
    costs ~20 ns to make, where a named tuple took ~150 and a dataclass 120-400.
    """

    __slots__ = ("record_id", "_transport_time", "_transport_ms", "default_tz", "max_bytes", "options")

    def __init__(
        self,
        record_id: str,
        transport_time: datetime | None = None,
        default_tz: tzinfo = UTC,
        max_bytes: int = MAX_RECORD_BYTES,
        options: Mapping[str, str] = _NO_OPTIONS,
        transport_ms: int | None = None,
    ) -> None:
        self.record_id: Final = record_id
        self._transport_time = transport_time
        self._transport_ms = transport_ms
        self.default_tz: Final = default_tz
        self.max_bytes: Final = max_bytes
        self.options: Final = options

    @property
    def transport_time(self) -> datetime | None:
        if self._transport_time is None and self._transport_ms is not None:
            self._transport_time = utc_datetime(self._transport_ms / 1000)
        return self._transport_time

    def __repr__(self) -> str:
        return (
            f"ParseContext(record_id={self.record_id!r}, transport_time={self.transport_time!r}, "
            f"default_tz={self.default_tz!r}, max_bytes={self.max_bytes!r})"
        )


@dataclass(frozen=True)
class Rejected:
    """One alert of a multi-alert record that is invalid (e.g. webhook entry 3 of 5)."""

    alert_id: str
    error: InvalidInput


Parsed = list[Alert | Rejected]


class Adapter(Protocol):
    """One source format."""

    name: str

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        """Alerts of one record; raises an `InvalidInput` subclass if the record is unusable."""
        ...


def check_size(raw: bytes, ctx: ParseContext) -> None:
    """Reject records over the size limit before decoding them."""
    if len(raw) > ctx.max_bytes:
        raise RecordTooLarge(f"record of {len(raw)} bytes exceeds the {ctx.max_bytes}-byte limit")


def decode_text(raw: bytes, ctx: ParseContext) -> str:
    """UTF-8 text of a record, size-checked."""
    check_size(raw, ctx)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8 at byte {exc.start}") from None


def check_time(value: datetime) -> datetime:
    """A tz-aware event time in UTC, or BadTimestamp if absurd (before 1970 or after 2100)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise BadTimestamp("timestamp has no time zone")
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise BadTimestamp(f"timestamp {value.isoformat()} is out of range") from None
    if value >= _LATEST:
        raise BadTimestamp(f"timestamp {value.isoformat()} is after 2100")
    if value < _EPOCH:
        raise BadTimestamp(f"timestamp {value.isoformat()} is before 1970 (negative epoch)")
    return value


@final
class _LastEpoch:
    """The last epoch value `epoch_to_datetime` accepted, with its datetime (one tuple, set
    at once: a reader in another thread sees a pair that belongs together). Alerts come in
    bursts of the same second (86% of the benchmark's JSON records repeat the previous
    record's), and a datetime with a zone takes ~4,000 instructions to make; the CSV adapters
    keep theirs the same way (`AitAdsAdapter._time_of`)."""

    __slots__ = ("pair",)

    def __init__(self) -> None:
        self.pair: tuple[float | int, datetime] = (0, _EPOCH)


_LAST_EPOCH: Final = _LastEpoch()


def epoch_to_datetime(value: float | int) -> datetime:
    """Epoch seconds -> UTC datetime; absurd values (not finite, negative, > 2100) raise."""
    last = _LAST_EPOCH.pair
    if value == last[0]:  # (nan equals nothing; True is 1, whose datetime it gets anyway)
        return last[1]
    # `| int`: compiled, a `float` parameter refuses an int too large for a float with a TypeError
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise BadTimestamp(f"timestamp {value!r:.40} is not finite")
    if value < 0:
        raise BadTimestamp(f"timestamp {value!r:.40} is negative")
    if value >= _LATEST_EPOCH:
        raise BadTimestamp(f"timestamp {value!r:.40} is after 2100")
    moment = utc_datetime(value)
    _LAST_EPOCH.pair = (value, moment)
    return moment


AdapterFactory = Callable[[dict[str, str]], Adapter]
