"""Wire formats of the worker: the internal by-asset topic and the published records.

The internal topic carries everything a correlation partition's engine sees, in the order
it must see it: alerts, invalid inputs, context, watermark ticks and control markers. The
kind travels in the `socnoc-kind` header so that an alert's value is the plain `Alert` JSON
(without its `raw` input record: `Alert` reads it back with `raw` empty).
Published records carry `socnoc-src` (`<partition>:<offset>` of the internal record that
caused them) and `socnoc-oid` (their identity), which is how a restarted partition recognises
what it already published.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from operator import is_
from typing import Any, Final

import orjson
from pydantic import BaseModel, ValidationError

from schemas.context import Asset, Change, Feedback
from schemas.epoch import utc_datetime
from schemas.models import Alert, DeadLetter, Decision, IncidentEvent, LifecycleEvent
from schemas.rules import AnyRule, parse_rules

__all__ = [
    "Kind",
    "AlertItem",
    "InvalidItem",
    "ContextItem",
    "TickItem",
    "FlushItem",
    "RulesItem",
    "Item",
    "Encoded",
    "Emitted",
    "Local",
    "BadInternalRecord",
    "KIND_HEADER",
    "SRC_HEADER",
    "OID_HEADER",
    "ARRIVED_HEADER",
    "OWNERS_HEADER",
    "INCIDENT_KIND_HEADER",
    "EVENT_HEADER",
    "encode_item",
    "decode_item",
    "output_json",
    "identity",
    "dead_letter",
    "header",
]

KIND_HEADER = "socnoc-kind"
SRC_HEADER = "socnoc-src"
OID_HEADER = "socnoc-oid"
ARRIVED_HEADER = "socnoc-arrived-ms"
SOURCE_HEADER = "socnoc-source"
# Routing headers of every incident record, for consumers that filter instead of subscribing
# to a per-team topic: owner teams (comma-separated), incident kind, lifecycle event.
OWNERS_HEADER = "socnoc-owners"
INCIDENT_KIND_HEADER = "socnoc-incident-kind"
EVENT_HEADER = "socnoc-event"

Headers = list[tuple[str, bytes]]


class Kind(StrEnum):
    """What an internal record holds."""

    ALERT = "alert"
    INVALID = "invalid"
    ASSET = "asset"
    CHANGE = "change"
    FEEDBACK = "feedback"
    TICK = "tick"
    FLUSH = "flush"
    RULES = "rules"


# Plain classes, built per record and never changed after: compiled, one costs ~20 ns to
# make, where a dataclass's `__init__` stays interpreted (~160 ns; a frozen one ~4x that).
class AlertItem:
    """A decoded alert; `arrived_ms` is the input record's Kafka timestamp (for latency),
    `source` its input partition (`topic:partition`, see `streams.reorder`)."""

    __slots__ = ("alert", "arrived_ms", "source")

    def __init__(self, alert: Alert, arrived_ms: int | None = None, source: str | None = None) -> None:
        self.alert = alert
        self.arrived_ms = arrived_ms
        self.source = source

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AlertItem):
            return NotImplemented
        return (self.alert, self.arrived_ms, self.source) == (other.alert, other.arrived_ms, other.source)

    __hash__ = None  # type: ignore[assignment]  # (equal by value, and mutable: as a dataclass)

    def __repr__(self) -> str:
        return f"AlertItem({self.alert!r}, {self.arrived_ms!r}, {self.source!r})"


@dataclass(frozen=True, slots=True)
class InvalidItem:
    """An input that is not an alert: decided `invalid` and dead-lettered by its partition."""

    alert_id: str
    error: str
    reason: str
    raw: bytes
    topic: str
    partition: int
    offset: int
    received_at: datetime
    decide: bool = True  # False for a bad context record: dead-lettered, but not an alert


@dataclass(frozen=True, slots=True)
class ContextItem:
    """Inventory, change window or analyst verdict, broadcast to every partition."""

    item: Asset | Change | Feedback


@dataclass(frozen=True, slots=True)
class TickItem:
    """Event-time progress of one input partition (`source`), broadcast to every partition.

    `watermark` is the largest event time the source has delivered, or, when `idle`, wall
    clock minus the idle timeout (the source has been silent that long). `quiet`: the source
    has had nothing new for `SOCNOC_ORDER_WAIT`, so other sources stop waiting for it.
    `start`: a decoder has just taken the source on; until it delivers (or goes quiet) the
    other sources' alerts wait for it (`watermark` is then meaningless). `expect`: a decoder
    saw the source in its topic's metadata but another decoder owns it; if the correlating
    side has never heard of it, the other sources' alerts wait for it as for a `start`
    (its owner's first fetch may not have come yet), and otherwise nothing changes.
    """

    source: str
    watermark: float
    idle: bool = False
    quiet: bool = False
    start: bool = False
    expect: bool = False


@dataclass(frozen=True, slots=True)
class FlushItem:
    """End of input (tests and the demo): decide every waiting alert, like replay does."""


@dataclass(frozen=True, slots=True)
class RulesItem:
    """The complete rule set to correlate with from here on (start-up and hot reload)."""

    rules: tuple[AnyRule, ...]


Item = AlertItem | InvalidItem | ContextItem | TickItem | FlushItem | RulesItem
Emitted = Decision | IncidentEvent | DeadLetter


class Local:
    """An internal record this process wrote and the broker acknowledged at `offset`: the
    item it was encoded from and its value (`CorrelateStage.offer`). A plain class, like
    AlertItem (one per record)."""

    __slots__ = ("partition", "offset", "item", "value")

    def __init__(self, partition: int, offset: int, item: Item, value: bytes) -> None:
        self.partition = partition
        self.offset = offset
        self.item = item
        self.value = value

    def __repr__(self) -> str:
        return f"Local({self.partition!r}, {self.offset!r}, {self.item!r}, ...)"


class BadInternalRecord(Exception):
    """An internal-topic record socnoc cannot read (written by something else)."""


class Encoded:
    """A record ready to produce: key, value and headers. A plain class, like AlertItem (one
    per record)."""

    __slots__ = ("key", "value", "headers")

    def __init__(self, key: bytes | None, value: bytes, headers: Headers) -> None:
        self.key = key
        self.value = value
        self.headers = headers

    def __repr__(self) -> str:
        return f"Encoded({self.key!r}, {self.value[:40]!r}..., {self.headers!r})"


def _alert_json(alert: Alert) -> bytes:
    """An alert's internal value: the `Alert` JSON without `raw`, every other field in
    declaration order (orjson of the validated fields: enums as values, tuples as arrays,
    datetimes in RFC 3339, about half the cost of `model_dump_json`); `Alert.model_validate_json`
    reads it back as the alert with `raw` empty. Nothing after the decode stage reads an alert's
    input record (it stays on its input topic), and it was a third of the record (594 -> 384
    bytes on the benchmark's records): the embedded broker's costs grow with the bytes its
    partitions hold. (Leaving out the fields at their defaults too, 251 bytes, cost the worker
    more CPU than it saved.)"""
    fields = alert.__dict__.copy()
    del fields["raw"]
    return orjson.dumps(fields)


def output_json(record: Emitted) -> bytes:
    """A published record's value: the bytes of `model_dump_json()` at a third (an incident
    event) to a sixth (a decision) of its cost. orjson of the fields, every one set and in
    declaration order, nested records likewise; a UTC time as `Z`, as pydantic writes it;
    floats in the same shortest form. Held equal on every output of every bundled dataset. A
    value orjson refuses (a lone surrogate in a string) goes through pydantic."""
    try:
        if isinstance(record, IncidentEvent):
            fields = record.__dict__.copy()
            fields["timeline"] = orjson.Fragment(_TIMELINES.encode(record))
            return orjson.dumps(fields, default=_fields, option=orjson.OPT_UTC_Z)
        return orjson.dumps(record.__dict__, default=_fields, option=orjson.OPT_UTC_Z)
    except TypeError:
        return record.model_dump_json().encode()


class TimelineCache:
    """The JSON of the timelines of the incidents' last events, to encode only what is new.

    Every `updated` event repeats its incident's whole timeline (up to `max_timeline` entries:
    most of the event's bytes, and ~70% of the cost of its JSON with 74 entries), and a
    timeline only grows at its end. An event whose timeline starts with the very entry objects
    (identity, not equality: equal times in two zones write differently) of the incident's
    previous one encodes its new entries only. Resolved and merged incidents are forgotten;
    past `cap` incidents or `max_bytes` of JSON held, all are (what it holds of incidents an
    engine no longer has, after a partition moved, stays bounded).
    """

    __slots__ = ("cap", "max_bytes", "_held", "_bytes")

    def __init__(self, cap: int = 4096, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.cap = cap
        self.max_bytes = max_bytes
        self._held: dict[str, tuple[tuple[Any, ...], bytes]] = {}
        self._bytes = 0

    @property
    def held_bytes(self) -> int:
        """The bytes of JSON held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._held)

    def encode(self, event: IncidentEvent) -> bytes:
        """`event.timeline` as a JSON array, as orjson writes it nested in the event."""
        timeline = event.timeline
        key = event.incident_id
        body = b""
        start = 0
        held = self._held.get(key)
        if held is not None:
            prefix, encoded = held
            if len(prefix) <= len(timeline) and all(map(is_, prefix, timeline)):
                body, start = encoded, len(prefix)
        if start < len(timeline):
            new = b",".join([orjson.dumps(e.__dict__, option=orjson.OPT_UTC_Z) for e in timeline[start:]])
            body = body + b"," + new if body else new
        if held is not None:
            self._bytes -= len(held[1])
            del self._held[key]
        if event.event is not _RESOLVED and event.event is not _MERGED:
            if len(self._held) >= self.cap or self._bytes + len(body) > self.max_bytes:
                self._held.clear()
                self._bytes = 0
            self._held[key] = (timeline, body)
            self._bytes += len(body)
        return b"[" + body + b"]"


