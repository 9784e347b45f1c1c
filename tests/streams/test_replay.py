"""`socnoc replay` end to end on every bundled dataset: one decision per alert, same bytes."""

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli import main

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
HUAWEI = DATA / "huawei-25V_474N_Microwave"
HUAWEI_MAP = "time=start_timestamp,asset=device_id,signature=alarm_id,end=end_timestamp,domain:=ops"

DATASETS: dict[str, list[str]] = {
    "aitads": [str(DATA / "ait-ads" / "russellmitchell_alerts.csv"), "--format", "aitads"],
    "wazuh": [str(DATA / "wazuh-ldsv1" / "ossec_spiral.json"), "--format", "wazuh"],
    "huawei": [
        str(HUAWEI / "Alarm.csv"),
        "--format",
        "csv",
        "--map",
        HUAWEI_MAP,
        "--inventory",
        str(HUAWEI / "topology_edges.csv"),
    ],
    "bgl": [str(DATA / "loghub-bgl" / "BGL_2k.log"), "--format", "bgl"],
}
DECISION_KEYS = {"alert_id", "disposition", "incident_id", "incident_kind", "reason"}
INCIDENT_KEYS = {
    "incident_id",
    "kind",
    "assets",
    "opened_at",
    "updated_at",
    "resolved_at",
    "severity",
    "score",
    "alert_count",
    "root_cause",
    "merged_into",
    "owners",
    "summary",
    "next_step",
}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


def expected_ids(name: str) -> list[str]:
    """Alert ids of a bundled dataset, in input order, read without the adapters."""
    path = Path(DATASETS[name][0])
    lines = path.read_bytes().split(b"\n")
    if name == "wazuh":
        return [str(orjson.loads(line)["id"]) for line in lines if line.strip()]
    first = 2 if path.suffix == ".csv" else 1
    return [f"{path.name}:{n}" for n, line in enumerate(lines, 1) if n >= first and line.strip()]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    results: dict[str, tuple[Path, str]] = {}
    for name, args in DATASETS.items():
        out = tmp_path_factory.mktemp(name)
        code, stdout = run(["replay", *args, "--out", str(out)])
        assert code == 0, stdout
        results[name] = (out, stdout)
    return results


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("name", list(DATASETS))
def test_one_decision_per_alert_in_input_order(
    replayed: dict[str, tuple[Path, str]], name: str
) -> None:
    out, stdout = replayed[name]
    decisions = read_jsonl(out / "decisions.jsonl")
    assert [d["alert_id"] for d in decisions] == expected_ids(name)
    incidents = {i["incident_id"]: i for i in read_jsonl(out / "incidents.jsonl")}
    for d in decisions:
        assert DECISION_KEYS <= d.keys()
        assert d["disposition"] in {"incident", "noise", "duplicate", "invalid"}
        assert isinstance(d["reason"], str) and d["reason"]
        if d["disposition"] == "incident":
            assert d["incident_id"] in incidents
            assert d["incident_kind"] in {"security", "operational", "converged"}
    assert f"alerts: {len(decisions)}" in stdout
    for word in ("decisions:", "incidents:", "reduction:"):
        assert word in stdout


@pytest.mark.parametrize("name", list(DATASETS))
def test_incidents_have_the_published_fields(
    replayed: dict[str, tuple[Path, str]], name: str
) -> None:
    out, _ = replayed[name]
    incidents = read_jsonl(out / "incidents.jsonl")
    assert [i["incident_id"] for i in incidents] == sorted(i["incident_id"] for i in incidents)
    for incident in incidents:
        assert INCIDENT_KEYS <= incident.keys()
        assert incident["kind"] in {"security", "operational", "converged"}
        assert incident["assets"] and all(isinstance(a, str) for a in incident["assets"])
        for key in ("opened_at", "updated_at"):
            assert RFC3339_UTC.match(incident[key]), incident[key]
        assert incident["resolved_at"] is None or RFC3339_UTC.match(incident["resolved_at"])
        assert incident["severity"] in {"info", "low", "medium", "high", "critical"}
        assert 0 <= incident["score"] <= 100
        assert isinstance(incident["alert_count"], int)
        root = incident["root_cause"]
        assert root is None or set(root) == {"asset", "alert_id"}


@pytest.mark.parametrize("name", ["wazuh", "huawei", "bgl"])
def test_same_input_same_bytes(
    replayed: dict[str, tuple[Path, str]], tmp_path: Path, name: str
) -> None:
    first, first_stdout = replayed[name]
    code, stdout = run(["replay", *DATASETS[name], "--out", str(tmp_path)])
    assert code == 0
    for file in ("decisions.jsonl", "incidents.jsonl"):
        assert (tmp_path / file).read_bytes() == (first / file).read_bytes()
    assert stdout.replace(str(tmp_path), "OUT") == first_stdout.replace(str(first), "OUT")


def test_naive_engine_on_request(tmp_path: Path) -> None:
    code, stdout = run(["replay", *DATASETS["wazuh"], "--engine", "naive", "--out", str(tmp_path)])
    assert code == 0
    assert "NaiveCorrelator" in stdout
    decisions = read_jsonl(tmp_path / "decisions.jsonl")
    assert {d["disposition"] for d in decisions} == {"incident"}


def blank_aitads(source: Path, target: Path) -> None:
    lines = source.read_bytes().split(b"\n")
    out = [lines[0]]
    for line in lines[1:]:
        if line:
            cells = line.rsplit(b",", 2)
            line = cells[0] + b",,"
        out.append(line)
    target.write_bytes(b"\n".join(out))


def blank_bgl(source: Path, target: Path) -> None:
    lines = source.read_bytes().split(b"\n")
    target.write_bytes(b"\n".join(b"- " + ln.split(b" ", 1)[1] if ln else ln for ln in lines))


@pytest.mark.parametrize(("name", "blank"), [("aitads", blank_aitads), ("bgl", blank_bgl)])
def test_labels_blanked_same_bytes(
    replayed: dict[str, tuple[Path, str]], tmp_path: Path, name: str, blank: Any
) -> None:
    """Same input twice gives the same bytes, and the label columns are never read."""
    first, _ = replayed[name]
    source = Path(DATASETS[name][0])
    copy = tmp_path / source.name
    blank(source, copy)
    assert copy.read_bytes() != source.read_bytes()
    code, _ = run(["replay", str(copy), *DATASETS[name][1:], "--out", str(tmp_path / "o")])
    assert code == 0
    for file in ("decisions.jsonl", "incidents.jsonl"):
        assert (tmp_path / "o" / file).read_bytes() == (first / file).read_bytes()
