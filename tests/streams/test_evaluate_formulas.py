"""The DESIGN.md evaluation formulas on tiny hand-made labelled examples."""

from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli import main
from streams.evaluate import format_table, write_report
from streams.scoring import load_outcome, score_aitads, score_bgl, score_huawei, score_wazuh


def epoch(seconds: int) -> str:
    return f"1970-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}Z"


def decision(alert_id: str, disposition: str, incident: str | None = None) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "disposition": disposition,
        "incident_id": incident,
        "incident_kind": None,
        "reason": "test",
    }


def incident(
    incident_id: str,
    kind: str,
    opened: int,
    *,
    root: str | None = None,
    merged_into: str | None = None,
) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "kind": kind,
        "assets": ["h"],
        "opened_at": epoch(opened),
        "updated_at": epoch(opened),
        "resolved_at": None,
        "severity": "high",
        "score": 50.0,
        "alert_count": 1,
        "root_cause": {"asset": "h", "alert_id": root} if root else None,
        "merged_into": merged_into,
        "owners": [],
        "summary": "",
        "next_step": "",
    }


def write_replay(
    directory: Path, decisions: list[dict[str, Any]], incidents: list[dict[str, Any]]
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("decisions.jsonl", decisions), ("incidents.jsonl", incidents)):
        (directory / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return directory


@pytest.fixture
def aitads(tmp_path: Path) -> tuple[Path, Path]:
    labels = tmp_path / "t.csv"
    labels.write_text(
        "time,name,ip,host,short,time_label,event_label\n"
        "100,Wazuh: login,1.1.1.1,mail,W-1,false_positive,-\n"  # t.csv:2 benign
        '200,"Suricata: scan, dirb",1.1.1.2,web,S-1,dirb,dirb\n'  # t.csv:3
        "210,Suricata: dirb,1.1.1.2,web,S-1,dirb,dirb\n"  # t.csv:4
        "300,Suricata: wpscan,1.1.1.2,web,S-2,wpscan,wpscan\n"  # t.csv:5
        "400,AMiner: x,1.1.1.3,mon,A-1,false_positive,-\n"  # t.csv:6 benign
        "500,Wazuh: crack,1.1.1.3,mon,W-2,cracking,crack_passwords\n"  # t.csv:7
    )
    out = write_replay(
        tmp_path / "replay",
        [
            decision("t.csv:2", "noise"),
            decision("t.csv:3", "incident", "I1"),
            decision("t.csv:4", "noise"),
            decision("t.csv:5", "incident", "I2"),
            decision("t.csv:6", "incident", "I3"),
            decision("t.csv:7", "incident", "I4"),
            decision("junk:1", "invalid"),
        ],
        [
            incident("I1", "security", 240),
            incident("I2", "operational", 300),
            incident("I3", "converged", 400),
            incident("I4", "security", 480, merged_into="I1"),
            incident("I5", "security", 1000),
        ],
    )
    return out, labels


def test_aitads_formulas_by_hand(aitads: tuple[Path, Path]) -> None:
    out, labels = aitads
    m = score_aitads(load_outcome(out), labels)
    # live incidents I1 I2 I3 I5 (I4 merged into I1); 6 valid alerts (junk:1 is invalid)
    assert m["incidents"] == 4
    assert m["alerts"] == 6
    assert m["security_incidents"] == 3  # I1, I3 (converged), I5
    # attack alerts :3 :4 :5 :7; in security incidents :3 (I1) and :7 (I4 -> I1)
    assert m["attack_recall"] == pytest.approx(2 / 4)
    # benign :2 (noise) and :6 (converged I3)
    assert m["benign_inclusion"] == pytest.approx(1 / 2)
    # security incidents holding an attack alert: I1 only (I3 benign, I5 empty)
    assert m["incident_precision"] == pytest.approx(1 / 3)
    # classes dirb, wpscan, crack_passwords; wpscan only reached an operational incident
    assert m["phase_recall"] == pytest.approx(2 / 3)
    assert m["reduction"] == pytest.approx(1 - 4 / 6)
    # dirb: first alert at 200, I1 opened at 240 -> 40 s; crack: I1 opened before 500 -> 0
    assert m["latency_s"] == {"crack_passwords": 0.0, "dirb": 40.0, "wpscan": None}
    assert m["median_latency_s"] == pytest.approx(20.0)


def test_wazuh_phases_by_hand(tmp_path: Path) -> None:
    labels = tmp_path / "ossec.json"
    lines = [
        {"id": "1.1", "timestamp": "1970-01-01T00:01:40.000000+0000"},  # 100, phase a
        {"id": "1.2", "timestamp": "1970-01-01T00:03:20.500000+0000"},  # 200.5, phase b
        {"id": "1.3", "timestamp": "1970-01-01T00:16:40.000000+0000"},  # 1000, outside
        {"id": "1.4", "timestamp": "1970-01-01T00:16:41.000000+0000"},  # 1001, outside
    ]
    labels.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines) + b"{truncated\n")
    phases = tmp_path / "phases.json"
    phases.write_bytes(
        orjson.dumps(
            {
                "s": {
                    "a": {"start_epoch": 50, "end_epoch": 150},
                    "b": {"start_epoch": 150, "end_epoch": 300},
                    "false_positive_x": {"start_epoch": 0, "end_epoch": 5000},
                }
            }
        )
    )
    out = write_replay(
        tmp_path / "replay",
        [
            decision("1.1", "incident", "S"),
            decision("1.2", "incident", "O"),
            decision("1.3", "incident", "S"),
            decision("1.4", "noise"),
        ],
        [incident("S", "security", 100), incident("O", "operational", 200)],
    )
    m = score_wazuh(load_outcome(out), labels, phases=phases)
    assert m["detected"] == {"a": True, "b": False}
    assert (m["phases_detected"], m["phases_with_alerts"], m["phases"]) == (1, 2, 2)
    assert m["outside_window_inclusion"] == pytest.approx(1 / 2)
    assert m["incidents"] == 2
    assert m["reduction"] == pytest.approx(1 - 2 / 4)


