"""Replay edge cases: ordering, garbage input, unusable arguments, and core bookkeeping."""

import contextlib
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from correlators.naive import NaiveCorrelator
from correlators.types import Output
from schemas.models import Alert, Decision, Disposition
from streams.cli import main
from streams.replay import DecisionMismatch, replay

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
WAZUH_LINES = (DATA / "wazuh-ldsv1" / "ossec_spiral.json").read_bytes().splitlines()


def run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


def bgl_line(epoch: int, node: str = "R02-M1-N0-C:J12-U11", level: str = "INFO") -> bytes:
    stamp = datetime.fromtimestamp(epoch).strftime("%Y-%m-%d-%H.%M.%S.000000")  # noqa: DTZ006
    return (
        f"- {epoch} 2005.06.03 {node} {stamp} {node} RAS KERNEL {level} "
        f"instruction cache parity error corrected"
    ).encode()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


class Wrapped:
    """The naive baseline behind a wrapper (compiled, see schemas/native.py, it cannot be subclassed)."""

    def __init__(self) -> None:
        self.core = NaiveCorrelator()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


class Spy(Wrapped):
    """The naive baseline, recording the order alerts reach the core."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def on_alert(self, alert: Alert) -> list[Output]:
        self.seen.append(alert.id)
        return self.core.on_alert(alert)


def test_core_gets_event_time_order_output_keeps_input_order(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    b = tmp_path / "b.log"
    a.write_bytes(bgl_line(1117838700) + b"\n" + bgl_line(1117838500) + b"\n")
    b.write_bytes(bgl_line(1117838600) + b"\n\n" + bgl_line(1117838500) + b"\n")
    spy = Spy()
    result = replay([a, b], "bgl", spy, tmp_path / "out")
    # (event time, argument index, line): the tie at ...500 goes to the first argument
    assert spy.seen == ["a.log:2", "b.log:3", "b.log:1", "a.log:1"]
    decisions = read_jsonl(tmp_path / "out" / "decisions.jsonl")
    assert [d["alert_id"] for d in decisions] == ["a.log:1", "a.log:2", "b.log:1", "b.log:3"]
    assert result.alerts == 4 and result.records == 4


def test_garbage_becomes_invalid_decisions_and_exit_0(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(
        b"\n".join(
            [
                WAZUH_LINES[0],
                WAZUH_LINES[1][: len(WAZUH_LINES[1]) // 2],  # truncated JSON
                b'{"id": "x", "timestamp": "\xff\xfe not utf-8"}',
                b'{"pad": "' + b"a" * (10 * 1024 * 1024) + b'"}',  # a 10 MB line
                b"[1, 2, 3]",
                WAZUH_LINES[2],
            ]
        )
    )
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    code, stdout = run(
        ["replay", str(garbage), str(empty), "--format", "wazuh", "--out", str(tmp_path / "o")]
    )
    assert code == 0
    decisions = read_jsonl(tmp_path / "o" / "decisions.jsonl")
    assert len(decisions) == 6
    by_id = {d["alert_id"]: d for d in decisions}
    for n in (2, 3, 4, 5):
        d = by_id[f"garbage.json:{n}"]
        assert d["disposition"] == "invalid"
        assert d["incident_id"] is None
    assert by_id["garbage.json:3"]["reason"].startswith("DecodeError")
    assert by_id["garbage.json:4"]["reason"].startswith("RecordTooLarge")
    valid = [d for d in decisions if d["disposition"] != "invalid"]
    assert len(valid) == 2
    assert "invalid 4" in stdout


def test_multi_alert_record_ids(tmp_path: Path) -> None:
    hook = {
        "version": "4",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HostDown", "instance": "10.0.0.5:9100"},
                "startsAt": "2024-01-01T00:00:00Z",
            },
            {"status": "firing", "labels": {"alertname": "NoAsset"}},
        ],
    }
    path = tmp_path / "hooks.jsonl"
    path.write_bytes(orjson.dumps(hook) + b"\n")
    code, _ = run(["replay", str(path), "--format", "alertmanager", "--out", str(tmp_path / "o")])
    assert code == 0
    decisions = read_jsonl(tmp_path / "o" / "decisions.jsonl")
    assert [d["alert_id"] for d in decisions] == ["hooks.jsonl:1#1", "hooks.jsonl:1#2"]
    assert decisions[0]["disposition"] != "invalid"
    assert decisions[1]["disposition"] == "invalid"
    assert decisions[1]["reason"].startswith("MissingField")


def test_redelivered_id_is_decided_once(tmp_path: Path) -> None:
    path = tmp_path / "twice.json"
    path.write_bytes(b"\n".join([WAZUH_LINES[0], WAZUH_LINES[1], WAZUH_LINES[0]]) + b"\n")
    code, stdout = run(["replay", str(path), "--format", "wazuh", "--out", str(tmp_path / "o")])
    assert code == 0
    decisions = read_jsonl(tmp_path / "o" / "decisions.jsonl")
    assert len(decisions) == 2
    assert "repeated alert ids" in stdout


@pytest.fixture
def alarms(tmp_path: Path) -> Path:
    path = tmp_path / "alarms.csv"
    path.write_text("alarm_id,device_id,start_timestamp,end_timestamp\n4,404,15,15\n")
    return path


@pytest.mark.parametrize(
    ("extra", "files", "fragment"),
    [
        (["--format", "nope"], {}, "unknown format 'nope'"),
        (["--format", "csv", "--map", "time=start_timestamp"], {}, "alarms.csv:1: "),
        (
            [
                "--format",
                "csv",
                "--map",
                "time=start_timestamp,asset=x,signature=alarm_id,domain:=ops",
            ],
            {},
            "alarms.csv:1: ",
        ),
        (["--format", "csv"], {}, "needs --map"),
        (["--format", "bgl", "--map", "time=a"], {}, "takes no option"),
        (
            [
                "--format",
                "csv",
                "--map",
                "time=start_timestamp,asset=device_id,signature=alarm_id,domain:=ops",
                "--inventory",
                "{inv}",
            ],
            {"inv.yml": "assets:\n  - id: x\n    criticality: 9\n"},
            "inv.yml:3: ",
        ),
        (
            ["--format", "bgl", "--rules", "{r}"],
            {"r.yml": "rules:\n  - id: a\n    type: nope\n"},
            "r.yml:2: ",
        ),
        (["--format", "bgl", "--changes", "{c}"], {"c.yml": "changes: [\n"}, "c.yml"),
        (
            ["--format", "bgl", "--feedback", "{f}"],
            {"f.jsonl": '{"id": "f", "kind": "ack", "time": "2024-01-01T00:00:00Z"}\n'},
            "f.jsonl:1: ",
        ),
        (["--format", "bgl", "--inventory", "{missing}"], {}, "no such file"),
    ],
)
def test_unusable_arguments_exit_2(
    tmp_path: Path,
    alarms: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    files: dict[str, str],
    fragment: str,
) -> None:
    names = {"missing": str(tmp_path / "missing.yml")}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        names[name.split(".")[0]] = str(tmp_path / name)
    args = [a.format(**names) for a in extra]
    out = tmp_path / "o"
    assert main(["replay", str(alarms), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert not (out / "decisions.jsonl").exists()


def test_missing_input_and_bad_out_exit_2(
    tmp_path: Path, alarms: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path / "none.log"), "--format", "bgl", "--out", "x"]) == 2
    assert "none.log: no such file" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["replay", str(alarms), "--format", "bgl", "--out", str(blocker)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["replay", str(alarms), "--out", "x"]) == 2  # argparse: --format missing
    assert "--format" in capsys.readouterr().err


class Faulty(Wrapped):
    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault

    def on_alert(self, alert: Alert) -> list[Output]:
        out = self.core.on_alert(alert)
        if self.fault == "drop" and alert.id.endswith(":2"):
            return [o for o in out if not isinstance(o, Decision)]
        if self.fault == "double":
            return out + [o for o in out if isinstance(o, Decision)]
        if self.fault == "stranger":
            return [*out, Decision(alert_id="nobody", disposition=Disposition.NOISE, reason="x")]
        return out


@pytest.mark.parametrize(
    ("fault", "message"),
    [("drop", "got no decision"), ("double", "decided twice"), ("stranger", "unknown alert")],
)
def test_core_bookkeeping_bugs_are_loud(tmp_path: Path, fault: str, message: str) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(bgl_line(1117838500) + b"\n" + bgl_line(1117838501) + b"\n")
    with pytest.raises(DecisionMismatch, match=message):
        replay([path], "bgl", Faulty(fault), tmp_path / "out")


def test_two_inputs_with_one_file_name_are_refused_not_half_decided(
    tmp_path: Path, alarms: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ids are `<file name>:<line>`: a second `x.log` would pass for a redelivery of the first
    and its alerts would get no decision. Refused before anything is written."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.log").write_bytes(alarms.read_bytes())
    out = tmp_path / "o"
    a, b = tmp_path / "a" / "x.log", tmp_path / "b" / "x.log"
    assert main(["replay", str(a), str(b), "--format", "bgl", "--out", str(out)]) == 2
    assert "same file name" in capsys.readouterr().err
    again = tmp_path / "a" / ".." / "a" / "x.log"
    assert main(["replay", str(a), str(again), "--format", "bgl", "--out", str(out)]) == 2
    assert "given twice" in capsys.readouterr().err
    assert not out.exists()
    assert main(["replay", str(a), "--format", "bgl", "--out", str(out)]) == 0  # one of them is fine
