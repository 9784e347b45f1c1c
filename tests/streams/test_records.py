"""Wire formats of the worker: internal items round-trip; published records have identities."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.context import Asset, Change, ChangeKind, Feedback, FeedbackKind
from schemas.models import (
    Alert,
    DeadLetter,
    Decision,
    Disposition,
    Domain,
    IncidentEvent,
    IncidentKind,
    LifecycleEvent,
    Severity,
    Status,
    TimelineEntry,
)
from schemas.rules import Match, SuppressRule
from streams.checkpoints import Checkpoint, parse_src
from streams.evaluate import DATASETS
from streams.records import (
    AlertItem,
    BadInternalRecord,
    ContextItem,
    FlushItem,
    InvalidItem,
    Item,
    RulesItem,
    TickItem,
    TimelineCache,
    dead_letter,
    decode_item,
    encode_item,
    identity,
    output_json,
)
from tests.streams.bundled import replay_bundled

T0 = datetime(2024, 3, 1, tzinfo=UTC)
ALERT = Alert(
    id="a1", source="ids", domain=Domain.SECURITY, time=T0, asset="web", signature="s", raw="x"
)
ITEMS: list[Item] = [
    AlertItem(ALERT, 1234),
    AlertItem(ALERT),
    InvalidItem("t:0:1", "DecodeError", "DecodeError: bad", b"\x00\xff", "t", 0, 1, T0),
    InvalidItem("c:0:1", "DecodeError", "DecodeError: bad", b"", "c", 0, 1, T0, decide=False),
    ContextItem(Asset(id="web", aliases=("10.0.0.1",))),
    ContextItem(
        Change(id="c", assets=("web",), start=T0, end=datetime(2024, 3, 2, tzinfo=UTC))
    ),
    ContextItem(
        Change(
            id="s",
            kind=ChangeKind.SCAN,
            source="10.9.9.9",
            start=T0,
            end=datetime(2024, 3, 2, tzinfo=UTC),
        )
    ),
    ContextItem(Feedback(id="f", kind=FeedbackKind.FALSE_POSITIVE, time=T0, signature="s")),
    TickItem("soc.alerts:3", 1700000000.5),
    TickItem("soc.alerts:3", 1700000000.5, idle=True),
    FlushItem(),
    RulesItem((SuppressRule(id="r", type="suppress", match=Match(signature="s"), reason="why"),)),
]


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: type(i).__name__)
def test_items_round_trip(item: Item) -> None:
    encoded = encode_item(item, key=b"k")
    assert encoded.key == b"k"
    if isinstance(item, AlertItem):  # an alert comes back without its input record
        item = AlertItem(item.alert.model_copy(update={"raw": ""}), item.arrived_ms, item.source)
    assert decode_item(encoded.value, encoded.headers) == item


def test_an_internal_alert_leaves_out_its_input_record() -> None:
    value = orjson.loads(encode_item(AlertItem(ALERT)).value)
    assert "raw" not in value
    assert list(value) == [name for name in Alert.model_fields if name != "raw"]
    assert ALERT.model_copy(update={"raw": ""}) == Alert.model_validate(value)


def test_every_field_of_an_alert_but_raw_survives_the_internal_record() -> None:
    full = Alert(
        id="a2",
        source="zabbix",
        domain=Domain.OPS,
        time=T0,
        ended_at=T0 + timedelta(minutes=5),
        asset="db",
        hostname="db.example",
        ip="10.0.0.2",
        mac="00:11:22:33:44:55",
        device_id="dev-9",
        src_ip="203.0.113.7",
        signature="cpu",
        title="CPU high",
        severity=Severity.CRITICAL,
        status=Status.RESOLVED,
        tactics=("TA0040",),
        techniques=("T1496",),
        ref="41",
        fingerprint="fp",
        raw='{"eventid": "a2"}',
    )
    encoded = encode_item(AlertItem(full, 5, "noc.events:1"))
    assert set(orjson.loads(encoded.value)) == set(Alert.model_fields) - {"raw"}
    item = decode_item(encoded.value, encoded.headers)
    assert item == AlertItem(full.model_copy(update={"raw": ""}), 5, "noc.events:1")


@pytest.mark.parametrize(
    ("value", "headers"),
    [
        (b"{}", []),
        (b"{}", [("socnoc-kind", b"nonsense")]),
        (None, [("socnoc-kind", b"alert")]),
        (b"not json", [("socnoc-kind", b"alert")]),
        (b'{"source": "x"}', [("socnoc-kind", b"tick")]),
        (b"[1]", [("socnoc-kind", b"rules")]),
    ],
)
def test_foreign_records_are_reported_not_raised_at_random(value: bytes | None, headers: list) -> None:
    with pytest.raises(BadInternalRecord):
        decode_item(value, headers)


def _event() -> IncidentEvent:
    return IncidentEvent(
        incident_id="INC-1",
        kind=IncidentKind.SECURITY,
        assets=("web",),
        opened_at=T0,
        updated_at=T0,
        severity=Severity.HIGH,
        score=50,
        alert_count=1,
        event=LifecycleEvent.OPENED,
        version=3,
    )


def test_identities_name_what_a_restart_must_not_repeat() -> None:
    decision = Decision(alert_id="a1", disposition=Disposition.NOISE, reason="r")
    event = _event()
    item = ITEMS[2]
    assert isinstance(item, InvalidItem)
    letter = dead_letter(item)
    assert identity(decision) == "d:a1"
    assert identity(event) == "i:INC-1:3"
    assert identity(letter) == "q:t:0:1"
    assert isinstance(letter, DeadLetter) and base64.b64decode(letter.raw) == b"\x00\xff"
    assert letter.reason == "DecodeError: bad" and letter.error == "DecodeError"


def test_checkpoints_round_trip() -> None:
    checkpoint = Checkpoint(3, 120, {"out:0": 7}, b"\x00state", written_at=5.0)
    assert Checkpoint.decode(checkpoint.encode()) == checkpoint
    empty = Checkpoint(0, 0, {}, None)
    assert Checkpoint.decode(empty.encode()) == empty
    assert parse_src(b"3:120") == (3, 120)
    assert parse_src(b"nope") is None and parse_src(None) is None



class _Recording:
    """An engine that keeps every output it returns (decisions, incident events)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.outputs: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.engine, name)
        if name not in ("advance", "on_alert", "on_invalid", "flush"):
            return attr

        def call(*args: Any, **kwargs: Any) -> list[Any]:
            out = list(attr(*args, **kwargs))
            self.outputs.extend(out)
            return out

        return call


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_published_records_are_the_bytes_pydantic_writes(name: str, tmp_path: Path) -> None:
    engine = replay_bundled(name, tmp_path, _Recording)
    assert sum(isinstance(o, Decision) for o in engine.outputs) > 100
    assert any(isinstance(o, IncidentEvent) and o.timeline and o.root_cause for o in engine.outputs)
    for output in engine.outputs:
        assert output_json(output) == output.model_dump_json().encode(), output


