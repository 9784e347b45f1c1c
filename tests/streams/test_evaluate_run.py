"""`socnoc evaluate` over bundled datasets: both engines, the table, a reproducible report."""

import contextlib
import io
from pathlib import Path

import orjson
import pytest

from streams.cli import main


def run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


def test_evaluate_wazuh_and_huawei(tmp_path: Path) -> None:
    code, table = run(["evaluate", "--dataset", "wazuh", "--out", str(tmp_path / "a")])
    assert code == 0
    assert "wazuh: attack phases detected" in table
    first = (tmp_path / "a" / "evaluation.json").read_bytes()
    report = orjson.loads(first)["datasets"]["wazuh"]
    for engine in ("socnoc", "naive"):
        assert report[engine]["alerts"] == 865
        assert report[engine]["phases"] == 6
        assert (tmp_path / "a" / "wazuh" / engine / "decisions.jsonl").is_file()
    assert report["naive_engine"] == "correlators.naive.NaiveCorrelator"
    code, again = run(["evaluate", "--dataset", "wazuh", "--out", str(tmp_path / "b")])
    assert (tmp_path / "b" / "evaluation.json").read_bytes() == first
    assert again == table


def test_evaluate_huawei_naive_groups_by_component(tmp_path: Path) -> None:
    code, table = run(["evaluate", "--dataset", "huawei", "--out", str(tmp_path)])
    assert code == 0
    assert "huawei: causal consistency" in table and ">= 0.9" in table
    report = orjson.loads((tmp_path / "evaluation.json").read_bytes())["datasets"]["huawei"]
    assert set(report["meets_target"]) == {"reduction", "causal_consistency"}
    line = (tmp_path / "huawei" / "naive" / "incidents.jsonl").read_bytes().splitlines()[0]
    assert orjson.loads(line)["incident_id"].startswith("naive:component:")


def test_evaluate_without_datasets_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", "--dataset", "bgl", "--data", str(tmp_path), "--out", str(tmp_path)])
    assert code == 2
    assert "not found" in capsys.readouterr().err
