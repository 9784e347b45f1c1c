"""Property tests of the pure engine on random alert streams and context.

Whatever the order, lateness, duplicates and context: every distinct alert id gets exactly
one decision (on arrival, on a watermark or at flush), never two; each incident has one
`opened` event, first, and strictly increasing versions; the same input gives the same
output. `FUZZ_EXAMPLES` sets the number of streams (`make fuzz` runs 100k).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlators.config import EngineConfig
from correlators.engine import Engine
from correlators.types import Output
from schemas.context import Asset, Change, ChangeKind, Feedback, FeedbackKind, Link, LinkKind
from schemas.models import Alert, Decision, Disposition, Domain, IncidentEvent, LifecycleEvent, Severity, Status
from schemas.rules import (
    AnyRule,
    DistinctRule,
    Match,
    RuleKind,
    SequenceRule,
    SeverityRule,
    SuppressRule,
    ThresholdRule,
    default_rules,
)

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
T0 = datetime(2024, 3, 1, tzinfo=UTC)
ASSETS = ("web-1", "WEB-1", "db-1", "sw-1", "sw-2", "10.0.0.5", "web-1.corp.example")
SIGNATURES = ("ssh-fail", "web-attack", "new-process", "if-down", "cpu-high", "disk-full")
SOURCES = ("ids", "edr", "waf", "zabbix", "prometheus")
SRC_IPS = (None, None, "198.51.100.7", "203.0.113.9")
TACTICS = ((), (), ("initial-access",), ("execution", "persistence"), ("discovery",))


# -- operations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    alert: Alert


@dataclass(frozen=True)
class Invalid:
    alert_id: str


@dataclass(frozen=True)
class Watermark:
    time: datetime


@dataclass(frozen=True)
class Context:
    item: Asset | Change | Feedback


Op = Push | Invalid | Watermark | Context


@st.composite
def alerts(draw: st.DrawFn, clock: datetime) -> Alert:
    # Mostly near the clock, some out of order, some far behind it (late), a few ahead.
    jitter = draw(
        st.one_of(
            st.integers(-120, 120),
            st.integers(-20 * 60, 0),
            st.integers(-6 * 3600, -3600),
            st.sampled_from([0, 1, -1]),
        )
    )
    return Alert(
        id=f"a{draw(st.integers(0, 60))}",  # a small id space: redeliveries with any content
        source=draw(st.sampled_from(SOURCES)),
        domain=draw(st.sampled_from(Domain)),
        time=clock + timedelta(seconds=jitter),
        asset=draw(st.sampled_from(ASSETS)),
        hostname=draw(st.sampled_from((None, None, "web-1.corp.example", "db-1"))),
        src_ip=draw(st.sampled_from(SRC_IPS)),
        signature=draw(st.sampled_from(SIGNATURES)),
        title=draw(st.sampled_from(("", "login failed", "link down"))),
        severity=draw(st.sampled_from(Severity)),
        status=draw(st.sampled_from((Status.FIRING, Status.FIRING, Status.RESOLVED))),
        tactics=draw(st.sampled_from(TACTICS)),
    )


def windows(draw: st.DrawFn) -> tuple[datetime, datetime]:
    start = T0 + timedelta(minutes=draw(st.integers(-60, 48 * 60)))
    return start, start + timedelta(minutes=draw(st.integers(1, 600)))


@st.composite
def changes(draw: st.DrawFn) -> Change:
    kind = draw(st.sampled_from(ChangeKind))
    start, end = windows(draw)
    source = draw(st.sampled_from(SRC_IPS[2:])) if kind is ChangeKind.SCAN and draw(st.booleans()) else None
    assets = tuple(draw(st.lists(st.sampled_from(ASSETS), max_size=2, unique=True)))
    if not assets and source is None:
        assets = (ASSETS[0],)
    return Change(id=f"c{draw(st.integers(0, 5))}", assets=assets, start=start, end=end, kind=kind, source=source)


@st.composite
def feedback(draw: st.DrawFn) -> Feedback:
    kind = draw(st.sampled_from(FeedbackKind))
    start, end = windows(draw)
    return Feedback(
        id=f"f{draw(st.integers(0, 5))}",
        kind=kind,
        time=start,
        expires_at=draw(st.sampled_from((None, end))),
        asset=draw(st.sampled_from(ASSETS)) if kind is not FeedbackKind.ACK else None,
        signature=draw(st.sampled_from((None, *SIGNATURES))),
        incident_id="INC-x" if kind is FeedbackKind.ACK else None,
        analyst=draw(st.sampled_from((None, "ana"))),
    )


@st.composite
def inventory(draw: st.DrawFn) -> Asset:
    ident = draw(st.sampled_from(("web-1", "db-1", "sw-1", "sw-2")))
    others = [a for a in ("web-1", "db-1", "sw-1", "sw-2") if a != ident]
    links = draw(
        st.lists(st.builds(Link, to=st.sampled_from(others), kind=st.sampled_from(LinkKind)), max_size=2)
    )
    return Asset(
        id=ident,
        aliases=tuple(draw(st.lists(st.sampled_from(("WEB-1", "10.0.0.5", f"{ident}.corp.example")), max_size=2))),
        criticality=draw(st.integers(1, 5)),
        links=tuple(links),
    )


matches = st.builds(
    Match,
    signature=st.sampled_from((None, "*", "ssh-*", "web-attack")),
    domain=st.sampled_from((None, *Domain)),
    min_severity=st.sampled_from((None, Severity.MEDIUM)),
)
spans = st.sampled_from((timedelta(seconds=30), timedelta(minutes=5), timedelta(hours=1)))


@st.composite
def rules(draw: st.DrawFn) -> list[AnyRule]:
    out: list[AnyRule] = []
    for n, kind in enumerate(draw(st.lists(st.sampled_from(RuleKind), max_size=3))):
        rid = f"r{n}"
        if kind is RuleKind.SUPPRESS:
            out.append(SuppressRule(id=rid, type=kind, match=draw(matches), reason="known noise"))
        elif kind is RuleKind.SEVERITY:
            out.append(SeverityRule(id=rid, type=kind, match=draw(matches), severity=draw(st.sampled_from(Severity))))
        elif kind is RuleKind.THRESHOLD:
            out.append(
                ThresholdRule(
                    id=rid, type=kind, match=draw(matches), count=draw(st.integers(2, 4)), timespan=draw(spans)
                )
            )
        elif kind is RuleKind.DISTINCT:
            out.append(
                DistinctRule(
                    id=rid, type=kind, match=draw(matches), field=draw(st.sampled_from(("signature", "source"))),
                    count=2, timespan=draw(spans), group_by=draw(st.sampled_from((("asset",), ("src_ip",)))),
                )
            )
        else:
            steps = tuple(draw(st.lists(matches, min_size=2, max_size=3)))
            out.append(SequenceRule(id=rid, type=kind, steps=steps, timespan=draw(spans)))
    return out


DEFAULT_PACK: list[AnyRule] = default_rules()
CONFIGS = st.sampled_from(
    (
        EngineConfig(),
        EngineConfig(warmup=timedelta(0)),
        # tiny caps: early window closes, full windows, asset eviction, coalescing, reopening
        EngineConfig(
            warmup=timedelta(0), max_windows=2, max_pending_per_asset=3, max_assets=2,
            max_alert_ids_per_event=2, max_timeline=2, session_gap=timedelta(minutes=2),
            max_window=timedelta(minutes=5), quiet_period=timedelta(minutes=10),
            reopen_window=timedelta(minutes=30), update_interval=timedelta(0), open_threshold=4.0,
            max_idle=timedelta(hours=1), dedup_window=timedelta(minutes=1), precedence_min_lift=1.0,
        ),
        # resolved incidents forgotten (even before the reopen window ends), rule groups capped
        EngineConfig(
            warmup=timedelta(0), session_gap=timedelta(minutes=2), max_window=timedelta(minutes=5),
            quiet_period=timedelta(minutes=10), reopen_window=timedelta(minutes=30), open_threshold=4.0,
            update_interval=timedelta(0), max_assets=2, max_idle=timedelta(hours=1),
            retain_resolved=timedelta(seconds=30), max_rule_groups=1,
        ),
        EngineConfig(retain_resolved=timedelta(hours=13), max_rule_groups=2),
    )
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[EngineConfig, dict[str, Any], list[Op]]:
    setup = {
        "assets": draw(st.lists(inventory(), max_size=3)),
        "changes": draw(st.lists(changes(), max_size=2)),
        "feedback": draw(st.lists(feedback(), max_size=2)),
        # the default pack, parsed once (Engine(default_rules=True) would re-read the YAML each run)
        "rules": (DEFAULT_PACK if draw(st.booleans()) else []) + draw(rules()),
    }
    clock = T0
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 40))):
        clock += timedelta(seconds=draw(st.sampled_from((0, 5, 30, 90, 600, 3600, 86400))))
        kind = draw(st.integers(0, 19))
        if kind < 15:
            ops.append(Push(draw(alerts(clock))))
        elif kind < 16:
            ops.append(Invalid(f"a{draw(st.integers(0, 60))}"))
        elif kind < 18:
            ops.append(Watermark(clock + timedelta(seconds=draw(st.integers(-3600, 7200)))))
        else:
            item = draw(st.one_of(changes(), feedback(), inventory()))
            ops.append(Context(item))
    return draw(CONFIGS), setup, ops


# -- running and checking -----------------------------------------------------------------


# Engine(feedback=[<an ack>]) raises AttributeError, and so does Engine.restore() of a snapshot
# taken after an ack (see test_ack_feedback_at_construction); until that is fixed, the
# properties leave acks out of snapshots and pass them through on_context.
def _ack_safe() -> bool:
    try:
        Engine(feedback=[Feedback(id="f", kind=FeedbackKind.ACK, time=T0, incident_id="INC-x")])
    except AttributeError:
        return False
    return True


ACK_FIXED = _ack_safe()


def _identity_order_free() -> bool:
    """Whether alias resolution depends on the inventory only, not on the order it arrived in."""
    from correlators.identity import Identity

    probe = Alert(id="p", source="s", domain=Domain.OPS, time=T0, asset="web-1", signature="s")
    web, db = Asset(id="web-1"), Asset(id="db-1", aliases=("WEB-1",))
    if Identity([web, db, web]).resolve(probe) != Identity([web, db]).resolve(probe):
        return False
    # Two assets claim one alias; the one holding it drops it: the other must get it back.
    sw, db_now = Asset(id="sw-1", aliases=("WEB-1",)), Asset(id="db-1")
    return Identity([db, sw, db_now]).resolve(probe) == Identity([db_now, sw]).resolve(probe) == "sw-1"


def _topology_replaces_links() -> bool:
    """Whether an updated inventory entry drops the links it no longer lists."""
    from correlators.topology import Topology

    topology = Topology()
    topology.add(Asset(id="web-1", links=(Link(to="sw-2", kind=LinkKind.UPSTREAM),)))
    topology.add(Asset(id="web-1"))
    return not topology.upstream("web-1") and not topology.neighbours("sw-2")


QUIET_CONFIG = EngineConfig(
    warmup=timedelta(0), session_gap=timedelta(minutes=2), max_window=timedelta(minutes=5),
    quiet_period=timedelta(minutes=10), update_interval=timedelta(0), open_threshold=4.0,
)


def _quiet_scenario() -> list[Op]:
    """Two incidents go quiet; the first one's heap entry is stale (it got a later alert)."""
    day = T0 + timedelta(days=1)

    def push(n: int, seconds: int, asset: str, signature: str, domain: Domain, severity: Severity) -> Push:
        return Push(Alert(id=f"q{n}", source="ids", domain=domain, time=day + timedelta(seconds=seconds),
                          asset=asset, signature=signature, severity=severity))

    return [
        push(1, 100, "web-1", "ssh-fail", Domain.OPS, Severity.HIGH),
        push(2, 116, "sw-1", "ssh-fail", Domain.SECURITY, Severity.CRITICAL),
        push(3, 196, "web-1", "new-process", Domain.SECURITY, Severity.INFO),
        push(4, 86400 + 90, "web-1", "ssh-fail", Domain.SECURITY, Severity.INFO),
    ]


