"""Engine snapshots: restore mid-stream and carry on exactly as if never interrupted."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from correlators import state
from correlators.config import EngineConfig
from correlators.engine import Engine
from correlators.types import Earlier, Output
from schemas.adapters.base import ParseContext
from schemas.adapters.registry import adapter_for_file, read_records
from schemas.errors import SnapshotError
from schemas.models import Alert
from schemas.rules import default_rules

DATA = Path(__file__).resolve().parents[2] / "examples" / "data" / "ait-ads" / "russellmitchell_alerts.csv"


def _alerts(limit: int) -> list[Alert]:
    adapter = adapter_for_file(DATA, "aitads")
    out: list[Alert] = []
    for record in read_records(DATA, "aitads"):
        for item in adapter.parse(record.raw, ParseContext(record_id=record.record_id)):
            assert isinstance(item, Alert)
            out.append(item)
    # the attack day holds the interesting state (windows, incidents, campaigns)
    out.sort(key=lambda a: (a.time, a.id))
    return out[-limit:]


def _dump(outputs: list[Output]) -> list[str]:
    return [o.model_dump_json() for o in outputs]


def test_snapshot_restore_continues_identically() -> None:
    alerts = _alerts(12_000)
    cut = 6_000
    straight = Engine(rules=default_rules())
    expected: list[Output] = []
    for a in alerts:
        expected += straight.on_alert(a)
    expected += straight.flush()

    first = Engine(rules=default_rules())
    got: list[Output] = []
    for a in alerts[:cut]:
        got += first.on_alert(a)
    blob = first.snapshot()
    assert blob == Engine.restore(blob).snapshot()  # stable round trip
    second = Engine.restore(blob)
    for a in alerts[cut - 100 : cut]:  # redelivered after the checkpoint: no second decision
        assert second.on_alert(a) == []
    for a in alerts[cut:]:
        got += second.on_alert(a)
    got += second.flush()
    assert _dump(got) == _dump(expected)
    assert [i.model_dump_json() for i in second.incidents()] == [i.model_dump_json() for i in straight.incidents()]


def test_snapshot_is_plain_json() -> None:
    engine = Engine()
    for a in _alerts(500):
        engine.on_alert(a)
    blob = engine.snapshot()
    assert blob.startswith(b'{"format":1')
    assert b"pickle" not in blob


@pytest.fixture(scope="module")
def busy() -> bytes:
    engine = Engine(rules=default_rules())
    for a in _alerts(40_000)[:22_000]:  # an open incident on ten assets, windows waiting
        engine.on_alert(a)
    assert engine._incidents and engine._windows and engine._open_by_asset
    return engine.snapshot()


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda blob: blob[: len(blob) // 2],  # truncated
        lambda blob: b"",
        lambda blob: b"\x78\x9c garbage",
        lambda blob: b"[1, 2, 3]",  # JSON, not an object
        lambda blob: blob.replace(b'{"format":1', b'{"format":2', 1),  # another version
        lambda blob: _edit(blob, lambda d: d.__setitem__("stats", ["1", 2, 3, 4])),
        lambda blob: _edit(blob, lambda d: d.pop("windows")),
        lambda blob: _edit(blob, lambda d: d["config"].__setitem__("max_windows", 0)),
        lambda blob: _edit(blob, lambda d: d["config"].__setitem__("session_gap", float("nan"))),
        lambda blob: _edit(blob, lambda d: d["config"].__setitem__("baseline_half_life", 0)),  # a divisor
        lambda blob: _edit(blob, lambda d: d["incidents"][0].__setitem__("last_activity", -62_135_596_801)),
        lambda blob: _edit(blob, lambda d: d["incidents"][0].__setitem__("severity", "apocalyptic")),
        lambda blob: _edit(blob, lambda d: d["windows"][0]["pending"][0].__setitem__(0, {"id": 5})),
        lambda blob: _edit(blob, lambda d: d["open_by_asset"].__setitem__("x", "INC-missing")),  # dangling
        lambda blob: _edit(blob, lambda d: d.__setitem__("recent_assets", [["a", 1.0, "extra"]])),
    ],
)
def test_corrupt_snapshots_raise_snapshot_error_only(corrupt: Callable[[bytes], bytes], busy: bytes) -> None:
    with pytest.raises(SnapshotError):
        Engine.restore(corrupt(busy))


def test_a_snapshot_of_the_previous_version_still_loads(busy: bytes) -> None:
    """Snapshots written before the cap counters were added have four stats."""
    old = _edit(busy, lambda d: d.__setitem__("stats", d["stats"][:4]))
    engine = Engine.restore(old)
    assert engine.stats.assets_over_cap == 0 and engine.stats.alerts == json.loads(busy)["stats"][1]


def _edit(blob: bytes, change: Callable[[dict[str, Any]], object]) -> bytes:
    doc = json.loads(blob)
    change(doc)
    return json.dumps(doc).encode()



def test_waiting_alerts_keep_only_what_their_decision_needs(busy: bytes) -> None:
    """A window holds compact records, not the validated alerts (memory per active asset)."""
    engine = Engine.restore(busy)
    waiting = [p for w in engine._windows.values() for p in w.pending]
    assert waiting and not any(isinstance(p, Alert) for p in waiting)
    doc = json.loads(busy)
    for window in doc["windows"]:
        for alert, _ in window["pending"]:
            assert set(alert) == {"id", "source", "domain", "time", "asset", "signature", "status"}
            assert alert["asset"] == window["asset"]


def test_a_snapshot_with_whole_waiting_alerts_still_loads(busy: bytes) -> None:
    """Snapshots written before waiting alerts were compact hold every field of each alert."""

    def whole(doc: dict[str, Any]) -> None:
        for window in doc["windows"]:
            for alert, _ in window["pending"]:
                alert.update(schema_version=1, title="t", raw="a,b,c", ip="10.1.2.3", tactics=["discovery"])

    engine = Engine.restore(_edit(busy, whole))
    assert engine.snapshot() == busy  # the fields a waiting alert keeps, nothing else


def _first_waiting(**change: object) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["windows"][0]["pending"][0][0].update(change)


@pytest.mark.parametrize(
    "change",
    [
        _first_waiting(id=""),
        _first_waiting(source=7),
        _first_waiting(asset=""),
        _first_waiting(signature=None),
        _first_waiting(domain="finance"),
        _first_waiting(domain=["security"]),
        _first_waiting(status="smouldering"),
        _first_waiting(time="2022-01-25T10:00:00"),  # no zone: `Alert` wants an aware time
        _first_waiting(time="yesterday"),
        _first_waiting(time=None),
        _first_waiting(unknown="x"),  # (`Alert` forbids extra keys)
        _first_waiting(signature="scan\ud800"),  # a lone surrogate: `json` reads it, `Alert` refuses it
        lambda d: d["windows"][0]["pending"][0].__setitem__(1, "apocalyptic"),  # the severity
        lambda d: d["windows"][0]["pending"][0].__setitem__(1, ["high"]),
    ],
)
def test_waiting_alerts_are_read_back_as_strictly_as_alerts(
    change: Callable[[dict[str, Any]], object], busy: bytes
) -> None:
    """A restore reads a waiting alert's fields directly (validating an `Alert` each was a
    third of restoring 100,000 assets' windows), refusing what `Alert` refuses."""
    with pytest.raises(SnapshotError):
        Engine.restore(_edit(busy, change))


