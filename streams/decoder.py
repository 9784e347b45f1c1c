"""Decode stage, pure part: one input record -> the internal items it becomes, and where to;
and, compiled with it, the stage's per-record loops around Kafka without awaiting it:
`put_routed` (a fetch's items into the internal topic's record batches) and `written`
(the acknowledged records, with their offsets, for the hand-off).

Never raises: an input that is not an alert becomes an `InvalidItem` (decided `invalid` and
dead-lettered downstream) with the typed error's class and a reason. Alerts are keyed by
canonical asset id (the inventory's `Identity`), so one correlation partition owns an
asset's whole timeline; context is broadcast to every partition.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson
from pydantic import ValidationError

from correlators.identity import Identity
from schemas.adapters.base import Adapter, ParseContext, Rejected
from schemas.adapters.registry import get_adapter
from schemas.context import Asset, Change, Feedback
from schemas.epoch import utc_datetime
from schemas.errors import DecodeError, InvalidInput, RecordTooLarge, SocnocError
from schemas.models import Alert
from streams.kafka import BatchSender, Sent, key_partition
from streams.records import AlertItem, ContextItem, InvalidItem, Item, Local, encode_item, header
from streams.settings import InputSpec

__all__ = ["Routed", "Decoder", "FORMAT_HEADER", "BROADCAST", "put_routed", "written"]

log = logging.getLogger(__name__)

FORMAT_HEADER = "socnoc-format"  # set by the ingest gateway: which adapter reads the record
BROADCAST = -1


# Plain classes, built per record and never changed after: compiled, one costs ~20 ns to
# make, where a dataclass's `__init__` stays interpreted (~160 ns; a frozen one ~4x that).
class Routed:
    """An item and its destination: a key (hashed to a partition), a partition, or all."""

    __slots__ = ("item", "key", "broadcast", "partition")

    def __init__(self, item: Item, key: bytes | None, broadcast: bool = False, partition: int | None = None) -> None:
        self.item = item
        self.key = key
        self.broadcast = broadcast
        self.partition = partition

    def __repr__(self) -> str:
        return f"Routed({self.item!r}, {self.key!r}, broadcast={self.broadcast!r}, partition={self.partition!r})"


class InputRecord:
    """The parts of a Kafka record the decoder reads."""

    __slots__ = ("topic", "partition", "offset", "timestamp_ms", "value", "headers")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        value: bytes | None,
        headers: Any = (),
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp_ms = timestamp_ms
        self.value = value
        self.headers = headers

    def __repr__(self) -> str:
        return f"InputRecord({self.topic!r}, {self.partition!r}, {self.offset!r}, {self.timestamp_ms!r}, ...)"


class Decoder:
    """Turns input and context records into routed internal items."""

    def __init__(
        self,
        inputs: Mapping[str, InputSpec],
        *,
        context_topics: Mapping[str, type[Asset] | type[Change] | type[Feedback]],
        identity: Identity,
        default_tz: tzinfo = UTC,
        max_record_bytes: int = 1024 * 1024,
        dlq_max_raw_bytes: int = 256 * 1024,
        single_partition: bool = False,
    ) -> None:
        self._inputs = dict(inputs)
        self._context = dict(context_topics)
        self.identity = identity
        self._tz = default_tz
        self._max_bytes = max_record_bytes
        self._max_raw = dlq_max_raw_bytes
        self._single = 0 if single_partition else None
        self._adapters: dict[tuple[str, str], Adapter] = {}
        self._by_topic: dict[str, Adapter] = {}  # a topic's adapter, when no record header overrides it

    def decode(self, record: InputRecord) -> list[Routed]:
        """The routed items of one record; never raises."""
        try:
            if record.topic in self._context:
                return self._context_record(record)
            return self._alert_record(record)
        except Exception as exc:  # a bug in an adapter or here must not stop the stage
            log.exception(
                "decoding failed",
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
            )
            error = InvalidInput(f"adapter error: {exc!r}")
            decide = record.topic not in self._context
            return [self._invalid(record, _record_id(record), error, decide=decide)]

    def decode_fetched(
        self, records: list[Any], alerts: dict[tuple[str, ...], int]
    ) -> tuple[list[Routed], datetime | None]:
        """`decode` of each of one input partition's fetched records (aiokafka
        `ConsumerRecord`s), in order, in one compiled loop: the routed items; each alert
        counted in `alerts` by (source, domain) (the metrics' tally); the newest alert time."""
        out: list[Routed] = []
        latest: datetime | None = None
        for rec in records:
            record = InputRecord(rec.topic, rec.partition, rec.offset, rec.timestamp, rec.value, rec.headers)
            for entry in self.decode(record):
                item = entry.item
                if isinstance(item, AlertItem):
                    alert = item.alert
                    key = (alert.source, alert.domain)
                    alerts[key] = alerts.get(key, 0) + 1
                    if latest is None or alert.time > latest:
                        latest = alert.time
                out.append(entry)
        return out, latest

    # -- alerts --------------------------------------------------------------------------
    def _alert_record(self, record: InputRecord) -> list[Routed]:
        record_id = _record_id(record)
        value = record.value
        if value is None:
            return [self._invalid(record, record_id, DecodeError("a tombstone (null value)"))]
        if not value.strip():
            return [self._invalid(record, record_id, DecodeError("an empty value"))]
        if len(value) > self._max_bytes:
            error = RecordTooLarge(
                f"record of {len(value)} bytes exceeds the {self._max_bytes}-byte limit"
            )
            return [self._invalid(record, record_id, error)]
        try:
            adapter = self._adapter(record)
        except SocnocError as exc:  # UnknownFormat or a bad option in a format header
            return [self._invalid(record, record_id, InvalidInput(str(exc)))]
        stamp = record.timestamp_ms
        ctx = ParseContext(
            record_id=record_id,
            default_tz=self._tz,
            max_bytes=self._max_bytes,
            transport_ms=stamp if stamp is not None and stamp >= 0 else None,
        )
        try:
            parsed = adapter.parse(value, ctx)
        except InvalidInput as exc:
            return [self._invalid(record, record_id, exc)]
        out: list[Routed] = []
        for entry in parsed:
            if isinstance(entry, Rejected):
                out.append(self._invalid(record, entry.alert_id, entry.error))
            else:
                out.append(self._alert(entry, record))
        return out

    def _alert(self, alert: Alert, record: InputRecord) -> Routed:
        asset = self.identity.resolve(alert)
        item = AlertItem(alert, record.timestamp_ms, f"{record.topic}:{record.partition}")
        return Routed(item, asset.encode(), partition=self._single)

    def _adapter(self, record: InputRecord) -> Adapter:
        override = header(record.headers, FORMAT_HEADER)
        if override:
            return self._cached(override.decode("utf-8", "replace"), {})
        adapter = self._by_topic.get(record.topic)
        if adapter is None:  # once per topic (1.5 of the ~14 µs a record took when per record)
            spec = self._inputs.get(record.topic) or InputSpec()
            adapter = self._by_topic[record.topic] = self._cached(spec.format, spec.options())
        return adapter

    def _cached(self, fmt: str, options: dict[str, str]) -> Adapter:
        key = (fmt, orjson.dumps(options, option=orjson.OPT_SORT_KEYS).decode())
        adapter = self._adapters.get(key)
        if adapter is None:
            adapter = self._adapters[key] = get_adapter(fmt, options)
        return adapter

    # -- context -------------------------------------------------------------------------
    def _context_record(self, record: InputRecord) -> list[Routed]:
        model = self._context[record.topic]
        if record.value is None:
            # A tombstone on a compacted context topic: the engine keeps what it knows.
            log.info(
                "ignoring a context tombstone",
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
            )
            return []
        try:
            item = model.model_validate_json(record.value)
        except ValidationError as exc:
            error = DecodeError(f"not a valid {model.__name__}: {_first_error(exc)}")
            return [self._invalid(record, _record_id(record), error, decide=False)]
        if isinstance(item, Asset):
            self.identity.add(item)
        return [Routed(ContextItem(item), None, broadcast=True)]

    # -- invalid -------------------------------------------------------------------------
    def _invalid(
        self, record: InputRecord, alert_id: str, error: InvalidInput, *, decide: bool = True
    ) -> Routed:
        raw = record.value or b""
        reason = f"{type(error).__name__}: {error}"
        if len(raw) > self._max_raw:
            reason += f" (dead letter keeps the first {self._max_raw} of {len(raw)} bytes)"
            raw = raw[: self._max_raw]
        item = InvalidItem(
            alert_id=alert_id,
            error=type(error).__name__,
            reason=reason,
            raw=raw,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            received_at=utc_datetime((record.timestamp_ms or 0) / 1000 if (record.timestamp_ms or 0) > 0 else 0),
            decide=decide,
        )
        if not decide:  # a bad context record: no alert to key by, stay with the source
            return Routed(item, alert_id.encode(), partition=self._single or 0)
        return Routed(item, alert_id.encode(), partition=self._single)


def _record_id(record: InputRecord) -> str:
    return f"{record.topic}:{record.partition}:{record.offset}"


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "record"
    return f"{where}: {first['msg']}"


def put_routed(sender: BatchSender, topic: str, partitions: int, routed: list[Routed], start: int) -> int:
    """The internal records of `routed[start:]` into `sender`'s batches of `topic` (of
    `partitions` partitions; keyed items by their key's hash), each tagged with its item and
    value (`written`), up to the first broadcast item (left to the caller) or the first
    record that fills a batch (put; `sender.queued` is then true). The index to go on from.
    Compiled: the decode stage's per-record loop without the interpreter."""
    n = len(routed)
    i = start
    while i < n:
        entry = routed[i]
        if entry.broadcast:
            return i
        partition = entry.partition
        if partition is None:
            if entry.key is None:
                raise ValueError("a routed item needs a key, a partition or to be broadcast")
            partition = key_partition(entry.key, partitions)
        item = entry.item
        encoded = encode_item(item, key=entry.key)
        value = encoded.value
        i += 1
        if sender.put(topic, value, partition, key=encoded.key, headers=encoded.headers, tag=(item, value)):
            return i
    return n


def written(acked: list[Sent]) -> list[Local]:
    """The acknowledged internal records with their offsets, in log order per partition:
    `acked` is in the order the requests were sent, and the producer keeps a partition's
    requests in that order (partitions interleave; each one's records ascend)."""
    out: list[Local] = []
    for sent in acked:
        offset = sent.ack.result().offset
        partition = sent.partition
        for tag in sent.tags:
            item, value = tag
            out.append(Local(partition, offset, item, value))
            offset += 1
    return out