def _quiet_order_restores() -> bool:
    ops = _quiet_scenario()
    return dump(run(QUIET_CONFIG, {}, ops, 3)) == dump(run(QUIET_CONFIG, {}, ops, len(ops) + 1))


# A restored engine rebuilds its inventory from the current entries, in another order, so
# until identity and topology depend on the current inventory only (the two tests below), the
# restore property runs without inventory.
INVENTORY_ORDER_FREE = _identity_order_free() and _topology_replaces_links()


def run(
    config: EngineConfig, setup: dict[str, Any], ops: list[Op], restart_at: int | None = None
) -> list[list[Output]]:
    """Outputs of each call, the final flush last; `restart_at`: snapshot and restore the engine
    before that operation, as a worker does from its checkpoint after a crash."""
    setup = dict(setup)
    acks = [] if ACK_FIXED else [f for f in setup.get("feedback", ()) if f.kind is FeedbackKind.ACK]
    setup["feedback"] = [f for f in setup.get("feedback", ()) if f not in acks]
    keep_acks = ACK_FIXED or restart_at is None
    engine = Engine(config, **setup)
    for ack in acks if keep_acks else ():
        engine.on_context(ack)
    batches: list[list[Output]] = []
    for index, op in enumerate(ops):
        if index == restart_at:
            engine = Engine.restore(engine.snapshot())
        if isinstance(op, Push):
            batches.append(engine.on_alert(op.alert))
        elif isinstance(op, Invalid):
            batches.append(engine.on_invalid(op.alert_id, "unparseable"))
        elif isinstance(op, Watermark):
            batches.append(engine.advance(op.time))
        elif keep_acks or not (isinstance(op.item, Feedback) and op.item.kind is FeedbackKind.ACK):
            engine.on_context(op.item)
    batches.append(engine.flush())
    return batches


