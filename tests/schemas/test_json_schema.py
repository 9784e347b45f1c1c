"""The JSON Schema files in schemas/json/ are current, stable and describe the records."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.export import EXPORTS, SCHEMA_DIR, main, render_all, stale


def test_committed_schemas_are_current() -> None:
    assert stale() == [], "run `make schemas` (python -m schemas.export) and commit schemas/json/"
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(render_all())


def test_rendering_is_stable_and_sorted() -> None:
    first, second = render_all(), render_all()
    assert first == second
    for content in first.values():
        document = orjson.loads(content)
        assert (
            content
            == orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
        )


def test_every_record_is_exported() -> None:
    assert set(EXPORTS) == {
        "alert",
        "decision",
        "incident",
        "incident_event",
        "dead_letter",
        "asset",
        "change",
        "feedback",
        "rule",
    }
    alert = orjson.loads(render_all()["alert.json"])
    assert alert["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"id", "time", "asset", "signature", "schema_version"} <= set(alert["properties"])
    rule = orjson.loads(render_all()["rule.json"])
    assert "discriminator" in rule or "oneOf" in rule


def test_main_writes_and_checks(tmp_path: Path) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "alert.json").write_text("{}\n")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
