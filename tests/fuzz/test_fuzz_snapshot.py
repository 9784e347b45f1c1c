"""Property tests of checkpoint reading: a corrupt snapshot is a `SnapshotError`, nothing else.

A checkpoint comes back from Kafka, so it is outside data: random bytes, a truncated record,
flipped bytes, or valid JSON with a value of the wrong type anywhere in the tree must give
`SnapshotError` (so the partition can fall back to an older checkpoint), never another
exception; and whatever loads must be an engine that keeps working. Covers the engine's own
snapshot (`correlators/state.py`), the partition's envelope (`streams.partition.Processor`) and
the checkpoint record around it (`streams.checkpoints.Checkpoint`).
`FUZZ_EXAMPLES` sets the number of inputs per property (`make fuzz` runs 100k).
"""

from __future__ import annotations

import copy
import json
import os
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlators.config import EngineConfig
from correlators.engine import Engine
from schemas.context import Asset, Change, ChangeKind, Feedback, FeedbackKind, Link, LinkKind
from schemas.errors import SnapshotError
from schemas.models import Alert, Domain, Severity, Status
from schemas.rules import default_rules
from streams.checkpoints import Checkpoint, MemoryRef, decode_segment, encode_segment
from streams.partition import Processor, Snapshotter

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _alert(n: int, asset: str, sig: str, *, minutes: float, domain: Domain = Domain.SECURITY,
           severity: Severity = Severity.HIGH, status: Status = Status.FIRING) -> Alert:
    return Alert(
        id=f"a{n}",
        source="ids" if domain is Domain.SECURITY else "zabbix",
        domain=domain,
        time=T0 + timedelta(minutes=minutes),
        asset=asset,
        src_ip="198.51.100.7",
        signature=sig,
        title=sig,
        severity=severity,
        status=status,
        tactics=("initial-access",) if domain is Domain.SECURITY else (),
    )


def _busy_engine(config: EngineConfig) -> Engine:
    """An engine holding some of every kind of state: windows, incidents, rule and baseline
    state, dedup memory, flapping toggles, precedence counts, context, seen ids."""
    engine = Engine(
        config,
        assets=[
            Asset(id="web-1", aliases=("10.0.0.5",), criticality=5, owner="web",
                  links=(Link(to="sw-1", kind=LinkKind.UPSTREAM),)),
            Asset(id="sw-1", criticality=4),
        ],
        changes=[Change(id="c1", assets=("db-1",), start=T0, end=T0 + timedelta(hours=1),
                        kind=ChangeKind.MAINTENANCE)],
        feedback=[Feedback(id="f1", kind=FeedbackKind.FALSE_POSITIVE, time=T0, asset="lab-1", signature="scan")],
        rules=default_rules(),
    )
    n = 0
    for minute in range(0, 90, 3):
        for asset, sig, domain, status in (
            ("web-1", f"web-attack-{minute % 4}", Domain.SECURITY, Status.FIRING),
            ("sw-1", "if-down", Domain.OPS, Status.FIRING if minute % 6 else Status.RESOLVED),
            ("db-1", "disk-full", Domain.OPS, Status.FIRING),
            (f"host-{minute % 5}", "ssh-fail", Domain.SECURITY, Status.FIRING),
        ):
            n += 1
            engine.on_alert(_alert(n, asset, sig, minutes=minute, domain=domain, status=status,
                                   severity=Severity.MEDIUM if minute % 2 else Severity.HIGH))
    engine.on_alert(_alert(n + 1, "lone-1", "odd-thing", minutes=91, severity=Severity.LOW))
    return engine


_TINY = EngineConfig(
    warmup=timedelta(0), max_windows=2, max_pending_per_asset=3, max_assets=3, max_alert_ids_per_event=2,
    max_timeline=2, update_interval=timedelta(0), open_threshold=4.0, precedence_min_lift=1.0,
)
BASES: list[bytes] = [_busy_engine(EngineConfig()).snapshot(), _busy_engine(_TINY).snapshot()]
DOCS: list[Any] = [json.loads(b) for b in BASES]
_AFTER = [
    _alert(9000 + i, asset, sig, minutes=95 + 7 * i, domain=domain, status=status)
    for i, (asset, sig, domain, status) in enumerate(
        (
            ("web-1", "web-attack-1", Domain.SECURITY, Status.FIRING),
            ("sw-1", "if-down", Domain.OPS, Status.RESOLVED),
            ("new-1", "ssh-fail", Domain.SECURITY, Status.FIRING),
            ("db-1", "disk-full", Domain.OPS, Status.FIRING),
        )
    )
]


def _still_works(engine: Engine) -> None:
    """A loaded engine decides, ages, flushes and checkpoints again without raising."""
    for alert in _AFTER:
        engine.on_alert(alert)
    engine.advance(T0 + timedelta(days=2))
    engine.flush()
    engine.incidents()
    Engine.restore(engine.snapshot())


def _load_or_snapshot_error(data: bytes) -> None:
    try:
        engine = Engine.restore(data)
    except SnapshotError:
        return
    _still_works(engine)


def test_bases_round_trip() -> None:
    for blob in BASES:
        engine = Engine.restore(blob)
        assert engine.snapshot() == blob
        assert engine._windows and engine._incidents  # the mutations below hit real state
        _still_works(engine)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    _load_or_snapshot_error(data)