def check(ops: list[Op], batches: list[list[Output]]) -> None:
    decided: dict[str, Decision] = {}
    versions: dict[str, int] = {}
    opened: Counter[str] = Counter()
    merged: set[str] = set()
    incident_decisions: list[tuple[int, str]] = []
    for index, batch in enumerate(batches):
        for out in batch:
            if isinstance(out, Decision):
                assert out.alert_id not in decided, f"second decision: {out} after {decided[out.alert_id]}"
                decided[out.alert_id] = out
                if out.disposition is Disposition.INCIDENT:
                    assert out.incident_id is not None and out.incident_kind is not None
                    assert out.incident_id not in merged, f"{out.alert_id} decided into merged {out.incident_id}"
                    incident_decisions.append((index, out.incident_id))
                else:
                    assert out.incident_id is None
                continue
            assert isinstance(out, IncidentEvent)
            iid = out.incident_id
            assert iid not in merged, f"{out.event} of {iid} after it was merged"
            if out.event is LifecycleEvent.MERGED:
                merged.add(iid)
                assert out.merged_into is not None and out.merged_into != iid
            if out.event is LifecycleEvent.OPENED:
                opened[iid] += 1
                assert opened[iid] == 1, f"incident {iid} opened twice"
                assert iid not in versions, f"incident {iid} had events before it opened"
            else:
                assert iid in versions, f"{out.event} of {iid} before it opened"
            assert out.version > versions.get(iid, 0), f"version of {iid} went {versions.get(iid)} -> {out.version}"
            versions[iid] = out.version
    # every incident decision names an incident opened by the end of the same call
    first_open = {iid: i for i, batch in enumerate(batches) for out in batch
                  if isinstance(out, IncidentEvent) and out.event is LifecycleEvent.OPENED
                  for iid in [out.incident_id]}
    for index, iid in incident_decisions:
        assert iid in first_open and first_open[iid] <= index, f"decision into {iid}, never opened by then"
    ids = {op.alert.id for op in ops if isinstance(op, Push)} | {op.alert_id for op in ops if isinstance(op, Invalid)}
    assert set(decided) == ids, f"undecided: {sorted(ids - set(decided))}, unknown: {sorted(set(decided) - ids)}"
    invalid_first = set()
    seen: set[str] = set()
    for op in ops:
        key = op.alert.id if isinstance(op, Push) else op.alert_id if isinstance(op, Invalid) else None
        if key is not None and key not in seen:
            seen.add(key)
            if isinstance(op, Invalid):
                invalid_first.add(key)
    for alert_id, decision in decided.items():
        assert (decision.disposition is Disposition.INVALID) == (alert_id in invalid_first), decision