def test_waiting_alerts_keep_their_zone_through_a_restore(busy: bytes) -> None:
    offsets = ["2022-01-25T11:00:00.250000+01:00", "2022-01-25T04:30:00-05:30", "2022-01-25T10:00:00Z"]

    def zoned(doc: dict[str, Any]) -> None:
        for (alert, _), when in zip(doc["windows"][0]["pending"], offsets, strict=False):
            alert["time"] = when

    blob = _edit(busy, zoned)
    restored = Engine.restore(blob)
    assert json.loads(restored.snapshot()) == json.loads(blob)
    times = [p.time for p in next(iter(restored._windows.values())).pending][: len(offsets)]
    expected = [Alert.model_validate({**_ALERT, "time": when}).time for when in offsets][: len(times)]
    assert times == expected and [t.utcoffset() for t in times] == [t.utcoffset() for t in expected]


_ALERT = {"id": "a", "source": "s", "domain": "security", "asset": "h", "signature": "x"}


@pytest.mark.parametrize(
    "when",
    [
        "2022-W04-2T10:00:00+00:00",  # a week date
        "20220125T100000+0000",  # the basic form
        "2022-01-25T10+00:00",
        "2022-01-25T10:00:00+01",
        "2022-01-25T10:00:00+01:00:30",  # an offset with seconds
        "2022-01-25T10:00:00.1234567Z",
        "2022-01-25 10:00:00Z",
        "2022-01-25T24:00:00Z",
        "2022-01-32T10:00:00Z",
    ],
)
def test_a_waiting_alert_time_in_another_form_is_read_as_alert_reads_it(when: str, busy: bytes) -> None:
    """Only the form this version writes is read directly; any other goes through `Alert`,
    which decides (`datetime.fromisoformat` takes forms it refuses, and reads an offset with
    seconds that would be written back rounded)."""
    blob = _edit(busy, _first_waiting(time=when))
    try:
        expected = Alert.model_validate({**_ALERT, "time": when}).time
    except ValueError:
        with pytest.raises(SnapshotError):
            Engine.restore(blob)
        return
    got = next(iter(Engine.restore(blob)._windows.values())).pending[0].time
    assert got == expected and got.utcoffset() == expected.utcoffset()


