"""The `socnoc` command line: structure, `rules check`, and the lazy streaming commands."""

import subprocess
import sys
from pathlib import Path

import pytest

from streams import cli
from streams.cli import classify, main


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("replay", "evaluate", "rules", "run", "worker", "gateway"):
        assert name in out


def test_replay_does_not_import_streaming_modules() -> None:
    code = (
        "import sys\n"
        "from streams import cli, evaluate, replay\n"
        "cli.build_parser('replay'); cli.build_parser('evaluate')\n"
        "heavy = [m for m in ('faust', 'aiokafka', 'prometheus_client') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_missing_streaming_module_is_a_clear_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "nosuch", ("streams.no_such_module", "nothing"))
    assert main(["nosuch", "--flag"]) == 2
    assert "not available" in capsys.readouterr().err


def test_registered_streaming_module_gets_its_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "fake_socnoc_cmd.py").write_text(
        "def register(sub):\n"
        "    p = sub.add_parser('fake')\n"
        "    p.add_argument('--n', type=int)\n"
        "    p.set_defaults(func=lambda args: args.n)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", ("fake_socnoc_cmd", "a fake command"))
    assert main(["fake", "--n", "7"]) == 7


def test_streaming_module_without_register_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fake_socnoc_bare.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "bare", ("fake_socnoc_bare", "no register"))
    assert main(["bare"]) == 2
    assert "has no register" in capsys.readouterr().err


def test_rules_check_accepts_every_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [
        write(
            tmp_path,
            "rules.yml",
            "rules:\n  - {id: q, type: suppress, match: {title: '*update*'}, reason: updates}\n",
        ),
        write(tmp_path, "assets.yml", "assets:\n  - {id: web, aliases: [10.0.0.1]}\n"),
        write(tmp_path, "assets.jsonl", '{"id": "db", "criticality": 5}\n'),
        write(tmp_path, "links.csv", "a,b\nsw1,r1\n"),
        write(
            tmp_path,
            "changes.yml",
            "- id: m1\n  assets: [web]\n  start: 2024-01-01T00:00:00Z\n"
            "  end: 2024-01-01T01:00:00Z\n",
        ),
        write(
            tmp_path,
            "feedback.jsonl",
            '{"id": "f1", "kind": "false_positive", "time": "2024-01-01T00:00:00Z",'
            ' "asset": "web", "signature": "x"}\n',
        ),
    ]
    assert [classify(f) for f in files] == [
        "rules",
        "assets",
        "assets",
        "assets",
        "changes",
        "feedback",
    ]
    assert main(["rules", "check", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (") == 6


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        (
            "r.yml",
            "rules:\n  - id: a\n    type: suppress\n    match: {sig: 1}\n    reason: x\n",
            ":4:",
        ),
        (
            "c.yml",
            "changes:\n  - id: m\n    assets: [a]\n    start: 2024-01-02T00:00:00Z\n"
            "    end: 2024-01-01T00:00:00Z\n",
            ":2:",
        ),
        ("a.yml", "assets:\n  - id: x\n    criticality: 9\n", ":3:"),
        ("bad.yml", "rules: [\n", "invalid YAML"),
        ("links.csv", "a,b\nonly-one\n", ":2:"),
    ],
)
def test_rules_check_reports_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, where: str
) -> None:
    good = write(tmp_path, "good.yml", "rules: []\n")
    bad = write(tmp_path, name, text)
    assert main(["rules", "check", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}" in out and where in out
    assert f"{good}: ok" in out


def test_rules_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(tmp_path / "nope.yml")]) == 1
    assert "no such file" in capsys.readouterr().out


def test_bad_default_tz_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOCNOC_DEFAULT_TZ", "Mars/Olympus")
    path = write(tmp_path, "x.jsonl", "{}\n")
    code = main(["replay", str(path), "--format", "wazuh", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "SOCNOC_DEFAULT_TZ" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["worker", "gateway", "run"])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SOCNOC_INPUTS", "{"),
        ("SOCNOC_TEAM_TOPICS", '{"soc": "no spaces allowed"}'),
        ("SOCNOC_PARTITIONS", "-1"),
        ("SOCNOC_STAGES", "decode,bogus"),
        ("SOCNOC_STAGES", ","),
        ("SOCNOC_STAGES", "[1"),
        ("SOCNOC_HANDOFF", "fast"),
        ("SOCNOC_HANDOFF", ""),
    ],
)
def test_garbage_settings_are_a_usage_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, command: str, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("SOCNOC_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main([command]) == 2
