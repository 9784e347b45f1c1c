"""Checkpoints encode the engine's state with orjson: the same JSON as `Engine.snapshot()`.

The worker's snapshotter writes `snapshot_document()` through orjson (4-5x faster than the
standard library's `json`, which `correlators` is limited to). orjson differs from `json` on
non-string keys and non-finite floats (it writes `null` for NaN and infinities), so these
tests hold the document to plain JSON on the state every bundled dataset leaves behind, and
hold a checkpoint to restoring exactly the engine that was dumped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from correlators import state
from correlators.baseline import Baseline
from correlators.engine import Engine
from correlators.types import Earlier
from correlators.windows import Window
from schemas.context import Asset, Change, Feedback
from schemas.errors import SnapshotError
from schemas.models import Alert, Severity
from streams.correlator import new_correlator, snapshotter, worker_context
from streams.evaluate import DATASETS
from streams.replay import load_context
from streams.settings import Settings
from tests.streams.bundled import replay_bundled


def _plain(value: Any, where: str = "$") -> None:
    """Only what every JSON encoder writes alike: str keys, finite numbers."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r} is not a string"
            _plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _plain(item, f"{where}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{where}: {value} is not finite"
    else:
        assert value is None or isinstance(value, str | int | bool), f"{where}: {type(value).__name__}"


@pytest.fixture(scope="module", params=sorted(DATASETS))
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """An engine after a whole bundled dataset (state of every kind: windows, incidents,
    baselines, rule counters, topology)."""
    def checked(built: Any) -> Engine:
        assert isinstance(built, Engine)
        return built

    return replay_bundled(request.param, tmp_path_factory.mktemp(request.param), checked)


def test_the_document_is_plain_json(engine: Engine) -> None:
    _plain(engine.snapshot_document())


def test_orjson_writes_what_json_writes(engine: Engine) -> None:
    assert orjson.loads(orjson.dumps(engine.snapshot_document())) == json.loads(engine.snapshot())


def test_a_checkpoint_restores_the_engine_it_was_taken_of(engine: Engine) -> None:
    snap = snapshotter(Settings(), load_context())
    restored = snap.load(snap.dump(engine, None), None)
    assert isinstance(restored, Engine)
    assert restored.snapshot() == engine.snapshot()


def test_context_state_is_plain_json_too() -> None:
    """Inventory, change windows and feedback, which the datasets above do not carry."""
    engine = Engine(
        assets=[Asset(id="web-1", aliases=("web-1.example.org", "10.0.0.5"), criticality=4, owner="web")],
        changes=[
            Change.model_validate(
                {"id": "chg-1", "assets": ["web-1"], "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T02:00:00Z"}
            )
        ],
        feedback=[
            Feedback.model_validate(
                {"id": "fb-1", "kind": "false_positive", "signature": "scan", "time": "2026-01-01T00:00:00Z"}
            )
        ],
    )
    document = engine.snapshot_document()
    assert document["assets"] and document["changes"] and document["feedback"]
    _plain(document)
    snap = snapshotter(Settings(), load_context())
    restored = snap.load(snap.dump(engine, None), None)
    assert isinstance(restored, Engine)
    assert restored.snapshot() == engine.snapshot()


class _Keyed:
    """An engine whose document has what orjson does not encode by default.

    It wraps one: the compiled `Engine` (schemas/native.py) cannot be subclassed in Python.
    """

    def __init__(self, extra: object) -> None:
        self._engine = Engine()
        self._extra = extra

    def snapshot_document(self, memory_from: int | None = None, memo: Any = None) -> dict[str, Any]:
        return {**self._engine.snapshot_document(memory_from, memo), "extra": self._extra}

    def snapshot(self, memory_from: int | None = None) -> bytes:
        document = self.snapshot_document(memory_from)
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


class _Checkpointed:
    """An engine checkpointed every `every` alerts while a dataset is replayed through it, each
    checkpoint held to the JSON the engine's own `snapshot()` writes of the same state."""

    def __init__(self, engine: Any, every: int) -> None:
        assert isinstance(engine, Engine)
        self.engine = engine
        self.every = every
        self.snap = snapshotter(Settings(), load_context())
        self.alerts = self.checkpoints = self.encoded = self.reused = self.baselines_reused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def on_alert(self, alert: Any) -> Any:
        out = self.engine.on_alert(alert)
        self.alerts += 1
        if self.alerts % self.every == 0:
            self.check()
        return out

    def check(self) -> None:
        windows = self.engine._windows
        before = {asset: w.memo for asset, w in windows.items()}
        baselines = dict(self.engine.baseline._memo)
        dumped = self.snap.dump(self.engine, None)
        assert orjson.loads(dumped[1:]) == json.loads(self.engine.snapshot())
        self.checkpoints += 1
        for asset, w in windows.items():
            assert w.memo is not None
            if w.memo is before.get(asset):
                self.reused += 1
            else:
                self.encoded += 1
        held = self.engine.baseline._memo
        assert held.keys() == self.engine.baseline._stats.keys()
        self.baselines_reused += sum(1 for asset, value in held.items() if baselines.get(asset) is value)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_a_window_is_encoded_again_only_once_it_changed(name: str, tmp_path: Path) -> None:
    """Checkpoints keep each window's JSON until the window changes (`Window.memo`): every
    checkpoint taken along a whole dataset is still exactly the engine's state, and windows
    that stayed the same between two were not encoded again."""
    every = _EVERY.get(name, 40)
    run = replay_bundled(name, tmp_path, lambda engine: _Checkpointed(engine, every))
    run.check()  # (after the end of input: windows flushed)
    assert run.checkpoints > 20
    if name in _KEEPS:
        assert run.encoded > 0 and run.reused > 0, "no window was kept from one checkpoint to the next"
        assert run.baselines_reused > 0, "no asset's baseline was kept from one checkpoint to the next"


# Alerts between two checkpoints (the two big datasets: ~45,000 alerts each); the datasets
# where windows stay open unchanged across checkpoints (in the others, a window's asset has
# another alert before the next checkpoint, or an incident takes its alerts at once)
_EVERY = {"aitads": 250, "huawei": 2000}
_KEEPS = frozenset({"aitads"})


def test_every_change_to_a_window_drops_what_was_encoded_of_it() -> None:
    window = Window("web-1", start=0.0, last=0.0)
    alert = Alert.model_validate(
        {"id": "a-1", "source": "ids", "domain": "security", "time": "2026-01-01T00:00:00Z", "asset": "web-1",
         "signature": "scan", "tactics": ["discovery"]}
    )
    changes: list[Callable[[], None]] = [
        lambda: window.add(alert, Severity.MEDIUM, 1.0, "new"),
        lambda: window.add_tactic("execution"),
        lambda: window.add_finding("rule x", 2.0),
    ]
    for change in changes:
        window.memo = kept = object()
        change()
        assert window.memo is None and kept is not None
    assert state._window(window)["findings"] == [["rule x", 2.0]]


def test_a_baseline_is_encoded_again_only_once_its_asset_changed() -> None:
    baseline = Baseline(3600.0, 5.0)
    for asset in ("web-1", "web-2", "db-1"):
        baseline.observe(asset, "scan", 100.0)
    made: list[str] = []

    def memo(data: dict[str, Any]) -> object:
        made.append(orjson.dumps(data).decode())
        return orjson.Fragment(made[-1].encode())

    first = baseline.export_memo(memo)
    assert len(made) == 3 and orjson.loads(orjson.dumps(first)) == baseline.export()
    baseline.observe("web-2", "login", 200.0)
    baseline.forget_asset("db-1")
    second = baseline.export_memo(memo)
    assert len(made) == 4 and second["web-1"] is first["web-1"] and second["web-2"] is not first["web-2"]
    assert orjson.loads(orjson.dumps(second)) == baseline.export() and "db-1" not in second
    baseline.load(baseline.export())  # a state replaced: nothing kept
    baseline.export_memo(memo)
    assert len(made) == 6


def test_non_string_keys_are_written_as_json_writes_them() -> None:
    snap = snapshotter(Settings(), load_context())
    engine = _Keyed({1: "one", 2.5: "two and a half", None: "nothing"})
    assert orjson.loads(snap.dump(engine, None)[1:]) == json.loads(engine.snapshot())


def test_what_orjson_cannot_encode_falls_back_to_json(caplog: pytest.LogCaptureFixture) -> None:
    snap = snapshotter(Settings(), load_context())
    engine = _Keyed(10**30)  # past 64 bits: orjson refuses, json writes it
    assert snap.dump(engine, None)[1:] == engine.snapshot()
    assert "fell back to the standard JSON encoder" in caplog.text


def test_a_restarted_worker_restores_checkpoints_with_its_own_settings() -> None:
    """Settings changed between two runs reach the partitions restored from checkpoints."""
    before = Settings(reopen_window=timedelta(hours=2), update_interval=timedelta(seconds=30))
    old = snapshotter(before, worker_context(before))
    engine = new_correlator(before, worker_context(before))
    assert isinstance(engine, Engine) and engine.cfg.reopen_window == timedelta(hours=2)
    blob = old.dump(engine, None)

    after = Settings(reopen_window=timedelta(hours=12), update_interval=timedelta(minutes=2), redelivery_memory=500)
    restored = snapshotter(after, worker_context(after)).load(blob, None)
    assert isinstance(restored, Engine)
    cfg = restored.cfg
    assert cfg.reopen_window == timedelta(hours=12) and cfg.update_interval == timedelta(minutes=2)
    assert cfg.max_seen_ids == 500
    assert cfg.retain_resolved == timedelta(hours=13)  # derived from the reopen window
    assert cfg == worker_context(after).config


def test_the_memory_left_out_of_a_checkpoint_comes_back(engine: Engine) -> None:
    snap = snapshotter(Settings(), load_context())
    first, end = engine.memory_span()
    assert end - first > 100
    middle = (first + end) // 2
    blob = snap.dump(engine, middle)
    assert len(blob) < len(snap.dump(engine, None))
    restored = snap.load(blob, Earlier(middle, engine.memory_ids(first, middle)))
    assert isinstance(restored, Engine)
    assert restored.snapshot() == engine.snapshot()


def test_a_checkpoint_orjson_misreads_is_read_again_as_json_reads_it() -> None:
    """The worker reads checkpoints with orjson, and again with `json` when that restore fails:
    what only the fallback encoder writes (an integer past 64 bits, which orjson reads as a
    float; a NaN; a lone surrogate) restores, not passed over as corrupt."""
    huge = Asset.model_validate_json('{"id": "h1", "schema_version": 18446744073709551616}')
    engine = Engine(assets=[huge])
    with pytest.raises(TypeError):
        orjson.dumps(engine.snapshot_document())  # (so the fallback encoder writes it)
    snap = snapshotter(Settings(), load_context())
    blob = snap.dump(engine, None)
    restored = snap.load(blob, None)
    assert isinstance(restored, Engine)
    assert restored.snapshot() == engine.snapshot()
    assert restored.identity.assets()[0].schema_version == 18446744073709551616
    with pytest.raises(SnapshotError):
        snap.load(blob[:-1], None)  # corrupt either way
