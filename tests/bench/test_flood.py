"""`python -m bench.flood` in miniature: one JSON line, state held at the caps, one decision each."""

from __future__ import annotations

import orjson
import pytest

from bench.flood import main


def test_flood_prints_one_line_within_the_caps(capsys: pytest.CaptureFixture[str]) -> None:
    # 2 s apart: about 450 windows wait at a time (15-minute gap), fewer than the asset cap
    assert main(["--alerts", "3000", "--max-assets", "500", "--step-ms", "2000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    result = orjson.loads(lines[0])
    assert result["decisions"] == result["alerts"] == 3000
    assert result["max_tracked_assets"] == 500 and result["assets_over_cap"] == 2500
    assert result["tracked_assets"] == result["baseline_assets"]  # nothing kept for untracked assets
    assert result["peak_rss_mb"] >= result["rss_before_mb"] > 0