def test_scores_are_written_as_pydantic_writes_floats() -> None:
    rng = random.Random(7)
    scores = [rng.uniform(0, 100) for _ in range(20_000)] + [0.0, 100.0, 1e-7, 1 / 3, 99.99999999999999, 5e-324]
    scores += [round(s, digits) for s in scores[:2000] for digits in (1, 2, 3)]
    for score in scores:
        event = _event().model_copy(update={"score": score})
        assert output_json(event) == event.model_dump_json().encode(), score


@pytest.mark.parametrize(
    "text",
    ["plain", "ünïcödé ✓ 日本", "tab\tnew\nline \"quoted\" back\\slash \x00\x1f\x7f", "lone \ud800 surrogate", ""],
)
@pytest.mark.parametrize(
    "when",
    [datetime(2022, 1, 24, 5, 50, 1, 250, tzinfo=UTC), datetime(2031, 3, 4, tzinfo=timezone(timedelta(hours=-3.5)))],
)
def test_odd_strings_and_zones_encode_as_pydantic_does(text: str, when: datetime) -> None:
    decision = Decision(
        alert_id=text or "x", disposition=Disposition.INVALID, reason=text, asset=text or None, time=when
    )
    letter = DeadLetter(raw="", topic=text, partition=2**40, offset=2**62, error="E", reason=text, received_at=when)
    for record in (decision, letter):
        try:
            expected = record.model_dump_json().encode()
        except ValueError:  # pydantic refuses it too: then so may we
            with pytest.raises(ValueError):
                output_json(record)
            continue
        assert output_json(record) == expected


def _entry(i: int, note: str = "", when: datetime = T0) -> TimelineEntry:
    return TimelineEntry(
        time=when + timedelta(seconds=i), asset="web", alert_id=f"a{i}", source="ids",
        signature=f"S{i % 3}", severity=Severity.HIGH, note=note,
    )


