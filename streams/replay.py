"""`socnoc replay`: files in, decisions and final incidents out, with the stream's very core.

Records are parsed by the format's adapter, sorted by (event time, argument index, line, i)
and fed to one correlator; invalid records get `invalid` decisions. Every alert must end with
exactly one decision: a missing or repeated one is a bug in the core and raises
`DecisionMismatch`. Output is deterministic: same input, same bytes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal

import orjson

from correlators.config import EngineConfig
from correlators.engine import Engine
from correlators.naive import COMPONENT_GAP, DEFAULT_GAP, GroupBy, NaiveCorrelator
from correlators.types import Correlator, Output
from schemas.adapters.base import Adapter, ParseContext, Rejected
from schemas.adapters.registry import FORMATS, adapter_for_file, read_records
from schemas.context import Asset, Change, Feedback, load_changes, load_feedback, load_inventory
from schemas.errors import ConfigError, InvalidInput, SocnocError
from schemas.models import Alert, Decision, Disposition, Incident
from schemas.rules import AnyRule, load_rules

__all__ = [
    "EngineKind",
    "Context",
    "UnusableArgument",
    "DecisionMismatch",
    "ReplayResult",
    "load_context",
    "build_engine",
    "format_options",
    "replay",
    "rfc3339",
    "reduction",
]

log = logging.getLogger(__name__)

EngineKind = Literal["socnoc", "naive"]


class UnusableArgument(SocnocError):
    """A replay argument cannot be used (missing file, unknown format, bad map or context)."""


class DecisionMismatch(RuntimeError):
    """The core gave an alert no decision, two decisions, or decided an unknown id: a bug."""


@dataclass(frozen=True)
class Context:
    """Validated context and rules handed to the engine at construction."""

    assets: tuple[Asset, ...] = ()
    changes: tuple[Change, ...] = ()
    rules: tuple[AnyRule, ...] = ()
    feedback: tuple[Feedback, ...] = ()
    default_rules: bool = True
    config: EngineConfig | None = None


def load_context(
    *,
    inventory: Path | None = None,
    changes: Path | None = None,
    rules: Sequence[Path] = (),
    feedback: Path | None = None,
    default_rules: bool = True,
) -> Context:
    """Load the context files; any problem is an `UnusableArgument` naming file and line."""
    try:
        return Context(
            assets=tuple(load_inventory(_existing(inventory))) if inventory else (),
            changes=tuple(load_changes(_existing(changes))) if changes else (),
            rules=tuple(r for path in rules for r in load_rules(_existing(path))),
            feedback=tuple(load_feedback(_existing(feedback))) if feedback else (),
            default_rules=default_rules,
        )
    except ConfigError as exc:
        raise UnusableArgument(str(exc)) from exc


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise UnusableArgument(f"{path}: no such file")
    return path


def build_engine(
    context: Context, kind: EngineKind = "socnoc", *, group_by: GroupBy = "asset"
) -> Correlator:
    """The one place where replay, evaluate and bench get their correlator.

    `socnoc` is the real engine (`correlators.engine.Engine`); `naive` the baseline, grouped
    per asset with a 15-minute gap or per topology component with a 5-minute gap.
    """
    if kind == "naive":
        gap = DEFAULT_GAP if group_by == "asset" else COMPONENT_GAP
        return NaiveCorrelator(gap=gap, group_by=group_by, assets=context.assets)
    engine: Correlator = Engine(
        context.config,
        assets=list(context.assets),
        changes=list(context.changes),
        rules=list(context.rules),
        feedback=list(context.feedback),
        default_rules=context.default_rules,
    )
    return engine


def format_options(fmt: str, map_spec: str | None) -> dict[str, str]:
    """Adapter options for a format; an unknown format is an UnusableArgument."""
    if fmt not in FORMATS:
        raise UnusableArgument(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    return {"map": map_spec} if map_spec is not None else {}


def _adapters(paths: Sequence[Path], fmt: str, options: dict[str, str]) -> list[Adapter]:
    """One adapter per file (a CSV's header is its own); bad options are UnusableArgument."""
    adapters: list[Adapter] = []
    named: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise UnusableArgument(f"{path}: no such file")
        first = named.setdefault(path.name, path)
        if len(named) < len(adapters) + 1:
            # ids without a native one are `<file name>:<line>`: the second file's alerts
            # would pass for redeliveries of the first's and get no decision
            same = first.resolve() == path.resolve()
            raise UnusableArgument(
                f"{path}: given twice" if same else f"{first} and {path} have the same file name, and alert "
                f"ids are `<file name>:<line>`: their alerts would collide; rename one or replay them apart"
            )
        try:
            adapters.append(adapter_for_file(path, fmt, options))
        except SocnocError as exc:
            raise UnusableArgument(str(exc)) from exc
        except OSError as exc:
            raise UnusableArgument(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return adapters


@dataclass
class ReplayResult:
    """What a replay did, for the summary and for callers (evaluate, tests)."""

    records: int = 0
    alerts: int = 0
    repeated_ids: int = 0
    adapter_errors: int = 0
    dispositions: Counter[str] = field(default_factory=Counter)
    incident_kinds: Counter[str] = field(default_factory=Counter)
    incidents: int = 0
    engine: str = ""
    out: Path = Path()

    @property
    def reduction(self) -> float | None:
        """1 - incidents / valid alerts (None without valid alerts)."""
        valid = self.alerts - self.dispositions[Disposition.INVALID.value]
        return reduction(self.incidents, valid)

    def summary(self) -> str:
        """A few human-readable lines for stdout."""
        disp = ", ".join(f"{d.value} {self.dispositions[d.value]}" for d in Disposition)
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.incident_kinds.items())) or "none"
        red = "n/a" if self.reduction is None else f"{self.reduction:.4f}"
        lines = [
            f"engine: {self.engine}",
            f"records: {self.records}, alerts: {self.alerts}",
            f"decisions: {disp}",
            f"incidents: {self.incidents} ({kinds})",
            f"reduction: {red} (1 - incidents / valid alerts)",
        ]
        if self.repeated_ids:
            lines.append(
                f"repeated alert ids (redeliveries, not decided again): {self.repeated_ids}"
            )
        if self.adapter_errors:
            lines.append(f"adapter errors (bugs, decided invalid): {self.adapter_errors}")
        lines.append(f"wrote {self.out / 'decisions.jsonl'} and {self.out / 'incidents.jsonl'}")
        return "\n".join(lines)