def dump(batches: list[list[Output]]) -> list[list[str]]:
    return [[out.model_dump_json() for out in batch] for batch in batches]


QUIET_ORDER_RESTORES = _quiet_order_restores()


@FUZZ
@given(scenario=scenarios())
def test_one_decision_per_alert_and_clean_incident_lifecycles(
    scenario: tuple[EngineConfig, dict[str, Any], list[Op]],
) -> None:
    config, setup, ops = scenario
    batches = run(config, setup, ops)
    check(ops, batches)
    assert dump(run(config, setup, ops)) == dump(batches), "same input, different output"


@FUZZ
@given(scenario=scenarios(), data=st.data())
def test_restored_snapshot_continues_exactly(scenario: tuple[EngineConfig, dict[str, Any], list[Op]],
                                            data: st.DataObject) -> None:
    """A worker restarted from a checkpoint emits what the uninterrupted engine would have."""
    config, setup, ops = scenario
    if not INVENTORY_ORDER_FREE:
        setup = {**setup, "assets": []}
        ops = [op for op in ops if not (isinstance(op, Context) and isinstance(op.item, Asset))]
    restart_at = data.draw(st.integers(0, len(ops)))
    restored, live = dump(run(config, setup, ops, restart_at)), dump(run(config, setup, ops, len(ops) + 1))
    if not QUIET_ORDER_RESTORES:  # until then, the order of events within one call may differ
        restored, live = [sorted(batch) for batch in restored], [sorted(batch) for batch in live]
    assert restored == live