def test_an_incidents_timeline_is_encoded_once_and_then_only_its_new_entries() -> None:
    cache = TimelineCache()
    entries = [_entry(i) for i in range(6)]
    base = _event()

    def event(n: int, kind: LifecycleEvent = LifecycleEvent.UPDATED, timeline: Any = None) -> IncidentEvent:
        chosen = tuple(entries[:n]) if timeline is None else timeline
        return base.model_copy(update={"event": kind, "version": n, "timeline": chosen})

    for n in (1, 1, 3, 6):  # the same, then longer timelines of the same entry objects
        e = event(n)
        assert cache.encode(e) == orjson.dumps([t.model_dump(mode="json") for t in e.timeline])
        assert output_json(e) == e.model_dump_json().encode()
    assert len(cache) == 1
    # equal entries that are other objects (a restored engine's), the last one's time in another
    # zone: encoded anew (pydantic calls the two timelines equal, but their bytes differ)
    other = tuple(_entry(i) for i in range(5)) + (_entry(5, when=T0.astimezone(timezone(timedelta(hours=2)))),)
    assert other == tuple(entries)
    e = event(7, timeline=other)
    assert cache.encode(e) == orjson.dumps([t.model_dump(mode="json") for t in other])
    assert output_json(e) == e.model_dump_json().encode()
    # a shorter timeline for the same incident (not an extension of the one held)
    e = event(8, timeline=tuple(entries[:2]))
    assert cache.encode(e) == orjson.dumps([t.model_dump(mode="json") for t in entries[:2]])
    cache.encode(event(9, LifecycleEvent.RESOLVED))
    assert len(cache) == 0  # a resolved incident is forgotten (a reopened one starts anew)
    assert cache.encode(event(0)) == b"[]"


def test_the_timeline_cache_forgets_everything_past_its_caps() -> None:
    cache = TimelineCache(cap=3)
    for i in range(3):
        cache.encode(_event().model_copy(update={"incident_id": f"INC-{i}", "timeline": (_entry(i),)}))
    assert len(cache) == 3
    cache.encode(_event().model_copy(update={"incident_id": "INC-1", "timeline": (_entry(1),)}))
    assert len(cache) == 3  # one held already: replaced, not added
    cache.encode(_event().model_copy(update={"incident_id": "INC-9", "timeline": (_entry(9),)}))
    assert len(cache) == 1
    one = len(orjson.dumps([_entry(0).model_dump(mode="json")])) - 2  # an entry's JSON
    cache = TimelineCache(max_bytes=3 * one)
    entries = [_entry(i) for i in range(4)]
    for n in (1, 2, 3):  # one incident's timeline growing up to the bound
        cache.encode(_event().model_copy(update={"timeline": tuple(entries[:n])}))
    assert len(cache) == 1 and cache.held_bytes == 3 * one + 2  # (the commas)
    cache.encode(_event().model_copy(update={"incident_id": "INC-2", "timeline": (entries[3],)}))
    assert len(cache) == 1 and cache.held_bytes == one


@pytest.mark.parametrize("note", ["lone \ud800 surrogate", "ünïcödé \"q\" \x00"])
def test_a_timeline_entry_orjson_refuses_goes_through_pydantic_and_is_not_held(note: str) -> None:
    good = _entry(0)
    event = _event().model_copy(update={"event": LifecycleEvent.UPDATED, "timeline": (good, _entry(1, note))})
    try:
        expected = event.model_dump_json().encode()
    except ValueError:  # pydantic refuses it too: then so may we
        with pytest.raises(ValueError):
            output_json(event)
        expected = None
    if expected is not None:
        assert output_json(event) == expected
    # the next event of that incident, with a timeline of good entries only, is right
    after = event.model_copy(update={"version": 4, "timeline": (good,)})
    assert output_json(after) == after.model_dump_json().encode()


class _ReadBack(_Recording):
    """A recording engine that gets every alert as the correlate stage reads it back from the
    internal topic, instead of the object the adapter built."""

    def on_alert(self, alert: Alert) -> list[Any]:
        encoded = encode_item(AlertItem(alert, 1234, "t:0"))
        item = decode_item(encoded.value, encoded.headers)
        assert isinstance(item, AlertItem)
        assert item.alert == alert.model_copy(update={"raw": ""})  # all but the input record
        out: list[Any] = self.__getattr__("on_alert")(item.alert)
        return out


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_an_alert_from_memory_decides_as_the_alert_read_back(name: str, tmp_path: Path) -> None:
    """A worker correlates the alerts it decoded itself from memory (`CorrelateStage.offer`),
    and after a restart the same alerts read back from the internal topic: both give the
    same published bytes, so a restored partition regenerates exactly what went out."""
    direct = replay_bundled(name, tmp_path / "direct", _Recording)
    read_back = replay_bundled(name, tmp_path / "read-back", _ReadBack)
    assert len(direct.outputs) == len(read_back.outputs) > 100
    for ours, theirs in zip(direct.outputs, read_back.outputs, strict=True):
        assert output_json(ours) == output_json(theirs)