def test_huawei_causal_consistency_by_hand(tmp_path: Path) -> None:
    labels = tmp_path / "Alarm.csv"
    labels.write_text(
        "alarm_id,device_id,start_timestamp,end_timestamp\n"
        "0,1,10,10\n"  # :2 root of A
        "2,2,11,11\n"  # :3 0 -> 2
        "6,3,12,12\n"  # :4 0 -> 2 -> 6 (transitive)
        "5,3,13,13\n"  # :5 not reachable from 0
        "1,7,20,20\n"  # :6 B has no root: earliest (:6) stands in
        "1,8,21,21\n"  # :7 same type as the root
        "3,9,30,30\n"  # :8 single-alarm incident: no pairs
    )
    dag = tmp_path / "dag.csv"
    dag.write_text("cause_alarm_id,effect_alarm_id\n0,2\n2,6\n1,3\n")
    out = write_replay(
        tmp_path / "replay",
        [decision(f"Alarm.csv:{n}", "incident", "A") for n in (2, 3, 4, 5)]
        + [decision("Alarm.csv:6", "incident", "B"), decision("Alarm.csv:7", "incident", "B")]
        + [decision("Alarm.csv:8", "incident", "C")],
        [
            incident("A", "operational", 10, root="Alarm.csv:2"),
            incident("B", "operational", 20),
            incident("C", "operational", 30, root="Alarm.csv:8"),
        ],
    )
    m = score_huawei(load_outcome(out), labels, dag=dag)
    assert m["multi_alarm_incidents"] == 2
    assert m["incidents_without_root"] == 1
    assert m["pairs"] == 4
    assert m["causal_consistency"] == pytest.approx(3 / 4)
    assert m["reduction"] == pytest.approx(1 - 3 / 7)


def test_bgl_shares_by_hand(tmp_path: Path) -> None:
    labels = tmp_path / "BGL.log"
    labels.write_text(
        "- 1 2005.06.03 R02 2005-06-03-15.42.50.675872 R02 RAS KERNEL INFO ok\n"
        "KERNDTLB 2 2005.06.03 R02 2005-06-03-15.42.51.675872 R02 RAS KERNEL FATAL bad\n"
        "- 3 2005.06.03 R03 2005-06-03-15.42.52.675872 R03 RAS KERNEL INFO ok\n"
        "APPSEV 4 2005.06.03 R03 2005-06-03-15.42.53.675872 R03 RAS APP ERROR bad"
    )
    out = write_replay(
        tmp_path / "replay",
        [
            decision("BGL.log:1", "noise"),
            decision("BGL.log:2", "incident", "X"),
            decision("BGL.log:3", "incident", "X"),
            decision("BGL.log:4", "duplicate"),
        ],
        [incident("X", "operational", 1)],
    )
    m = score_bgl(load_outcome(out), labels)
    assert m["alert_lines"] == 2
    assert m["alert_lines_in_incidents"] == pytest.approx(1 / 2)
    assert m["normal_lines_in_incidents"] == pytest.approx(1 / 2)
    assert m["reduction"] == pytest.approx(1 - 1 / 4)


def test_report_and_table(aitads: tuple[Path, Path], tmp_path: Path) -> None:
    out, labels = aitads
    metrics = score_aitads(load_outcome(out), labels)
    sections = {"aitads": {"socnoc": metrics, "naive": metrics}}
    path = write_report(tmp_path / "eval", sections)
    first = path.read_bytes()
    report = orjson.loads(first)
    section = report["datasets"]["aitads"]
    assert section["meets_target"]["attack_recall"] is False
    assert section["targets"]["reduction"] == ">= 0.99"
    assert write_report(tmp_path / "eval", sections).read_bytes() == first
    table = format_table(sections)
    header, rule, *rows = table.splitlines()
    assert [c.strip() for c in header.split(" | ")] == [
        "metric",
        "socnoc",
        "naive baseline",
        "target",
    ]
    assert any(r.startswith("aitads: attack recall") and "0.5000" in r for r in rows)
    assert any("latency wpscan" in r and "n/a" in r for r in rows)


def test_cli_scores_an_existing_replay(
    aitads: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, labels = aitads
    code = main(
        [
            "evaluate",
            "--decisions",
            str(out),
            "--labels",
            str(labels),
            "--kind",
            "aitads",
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert code == 0
    assert "attack recall" in capsys.readouterr().out
    report = orjson.loads((tmp_path / "ev" / "evaluation.json").read_bytes())
    assert report["datasets"]["aitads"]["socnoc"]["phase_recall"] == pytest.approx(2 / 3)


def test_cli_evaluate_needs_labels_with_decisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--decisions", str(tmp_path), "--kind", "aitads"]) == 2
    assert "--labels" in capsys.readouterr().err
    code = main(
        [
            "evaluate",
            "--decisions",
            str(tmp_path),
            "--labels",
            str(tmp_path / "x.csv"),
            "--kind",
            "bgl",
        ]
    )
    assert code == 2
    assert "no such file" in capsys.readouterr().err
