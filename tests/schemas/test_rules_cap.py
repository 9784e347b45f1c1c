"""The rule loader's caps: rules per file and file size, as typed errors naming the file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas.errors import ConfigError
from schemas.loading import MAX_CONFIG_BYTES
from schemas.rules import MAX_RULES, load_rules


def _rule(i: int) -> bytes:
    return orjson.dumps({"id": f"r{i}", "type": "suppress", "match": {"signature": f"s{i}"}, "reason": "noise"})


def test_a_file_with_more_than_max_rules_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"\n".join(_rule(i) for i in range(MAX_RULES + 1)) + b"\n")
    with pytest.raises(ConfigError, match=f"more than {MAX_RULES} rules") as info:
        load_rules(path)
    assert info.value.path == str(path)


def test_max_rules_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "full.jsonl"
    path.write_bytes(b"\n".join(_rule(i) for i in range(MAX_RULES)) + b"\n")
    assert len(load_rules(path)) == MAX_RULES


def test_an_oversized_rule_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.yml"
    path.write_bytes(b"rules: []\n" + b"#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert info.value.path == str(path)