# -- determinism across processes (set and dict order must not leak into the output) -----

_SCRIPT = """
import hashlib, random, sys
sys.path.insert(0, sys.argv[1])
from tests.fuzz.test_fuzz_engine import random_stream, run
h = hashlib.sha256()
for batch in run(*random_stream(random.Random(int(sys.argv[2])))):
    for out in batch:
        h.update(out.model_dump_json().encode())
print(h.hexdigest())
"""


def random_stream(rng: Any) -> tuple[EngineConfig, dict[str, Any], list[Op]]:
    """A fixed pseudo-random stream (no hypothesis) for the cross-process check."""
    assets = [
        Asset(id="sw-1", aliases=("10.0.0.5",), links=(Link(to="web-1", kind=LinkKind.UPSTREAM),)),
        Asset(id="web-1", aliases=("WEB-1", "web-1.corp.example"), links=(Link(to="db-1"),)),
        Asset(id="db-1", links=(Link(to="sw-2"),)),
    ]
    clock = T0
    ops: list[Op] = []
    for n in range(3000):
        clock += timedelta(seconds=rng.choice((0, 1, 10, 60, 300, 900)))
        ops.append(
            Push(
                Alert(
                    id=f"a{n}", source=rng.choice(SOURCES), domain=rng.choice(list(Domain)),
                    time=clock - timedelta(seconds=rng.choice((0, 0, 30, 600))), asset=rng.choice(ASSETS),
                    src_ip=rng.choice(SRC_IPS), signature=rng.choice(SIGNATURES),
                    severity=rng.choice(list(Severity)), status=rng.choice((Status.FIRING, Status.RESOLVED)),
                    tactics=rng.choice(TACTICS),
                )
            )
        )
    setup: dict[str, Any] = {"assets": assets, "default_rules": True}
    return EngineConfig(warmup=timedelta(minutes=30)), setup, ops


