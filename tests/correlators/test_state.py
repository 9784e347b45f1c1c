"""Engine snapshots: restore mid-stream and carry on exactly as if never interrupted."""

from __future__ import annotations

from pathlib import Path

from correlators.engine import Engine
from correlators.types import Output
from schemas.adapters.base import ParseContext
from schemas.adapters.registry import adapter_for_file, read_records
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
