from pathlib import Path

import pytest

from schemas.context import load_changes, load_inventory
from schemas.errors import ConfigError
from schemas.rules import DEFAULT_RULES, SuppressRule, ThresholdRule, default_rules, load_rules


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_rules_load_with_durations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.yml",
        "rules:\n"
        "  - id: burst\n    type: threshold\n    match: {signature: 'x*'}\n"
        "    count: 5\n    timespan: 5m\n"
        "  - id: quiet\n    type: suppress\n    match: {title: '*update*'}\n    reason: updates\n",
    )
    rules = load_rules(path)
    assert isinstance(rules[0], ThresholdRule)
    assert rules[0].timespan.total_seconds() == 300
    assert isinstance(rules[1], SuppressRule)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("rules:\n  - id: a\n    type: suppress\n    match: {sig: 1}\n    reason: x\n", 4, "sig"),
        ("rules:\n  - id: a\n    type: nope\n", 2, "type"),
        ("rules:\n  - !!python/object/apply:os.system ['id']\n", 2, "invalid YAML"),
        ("rules: [\n", None, "invalid YAML"),
        ("rulez: []\n", 1, "unknown top-level key"),
        (
            "rules:\n  - {id: a, type: suppress, match: {}, reason: x}\n"
            "  - {id: a, type: suppress, match: {}, reason: y}\n",
            3,
            "duplicate rule id",
        ),
    ],
)
def test_bad_rules_name_file_and_line(
    tmp_path: Path, text: str, line: int | None, fragment: str
) -> None:
    path = write(tmp_path, "bad.yml", text)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)
    if line is not None:
        assert info.value.line == line


def test_empty_and_binary_files(tmp_path: Path) -> None:
    assert load_rules(write(tmp_path, "empty.yml", "")) == []
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"\xff\xfe\x00rules")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_rules(binary)


def test_inventory_csv_links_are_undirected_peers(tmp_path: Path) -> None:
    path = write(tmp_path, "topo.csv", "device_a,device_b\n1,2\n2,3\n")
    assets = {a.id: a for a in load_inventory(path)}
    assert {link.to for link in assets["2"].links} == {"1", "3"}
    assert [link.to for link in assets["1"].links] == ["2"]


def test_inventory_yaml_and_changes(tmp_path: Path) -> None:
    inv = write(
        tmp_path,
        "inv.yml",
        "assets:\n  - id: db-1\n    aliases: [db-1.corp, 10.0.0.5]\n    criticality: 5\n"
        "    owner: dba\n    links: [{to: sw-3, kind: upstream}]\n",
    )
    (asset,) = load_inventory(inv)
    assert asset.criticality == 5 and asset.links[0].to == "sw-3"
    bad = write(tmp_path, "inv2.yml", "assets:\n  - id: x\n    criticality: 9\n")
    with pytest.raises(ConfigError, match=r"inv2.yml:3: criticality"):
        load_inventory(bad)
    ch = write(
        tmp_path,
        "ch.yml",
        "changes:\n  - id: CHG-42\n    assets: [db-1]\n    start: 2024-01-01T00:00:00Z\n"
        "    end: 2024-01-01T02:00:00Z\n    kind: maintenance\n",
    )
    (change,) = load_changes(ch)
    assert change.id == "CHG-42"
    backwards = write(
        tmp_path,
        "ch2.yml",
        "changes:\n  - id: C\n    assets: [a]\n    start: 2024-01-02T00:00:00Z\n"
        "    end: 2024-01-01T00:00:00Z\n",
    )
    with pytest.raises(ConfigError, match="end must be after start"):
        load_changes(backwards)


def test_the_default_pack_is_read_once_and_shared_safely() -> None:
    """Every engine a worker builds (one a partition, on each rebalance) gets the pack without
    parsing the YAML again: equal to a fresh load, the same frozen rules, a list of its own."""
    first, second = default_rules(), default_rules()
    assert first == load_rules(DEFAULT_RULES)
    assert first is not second and all(a is b for a, b in zip(first, second, strict=True))
    first.clear()  # a caller's list is its own
    assert default_rules() == second
    with pytest.raises(ValueError, match="frozen"):
        second[0].id = "changed"
