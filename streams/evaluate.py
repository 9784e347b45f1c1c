"""`socnoc evaluate`: replay the bundled labelled datasets with socnoc and the naive baseline.

Each dataset is replayed twice (the real engine, then `correlators.naive`) into
`OUT/<dataset>/<engine>/`, scored with the DESIGN.md formulas (`streams.scoring`, which reads
the labels from the raw files itself), printed as one table (metric | socnoc | naive baseline
| target) and written to `OUT/evaluation.json`. Nothing in the output depends on the clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from correlators.naive import GroupBy

from .replay import EngineKind, UnusableArgument, build_engine, format_options, load_context, replay
from .scoring import SCORERS, TARGETS, Metrics, load_outcome, meets

__all__ = [
    "Dataset",
    "DATASETS",
    "default_data_root",
    "evaluate_dataset",
    "score_existing",
    "format_table",
    "write_report",
]

log = logging.getLogger(__name__)
ENGINES: tuple[EngineKind, ...] = ("socnoc", "naive")


@dataclass(frozen=True)
class Dataset:
    """A bundled labelled dataset: how to replay it and where its labels are."""

    name: str
    folder: str
    files: tuple[str, ...]
    fmt: str
    labels: str
    map_spec: str | None = None
    inventory: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # scorer keyword -> file
    naive_group_by: GroupBy = "asset"


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "aitads",
            "ait-ads",
            ("russellmitchell_alerts.csv",),
            "aitads",
            "russellmitchell_alerts.csv",
        ),
        Dataset(
            "wazuh",
            "wazuh-ldsv1",
            ("ossec_spiral.json",),
            "wazuh",
            "ossec_spiral.json",
            extra={"phases": "attack_phases.json"},
        ),
        Dataset(
            "huawei",
            "huawei-25V_474N_Microwave",
            ("Alarm.csv",),
            "csv",
            "Alarm.csv",
            map_spec=(
                "time=start_timestamp,asset=device_id,signature=alarm_id,end=end_timestamp,domain:=ops"
            ),
            inventory="topology_edges.csv",
            extra={"dag": "dag_edges.csv"},
            naive_group_by="component",
        ),
        Dataset("bgl", "loghub-bgl", ("BGL_2k.log",), "bgl", "BGL_2k.log"),
    )
}

# Rows shown in the table, in order, with their labels.
ROWS: dict[str, tuple[tuple[str, str], ...]] = {
    "aitads": (
        ("alerts", "alerts"),
        ("incidents", "incidents (all kinds)"),
        ("security_incidents", "security incidents"),
        ("attack_recall", "attack recall"),
        ("benign_inclusion", "benign inclusion"),
        ("incident_precision", "incident precision"),
        ("phase_recall", "phase recall"),
        ("reduction", "reduction"),
        ("median_latency_s", "median detection latency (s)"),
    ),
    "wazuh": (
        ("alerts", "alerts"),
        ("incidents", "incidents (all kinds)"),
        ("security_incidents", "security incidents"),
        ("phases_detected", "attack phases detected"),
        ("phases_with_alerts", "attack phases with alerts"),
        ("phases", "attack phases"),
        ("outside_window_inclusion", "alerts outside phases in security incidents"),
        ("reduction", "reduction"),
    ),
    "huawei": (
        ("alerts", "alarms"),
        ("incidents", "incidents"),
        ("reduction", "reduction"),
        ("multi_alarm_incidents", "multi-alarm incidents"),
        ("incidents_without_root", "multi-alarm incidents without root cause"),
        ("causal_consistency", "causal consistency"),
    ),
    "bgl": (
        ("alerts", "alerts"),
        ("incidents", "incidents"),
        ("reduction", "reduction"),
        ("alert_lines_in_incidents", "alert-category lines in incidents"),
        ("normal_lines_in_incidents", "normal lines in incidents"),
    ),
}


def default_data_root() -> Path:
    """`examples/data` of the source checkout this package runs from."""
    return Path(__file__).resolve().parent.parent / "examples" / "data"


def evaluate_dataset(
    dataset: Dataset, data_root: Path, out: Path, engines: Sequence[EngineKind] = ENGINES
) -> dict[str, Any]:
    """Replay one dataset with each engine, score it, and return the report section."""
    folder = data_root / dataset.folder
    if not folder.is_dir():
        raise UnusableArgument(f"{folder}: dataset {dataset.name!r} not found")
    context = load_context(
        inventory=folder / dataset.inventory if dataset.inventory else None,
    )
    extra = {key: folder / name for key, name in dataset.extra.items()}
    section: dict[str, Any] = {"dataset": dataset.folder, "format": dataset.fmt}
    for kind in engines:
        engine = build_engine(context, kind, group_by=dataset.naive_group_by)
        target = out / dataset.name / kind
        started = time.perf_counter()
        result = replay(
            [folder / name for name in dataset.files],
            dataset.fmt,
            engine,
            target,
            options=format_options(dataset.fmt, dataset.map_spec),
            engine_name=f"{type(engine).__module__}.{type(engine).__qualname__}",
        )
        elapsed = time.perf_counter() - started
        log.info("%s with %s: %d alerts in %.1f s", dataset.name, kind, result.alerts, elapsed)
        section[f"{kind}_engine"] = result.engine
        section[kind] = SCORERS[dataset.name](
            load_outcome(target), folder / dataset.labels, **extra
        )
    return section


def score_existing(
    decisions: Path, labels: Path, kind: str, extra: Mapping[str, Path]
) -> dict[str, Any]:
    """Score a replay output directory against a label file (`--decisions ... --labels`)."""
    for path in (decisions / "decisions.jsonl", decisions / "incidents.jsonl", labels):
        if not path.is_file():
            raise UnusableArgument(f"{path}: no such file")
    metrics = SCORERS[kind](load_outcome(decisions), labels, **extra)
    return {"dataset": str(labels), "socnoc": metrics, "socnoc_engine": str(decisions)}


def _targets(kind: str, section: dict[str, Any]) -> None:
    targets = TARGETS.get(kind, {})
    section["targets"] = {m: f"{op} {v:g}" for m, (op, v) in targets.items()}
    socnoc: Metrics = section.get("socnoc", {})
    section["meets_target"] = {m: meets(socnoc.get(m), t) for m, t in targets.items()}


def write_report(out: Path, sections: Mapping[str, dict[str, Any]]) -> Path:
    """`OUT/evaluation.json`, sorted keys: the same runs give the same bytes."""
    for kind, section in sections.items():
        _targets(kind, section)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "evaluation.json"
    report = {"schema_version": 1, "datasets": dict(sections)}
    path.write_bytes(
        orjson.dumps(report, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
    )
    return path


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_table(sections: Mapping[str, dict[str, Any]]) -> str:
    """One table for every dataset: metric | socnoc | naive baseline | target."""
    rows: list[tuple[str, str, str, str]] = [("metric", "socnoc", "naive baseline", "target")]
    for kind, section in sections.items():
        socnoc: Metrics = section.get("socnoc", {})
        naive: Metrics = section.get("naive", {})
        targets = TARGETS.get(kind, {})
        names = list(ROWS.get(kind, ()))
        for cls in sorted(socnoc.get("latency_s", {})):
            names.append((f"latency_s.{cls}", f"  latency {cls} (s)"))
        for key, label in names:
            if key.startswith("latency_s."):
                cls = key.split(".", 1)[1]
                a, b = socnoc["latency_s"].get(cls), naive.get("latency_s", {}).get(cls, "-")
            else:
                a, b = socnoc.get(key), naive.get(key, "-") if naive else "-"
            target = f"{targets[key][0]} {targets[key][1]:g}" if key in targets else ""
            rows.append((f"{kind}: {label}", _cell(a), _cell(b), target))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)