_RESOLVED: Final = LifecycleEvent.RESOLVED
_MERGED: Final = LifecycleEvent.MERGED
_TIMELINES: Final = TimelineCache()


def _fields(value: object) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"{type(value).__name__} is not JSON")


def _kind_header(kind: Kind, extra: Headers | None = None) -> Headers:
    headers: Headers = [(KIND_HEADER, _KIND_BYTES[kind])]
    if extra:
        headers.extend(extra)
    return headers


def encode_item(item: Item, *, key: bytes | None = None) -> Encoded:
    """Internal-topic record of an item."""
    if isinstance(item, AlertItem):
        extra = [(ARRIVED_HEADER, str(item.arrived_ms).encode())] if item.arrived_ms else []
        if item.source is not None:
            extra.append((SOURCE_HEADER, item.source.encode()))
        return Encoded(key, _alert_json(item.alert), _kind_header(Kind.ALERT, extra))
    if isinstance(item, InvalidItem):
        value = orjson.dumps(
            {
                "alert_id": item.alert_id,
                "error": item.error,
                "reason": item.reason,
                "raw": base64.b64encode(item.raw).decode("ascii"),
                "topic": item.topic,
                "partition": item.partition,
                "offset": item.offset,
                "received_at": item.received_at.timestamp(),
                "decide": item.decide,
            }
        )
        return Encoded(key, value, _kind_header(Kind.INVALID))
    if isinstance(item, ContextItem):
        ctx = item.item
        kind = Kind.ASSET if isinstance(ctx, Asset) else (
            Kind.CHANGE if isinstance(ctx, Change) else Kind.FEEDBACK
        )
        return Encoded(key, ctx.model_dump_json().encode(), _kind_header(kind))
    if isinstance(item, TickItem):
        value = orjson.dumps(
            {
                "source": item.source,
                "wm": item.watermark,
                "idle": item.idle,
                "quiet": item.quiet,
                "start": item.start,
                "expect": item.expect,
            }
        )
        return Encoded(key, value, _kind_header(Kind.TICK))
    if isinstance(item, RulesItem):
        value = orjson.dumps([rule.model_dump(mode="json") for rule in item.rules])
        return Encoded(key, value, _kind_header(Kind.RULES))
    return Encoded(key, b"{}", _kind_header(Kind.FLUSH))