def test_output_does_not_depend_on_the_hash_seed() -> None:
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(ROOT), "7"], env=env, capture_output=True, text=True, timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        digests.add(proc.stdout.strip())
    assert len(digests) == 1, f"output differs with PYTHONHASHSEED: {digests}"


@pytest.mark.xfail(
    not ACK_FIXED,
    strict=True,
    reason="Engine.__init__ feeds feedback to on_context before self._incidents exists (AttributeError)",
)
def test_ack_feedback_at_construction() -> None:
    ack = Feedback(id="f1", kind=FeedbackKind.ACK, time=T0, incident_id="INC-x")
    engine = Engine(feedback=[ack])
    assert engine.flush() == []
    live = Engine()
    live.on_context(ack)
    Engine.restore(live.snapshot())  # a worker's restart after an analyst's ack


@pytest.mark.xfail(
    not _identity_order_free(),
    strict=True,
    reason="Identity: an id that is also another asset's alias resolves by arrival order, so a restored "
    "engine attributes alerts to a different asset than the live one",
)
def test_identity_does_not_depend_on_arrival_order() -> None:
    alert = Alert(id="a0", source="ids", domain=Domain.SECURITY, time=T0, asset="web-1", signature="ssh-fail")
    web, db = Asset(id="web-1"), Asset(id="db-1", aliases=("WEB-1",))
    sw, db_without_alias = Asset(id="sw-1", aliases=("WEB-1",)), Asset(id="db-1")
    for inventory in ([web, db, web], [db, sw, db_without_alias]):
        live = Engine(assets=inventory)
        restored = Engine.restore(live.snapshot())
        assert dump([live.on_alert(alert) + live.flush()]) == dump([restored.on_alert(alert) + restored.flush()])


@pytest.mark.xfail(
    not QUIET_ORDER_RESTORES,
    strict=True,
    reason="Engine._advance resolves quiet incidents in the order of stale heap entries; a restored "
    "engine (rebuilt heap) resolves them in deadline order",
)
def test_quiet_incidents_resolve_in_deadline_order_after_a_restore() -> None:
    ops = _quiet_scenario()
    assert dump(run(QUIET_CONFIG, {}, ops, 3)) == dump(run(QUIET_CONFIG, {}, ops, len(ops) + 1))


@pytest.mark.xfail(
    not _topology_replaces_links(),
    strict=True,
    reason="Topology.add keeps the links of a replaced inventory entry: a live engine keeps a removed "
    "link (and groups by it) until a restart, a restored engine drops it",
)
def test_inventory_update_drops_removed_links() -> None:
    linked = Asset(id="web-1", links=(Link(to="sw-2", kind=LinkKind.UPSTREAM),))
    live = Engine(assets=[linked])
    live.on_context(Asset(id="web-1"))  # the link was removed from the inventory
    assert not live.topology.upstream("web-1") and not live.topology.neighbours("sw-2")


def test_random_stream_is_checked_too() -> None:
    import random

    config, setup, ops = random_stream(random.Random(7))
    batches = run(config, setup, ops)
    check(ops, batches)
    assert hashlib.sha256(str(dump(batches)).encode()).hexdigest()  # non-empty, serialisable
