"""`python -m bench.storm` in miniature: one JSON line, every alert of the storm decided."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from bench.data import load_base, storm_records
from bench.pipeline import PauseHistogram, caps_hit
from bench.storm import main
from streams.metrics import CHECKPOINT_BUCKETS

pytestmark = pytest.mark.integration


def test_a_storm_of_new_assets_goes_through_the_worker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--assets", "300", "--per-asset", "2", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    result = orjson.loads(lines[0])
    assert result["assets"] == 300 and result["alerts"] == 600  # every one decided (`e2e_run` waits for it)
    assert result["alerts_per_s"] > 0 and result["cpu_us_per_alert"]["pipeline"] > 0
    assert result["session_restarts"] == 0
    assert result["caps_hit"] == {}  # (300 assets: no cap near)
    # (a short run may end before any partition is due: the count and the mean pause agree)
    assert (result["checkpoints"] == 0) == (result["checkpoint_pause_ms"] is None)
    if result["checkpoints"]:
        assert result["checkpoint_pause_total_s"] >= 0 and result["checkpoint_pauses_over_1s"] == 0
        assert result["checkpoint_pause_longest_le_s"] in CHECKPOINT_BUCKETS
    assert (tmp_path / "tansu.log").exists()


def test_pauses_are_read_off_the_histogram() -> None:
    pauses = PauseHistogram(3, 2.3, {0.25: 1, 0.5: 1, 1.0: 2, 2.5: 3, 5.0: 3, math.inf: 3})
    assert pauses.longest_le_s() == 2.5 and pauses.over(1.0) == 1 and pauses.over(0.25) == 2
    assert pauses.mean_ms() == pytest.approx(2300 / 3) and PauseHistogram().mean_ms() is None
    assert PauseHistogram(1, 30.0, {10.0: 0, math.inf: 1}).longest_le_s() is None  # past the last bound
    assert PauseHistogram().longest_le_s() is None and PauseHistogram().over(1.0) == 0


def test_the_storm_puts_each_alert_on_a_host_of_its_own_and_ends_past_the_windows() -> None:
    records = storm_records(load_base(), 50, 3, run="s")
    hosts = [orjson.loads(value)["host"] for value in records.values]
    assert len(records) == 150 and len(set(hosts)) == 50 and all(hosts.count(h) == 3 for h in set(hosts))
    times = [orjson.loads(value)["time"] for value in records.values]
    assert max(times) - min(times) <= 600  # every asset active at once
    assert orjson.loads(records.closing)["time"] >= max(times) + 2 * 86400


def test_bad_arguments_are_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--assets", "0"])
    assert exit_info.value.code == 2
    assert "--assets and --per-asset must be at least 1" in capsys.readouterr().err


def test_caps_hit_are_read_off_the_metrics_page() -> None:
    page = """# HELP socnoc_caps_hit_total State caps reached.
# TYPE socnoc_caps_hit_total counter
socnoc_caps_hit_total{cap="max_windows"} 200000.0
socnoc_caps_hit_total{cap="max_assets"} 0.0
socnoc_caps_hit_created{cap="max_windows"} 1.7e9
# TYPE socnoc_other_total counter
socnoc_other_total{cap="x"} 5.0
"""
    assert caps_hit(page) == {"max_windows": 200000}
    assert caps_hit("") == {}