# -- the redelivery memory, stored apart; settings of the restarting worker ------------------


def _remembering(n: int, cap: int) -> tuple[Engine, list[Alert]]:
    alerts = _alerts(n)
    engine = Engine(EngineConfig(max_seen_ids=cap), rules=default_rules())
    for a in alerts:
        engine.on_alert(a)
    return engine, alerts


def test_a_snapshot_can_leave_older_memory_out_and_get_it_back() -> None:
    engine, alerts = _remembering(3_000, cap=2_000)
    first, end = engine.memory_span()
    assert (first, end) == (1_000, 3_000)
    assert engine.memory_ids(first, end) == [a.id for a in alerts[1_000:]]
    assert engine.memory_ids(2_990, 5_000) == [a.id for a in alerts[2_990:]]
    assert engine.memory_ids(0, 1_000) == [] and engine.memory_ids(2_500, 2_400) == []

    blob = engine.snapshot(2_500)
    assert len(json.loads(blob)["seen"]) == 500  # the newest ids only
    # what the segments hold: here one reaching back past the oldest id still held
    earlier = Earlier(2_500, [a.id for a in alerts[600:2_500]])
    restored = Engine.restore(blob, earlier)
    assert restored.snapshot() == engine.snapshot()
    assert restored.memory_span() == (1_000, 3_000)
    for a in alerts[1_000:]:  # redelivered: no second decision, however old
        assert restored.on_alert(a) == []


@pytest.mark.parametrize(
    "earlier",
    [
        None,  # the segments were not read
        Earlier(2_400, ["x"] * 1_500),  # not ending where the snapshot's ids begin
        Earlier(2_500, ["x"] * 1_499),  # too few
        Earlier(2_500, [1] * 1_500),  # not ids
    ],
)
def test_a_snapshot_without_the_memory_it_left_out_does_not_load(earlier: Earlier | None) -> None:
    engine, _ = _remembering(3_000, cap=2_000)
    with pytest.raises(SnapshotError, match="seen|earlier"):
        Engine.restore(engine.snapshot(2_500), earlier)


def test_an_id_remembered_twice_is_a_corrupt_snapshot() -> None:
    engine, alerts = _remembering(3_000, cap=2_000)
    earlier = Earlier(2_500, [alerts[2_700].id] + [a.id for a in alerts[1_001:2_500]])
    with pytest.raises(SnapshotError, match="twice"):
        Engine.restore(engine.snapshot(2_500), earlier)


def test_a_snapshot_of_the_previous_version_keeps_its_whole_memory(busy: bytes) -> None:
    """Before the memory could be stored apart, `seen` was all of it, with no positions."""
    old = _edit(busy, lambda d: (d.pop("seen_total"), d.pop("seen_held")))
    engine = Engine.restore(old)
    held = len(json.loads(busy)["seen"])
    assert engine.memory_span() == (0, held)