def header(headers: object, name: str) -> bytes | None:
    """Value of a record header (aiokafka gives a sequence of (name, bytes) pairs)."""
    if not headers:
        return None
    for key, value in headers:  # type: ignore[attr-defined]
        if key == name:
            return bytes(value) if value is not None else None
    return None


_KINDS: Final = {k.value.encode(): k for k in Kind}
# (an enum's `.value` is a property: ~0.3 µs a record on the decode stage's path)
_KIND_BYTES: Final = {k: b for b, k in _KINDS.items()}


def decode_item(value: bytes | None, headers: object) -> Item:
    """The item of an internal-topic record; `BadInternalRecord` if it is not one of ours."""
    try:
        found: dict[str, Any] = dict(headers) if headers else {}  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise BadInternalRecord("unreadable record headers") from None
    raw_kind = found.get(KIND_HEADER)
    kind = _KINDS.get(bytes(raw_kind)) if raw_kind is not None else None
    if kind is None:
        raise BadInternalRecord(f"unknown record kind {raw_kind!r}")
    if value is None:
        raise BadInternalRecord("a tombstone on the internal topic")
    try:
        if kind is Kind.ALERT:
            arrived = found.get(ARRIVED_HEADER)
            source = found.get(SOURCE_HEADER)
            return AlertItem(
                Alert.model_validate_json(value),
                int(arrived) if arrived else None,
                source=bytes(source).decode() if source is not None else None,
            )
        if kind is Kind.INVALID:
            obj = orjson.loads(value)
            return InvalidItem(
                alert_id=str(obj["alert_id"]),
                error=str(obj["error"]),
                reason=str(obj["reason"]),
                raw=base64.b64decode(obj["raw"]),
                topic=str(obj["topic"]),
                partition=int(obj["partition"]),
                offset=int(obj["offset"]),
                received_at=utc_datetime(float(obj["received_at"])),
                decide=bool(obj.get("decide", True)),
            )
        if kind is Kind.ASSET:
            return ContextItem(Asset.model_validate_json(value))
        if kind is Kind.CHANGE:
            return ContextItem(Change.model_validate_json(value))
        if kind is Kind.FEEDBACK:
            return ContextItem(Feedback.model_validate_json(value))
        if kind is Kind.TICK:
            obj = orjson.loads(value)
            return TickItem(
                str(obj["source"]),
                float(obj["wm"]),
                bool(obj.get("idle", False)),
                bool(obj.get("quiet", False)),
                bool(obj.get("start", False)),
                bool(obj.get("expect", False)),
            )
        if kind is Kind.RULES:
            return RulesItem(tuple(parse_rules(orjson.loads(value))))
        return FlushItem()
    except (ValidationError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadInternalRecord(f"unreadable {kind.value} record: {exc}") from None


def identity(record: Emitted) -> str:
    """What makes a published record the same record after a restart."""
    if isinstance(record, Decision):
        return f"d:{record.alert_id}"
    if isinstance(record, IncidentEvent):
        return f"i:{record.incident_id}:{record.version}"
    return f"q:{record.topic}:{record.partition}:{record.offset}"


def dead_letter(item: InvalidItem) -> DeadLetter:
    """The DLQ record of an invalid input (the decoder already cut a huge raw value)."""
    return DeadLetter(
        raw=base64.b64encode(item.raw).decode("ascii"),
        topic=item.topic,
        partition=item.partition,
        offset=item.offset,
        error=item.error,
        reason=item.reason,
        received_at=item.received_at,
    )