@FUZZ
@given(st.sampled_from(range(len(BASES))), st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_snapshot(base: int, at: float) -> None:
    blob = BASES[base]
    with pytest.raises(SnapshotError):
        Engine.restore(blob[: int(len(blob) * at)])


@FUZZ
@given(st.sampled_from(range(len(BASES))), st.data())
def test_flipped_bytes(base: int, data: st.DataObject) -> None:
    blob = bytearray(BASES[base])
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    _load_or_snapshot_error(bytes(blob))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


PATHS = [_paths(doc) for doc in DOCS]


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    node = doc
    for step in path[:-1]:
        node = node[step]
    return node


@FUZZ
@given(st.sampled_from(range(len(BASES))), st.data())
def test_wrong_types_anywhere(base: int, data: st.DataObject) -> None:
    """Replace, drop or retype any value of a valid snapshot's tree (a few at once)."""
    doc = copy.deepcopy(DOCS[base])
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        action = data.draw(st.sampled_from(("replace", "replace", "drop", "wrap")))
        if action == "drop":
            del parent[path[-1]]
        elif action == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        else:
            parent[path[-1]] = data.draw(json_values)
    _load_or_snapshot_error(json.dumps(doc).encode())


# -- the partition's envelope (streams/partition.py) ----------------------------------------

SNAP = Snapshotter(lambda c, f: c.snapshot(f), Engine.restore)  # type: ignore[attr-defined]
ENVELOPE = Processor(Engine.restore(BASES[0]), watermark=T0.timestamp() + 5000.0).dump(SNAP)


def _processor_or_snapshot_error(data: bytes) -> None:
    try:
        processor = Processor.load(data, SNAP)
    except SnapshotError:
        return
    engine = processor.correlator
    assert isinstance(engine, Engine)
    _still_works(engine)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=512),
        st.binary(max_size=512).map(lambda b: zlib.compress(b, 1)),
        st.tuples(st.binary(max_size=64), st.binary(max_size=256)).map(
            lambda hb: zlib.compress(len(hb[0]).to_bytes(4, "big") + hb[0] + hb[1], 1)
        ),
        st.floats(0.0, 1.0, exclude_max=True).map(lambda at: ENVELOPE[: int(len(ENVELOPE) * at)]),
    )
)
def test_partition_envelope(data: bytes) -> None:
    _processor_or_snapshot_error(data)


@FUZZ
@given(json_values, st.sampled_from(("format", "watermark", "alerts", "sources")))
def test_partition_header_wrong_types(value: Any, key: str) -> None:
    plain = zlib.decompress(ENVELOPE)
    size = int.from_bytes(plain[:4], "big")
    head = json.loads(plain[4 : 4 + size])
    head[key] = value
    raw = json.dumps(head).encode()
    _processor_or_snapshot_error(zlib.compress(len(raw).to_bytes(4, "big") + raw + plain[4 + size :], 1))


# -- the checkpoint record (streams/checkpoints.py) ------------------------------------------

RECORD = Checkpoint(
    2,
    1234,
    {"out:0": 5, "out:1": 0},
    ENVELOPE,
    written_at=1.5,
    memory=(MemoryRef(0, 64, 3), MemoryRef(64, 128, 9)),
    retired=((MemoryRef(0, 64, 1), 1.0),),
).encode()
SEGMENT_REF = MemoryRef(64, 128, 9)
SEGMENT = encode_segment(2, 64, 128, [f"alert-{i}" for i in range(64)])


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=256),
        st.floats(0.0, 1.0, exclude_max=True).map(lambda at: RECORD[: int(len(RECORD) * at)]),
        st.tuples(json_values, st.binary(max_size=32)).map(
            lambda vb: len(json.dumps(vb[0]).encode()).to_bytes(4, "big") + json.dumps(vb[0]).encode() + vb[1]
        ),
    )
)
def test_checkpoint_record(data: bytes) -> None:
    try:
        checkpoint = Checkpoint.decode(data)
    except SnapshotError:
        return
    assert isinstance(checkpoint.offset, int) and checkpoint.offset >= 0
    assert all(isinstance(v, int) for v in checkpoint.out_ends.values())


@FUZZ
@given(
    json_values,
    st.sampled_from(("format", "partition", "offset", "out_ends", "written_at", "has_state", "memory", "retired")),
)
def test_checkpoint_header_wrong_types(value: Any, key: str) -> None:
    size = int.from_bytes(RECORD[:4], "big")
    head = json.loads(RECORD[4 : 4 + size])
    head[key] = value
    raw = json.dumps(head).encode()
    try:
        Checkpoint.decode(len(raw).to_bytes(4, "big") + raw + RECORD[4 + size :])
    except SnapshotError:
        pass


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=256),
        st.floats(0.0, 1.0, exclude_max=True).map(lambda at: SEGMENT[: int(len(SEGMENT) * at)]),
        st.tuples(json_values, json_values).map(
            lambda hv: len(json.dumps(hv[0]).encode()).to_bytes(4, "big")
            + json.dumps(hv[0]).encode()
            + zlib.compress(json.dumps(hv[1]).encode(), 1)
        ),
        json_values.map(
            lambda ids: SEGMENT[: 4 + int.from_bytes(SEGMENT[:4], "big")] + zlib.compress(json.dumps(ids).encode())
        ),
    )
)
def test_memory_segment_record(data: bytes) -> None:
    try:
        ids = decode_segment(data, 2, SEGMENT_REF)
    except SnapshotError:
        return
    assert isinstance(ids, list) and len(ids) <= 64 and all(isinstance(i, str) for i in ids)