def test_a_restore_runs_with_the_settings_it_is_given(busy: bytes) -> None:
    """A worker restarted with changed settings applies them to the partitions it restores."""
    stored = Engine.restore(busy).cfg
    assert stored.reopen_window == timedelta(hours=12)
    wanted = EngineConfig(reopen_window=timedelta(hours=2), update_interval=timedelta(minutes=5))
    engine = Engine.restore(busy, None, wanted)
    assert engine.cfg == wanted
    assert engine._reopen == 7_200 and engine._interval == 300
    assert json.loads(engine.snapshot())["config"]["reopen_window"] == 7_200


def test_settings_given_to_a_restore_are_still_checked_in_the_snapshot(busy: bytes) -> None:
    bad = _edit(busy, lambda d: d["config"].__setitem__("max_windows", 0))
    with pytest.raises(SnapshotError, match="max_windows"):
        Engine.restore(bad, None, EngineConfig())


def test_a_smaller_memory_cap_on_restore_forgets_the_oldest() -> None:
    engine, alerts = _remembering(3_000, cap=2_000)
    restored = Engine.restore(engine.snapshot(), None, EngineConfig(max_seen_ids=500))
    assert restored.memory_span() == (2_500, 3_000)
    assert restored.on_alert(alerts[2_600]) == []  # still remembered
    restored.on_alert(alerts[100])  # forgotten: decided again (as it would be after 2M more)
    assert restored.memory_span() == (2_501, 3_001)


def test_every_setting_that_may_be_none_is_known_with_its_type() -> None:
    """A snapshot's settings are read by kind; the kind of a None default cannot be read off it."""
    default = EngineConfig()
    optional = {f.name for f in fields(EngineConfig) if getattr(default, f.name) is None}
    assert optional == set(state._OPTIONAL_SETTINGS) == {"precedence_min_lift", "retain_resolved"}
    engine = Engine(EngineConfig(precedence_min_lift=2.5, retain_resolved=timedelta(hours=3)))
    restored = Engine.restore(engine.snapshot())
    assert restored.cfg.precedence_min_lift == 2.5 and restored.cfg.retain_resolved == timedelta(hours=3)


def test_a_restore_pauses_every_pace_items_and_restores_the_same(busy: bytes) -> None:
    """`pause` is where a worker's restore thread lets the event loop run: called after the
    parse and through each big collection, the state restored is the same."""
    doc = json.loads(busy)
    calls = 0

    def pause() -> None:
        nonlocal calls
        calls += 1

    parsed: list[bytes] = []

    def parse(data: bytes) -> Any:
        parsed.append(data)
        return json.loads(data)

    paced = state.load(busy, parse=parse, pause=pause)
    assert paced.snapshot() == busy == Engine.restore(busy).snapshot()
    assert parsed == [busy]
    big = ("baseline", "windows", "recent_assets", "rule_state", "incidents", "last_noise", "toggles")
    assert doc["baseline"] and doc["windows"] and doc["recent_assets"] and doc["incidents"]
    assert calls >= len(big) + 1  # once after the parse, and at the end of each collection


def test_a_big_window_list_is_paced_within_itself() -> None:
    """Pauses come every `PACE` items inside a collection, not only between collections."""
    n = 3 * state.PACE + 5
    engine = Engine()
    for i in range(n):
        engine.on_alert(
            Alert.model_validate(
                {"id": f"w{i}", "source": "ids", "domain": "security", "time": "2024-03-01T00:00:00Z",
                 "asset": f"host-{i}", "signature": "odd", "title": "odd", "severity": "low"}
            )
        )
    assert len(engine._windows) == len(engine._recent_assets) == engine.baseline.assets() == n
    blob = engine.snapshot()
    calls = 0

    def pause() -> None:
        nonlocal calls
        calls += 1

    assert state.load(blob, pause=pause).snapshot() == blob
    # every PACE items: the baseline twice (read, then loaded), the windows, the recent assets:
    # 4 x 3; and once after the parse, after the redelivery memory and at the end of each of
    # the 7 big collections (empty or not) and of the baseline's loading
    assert calls == 4 * 3 + 1 + 1 + 7 + 1