def reduction(incidents: int, alerts: int) -> float | None:
    """DESIGN.md: 1 - distinct incidents / alerts."""
    return None if alerts <= 0 else 1.0 - incidents / alerts


def rfc3339(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z` suffix, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class _Pending:
    time: datetime
    arg: int
    line: int
    index: int
    alert: Alert


def replay(
    paths: Sequence[Path],
    fmt: str,
    engine: Correlator,
    out: Path,
    *,
    options: dict[str, str] | None = None,
    default_tz: tzinfo = UTC,
    engine_name: str = "",
) -> ReplayResult:
    """Run the records of `paths` through `engine`; write decisions and incidents to `out`.

    `options` are the adapter's (`{"map": SPEC}`); every unusable argument is reported as
    `UnusableArgument` before anything is written.
    """
    adapters = _adapters(paths, fmt, options or {})
    if out.exists() and not out.is_dir():
        raise UnusableArgument(f"{out}: exists and is not a directory")
    result = ReplayResult(engine=engine_name or type(engine).__name__, out=out)
    order: list[str] = []  # alert ids in input order (argument, line, i)
    expected: set[str] = set()
    invalid: list[tuple[str, str]] = []
    pending: list[_Pending] = []

    def slot(alert_id: str) -> bool:
        if alert_id in expected:
            result.repeated_ids += 1
            log.warning("alert id %s seen again: a redelivery, not decided twice", alert_id)
            return False
        expected.add(alert_id)
        order.append(alert_id)
        return True

    for arg, (path, adapter) in enumerate(zip(paths, adapters, strict=True)):
        previous: datetime | None = None
        try:
            records = iter(read_records(path, fmt))
            for record in records:
                result.records += 1
                ctx = ParseContext(
                    record_id=record.record_id, transport_time=previous, default_tz=default_tz
                )
                try:
                    parsed = adapter.parse(record.raw, ctx)
                except InvalidInput as exc:
                    parsed = [Rejected(record.record_id, exc)]
                except Exception as exc:  # an adapter bug must not stop replay
                    result.adapter_errors += 1
                    log.error("adapter %s failed on %s: %r", fmt, record.record_id, exc)
                    parsed = [Rejected(record.record_id, InvalidInput(f"adapter error: {exc!r}"))]
                for index, item in enumerate(parsed, start=1):
                    if isinstance(item, Rejected):
                        if slot(item.alert_id):
                            invalid.append((item.alert_id, _reason(item.error)))
                    elif slot(item.id):
                        pending.append(_Pending(item.time, arg, record.line, index, item))
                        previous = item.time
        except OSError as exc:
            raise UnusableArgument(f"{path}: cannot read: {exc.strerror or exc}") from exc
    result.alerts = len(order)

    decisions: dict[str, Decision] = {}
    _run(engine, invalid, pending, expected, decisions)
    del pending
    missing = [alert_id for alert_id in order if alert_id not in decisions]
    if missing:
        raise DecisionMismatch(
            f"{len(missing)} alerts got no decision from {result.engine} (first: {missing[:5]})"
        )
    incidents = engine.incidents()
    _write(out, order, decisions, incidents)
    for decision in decisions.values():
        result.dispositions[decision.disposition.value] += 1
    live = [i for i in incidents if i.merged_into is None]
    result.incidents = len(live)
    result.incident_kinds.update(i.kind.value for i in live)
    return result


def _reason(error: InvalidInput) -> str:
    return f"{type(error).__name__}: {error}"


def _run(
    engine: Correlator,
    invalid: list[tuple[str, str]],
    pending: list[_Pending],
    expected: set[str],
    decisions: dict[str, Decision],
) -> None:
    def collect(outputs: Iterable[Output]) -> None:
        for output in outputs:
            if not isinstance(output, Decision):
                continue  # incident events: replay writes final states only
            alert_id = output.alert_id
            if alert_id not in expected:
                raise DecisionMismatch(f"decision for an unknown alert id {alert_id!r}")
            if alert_id in decisions:
                raise DecisionMismatch(f"alert {alert_id!r} decided twice")
            decisions[alert_id] = output

    for alert_id, reason in invalid:
        collect(engine.on_invalid(alert_id, reason))
    pending.sort(key=lambda p: (p.time, p.arg, p.line, p.index))
    watermark: datetime | None = None
    for item in pending:
        if watermark is None or item.time > watermark:
            watermark = item.time
            collect(engine.advance(watermark))
        collect(engine.on_alert(item.alert))
    collect(engine.flush())


def _write(
    out: Path, order: list[str], decisions: dict[str, Decision], incidents: list[Incident]
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "decisions.jsonl").open("wb") as fh:
        for alert_id in order:
            fh.write(_dumps(_decision_record(decisions[alert_id])))
    with (out / "incidents.jsonl").open("wb") as fh:
        for incident in sorted(incidents, key=lambda i: i.incident_id):
            fh.write(_dumps(incident_record(incident)))


def _dumps(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _decision_record(d: Decision) -> dict[str, Any]:
    return {
        "alert_id": d.alert_id,
        "disposition": d.disposition.value,
        "incident_id": d.incident_id,
        "incident_kind": d.incident_kind.value if d.incident_kind else None,
        "reason": d.reason,
        "asset": d.asset,
        "time": rfc3339(d.time),
        "schema_version": d.schema_version,
    }


def incident_record(i: Incident) -> dict[str, Any]:
    """The `incidents.jsonl` line of an incident (DESIGN.md field order, UTC times)."""
    root = i.root_cause
    return {
        "incident_id": i.incident_id,
        "kind": i.kind.value,
        "assets": list(i.assets),
        "opened_at": rfc3339(i.opened_at),
        "updated_at": rfc3339(i.updated_at),
        "resolved_at": rfc3339(i.resolved_at),
        "severity": i.severity.value,
        "score": i.score,
        "alert_count": i.alert_count,
        "root_cause": {"asset": root.asset, "alert_id": root.alert_id} if root else None,
        "merged_into": i.merged_into,
        "owners": list(i.owners),
        "summary": i.summary,
        "next_step": i.next_step,
        "schema_version": i.schema_version,
    }
