"""`python -m bench.storm` in miniature: one JSON line, every alert of the storm decided."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.data import load_base, storm_records
from bench.storm import main

pytestmark = pytest.mark.integration


def test_a_storm_of_new_assets_goes_through_the_worker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--assets", "300", "--per-asset", "2", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    result = orjson.loads(lines[0])
    assert result["assets"] == 300 and result["alerts"] == 600  # every one decided (`e2e_run` waits for it)
    assert result["alerts_per_s"] > 0 and result["cpu_us_per_alert"]["pipeline"] > 0
    assert result["session_restarts"] == 0
    # (a short run may end before any partition is due: the count and the mean pause agree)
    assert (result["checkpoints"] == 0) == (result["checkpoint_pause_ms"] is None)
    assert (tmp_path / "tansu.log").exists()


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
