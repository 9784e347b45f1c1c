"""`python -m bench.instructions` without valgrind: its workloads, its parser and its refusals."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

from bench.instructions import main, parse_instructions, run_workload

_REPORT = """==20509== Cachegrind, a high-precision tracing profiler
==20509== Command: python bench/instructions.py --child engine --alerts 3000
==20509==
==20509== I   refs:      8,091,873,226
"""


@pytest.mark.parametrize("workload", ["engine", "outputs"])
def test_the_engine_workloads_decide_every_alert(workload: str) -> None:
    # the stream's first alerts: every one decided by the end, or waiting in an open window
    before = gc.get_threshold()
    called: list[int] = []
    alerts, outputs = run_workload(workload, 400, ready=lambda: called.append(1))
    assert called == [1]  # between the setup and the measured part, once
    assert gc.get_threshold() == before  # the worker's collector settings are the child's only
    assert alerts == 400
    assert 0 < outputs <= alerts + 50  # decisions, and a few incident events at most
    assert run_workload(workload, 400, setup_only=True) == (400, 0)


def test_the_decode_workload_routes_each_record_once() -> None:
    assert run_workload("decode", 300) == (300, 300)
    assert run_workload("decode", 300, setup_only=True) == (300, 0)


def test_the_stages_workload_decides_every_alert_through_both_stages() -> None:
    # the decode stage's batches, handed over from memory, through eight engines: one
    # decision an alert but the few still waiting in an open window at the end
    before = gc.get_threshold()
    alerts, decided = run_workload("stages", 600)
    assert gc.get_threshold() == before
    assert alerts == 600
    assert 540 <= decided <= 600
    assert run_workload("stages", 600, setup_only=True) == (600, 0)


def test_garbage_is_refused_with_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        run_workload("nope", 10)
    with pytest.raises(ValueError, match="no 'I refs' line"):
        parse_instructions("==1== ERROR SUMMARY: 0 errors\n")
    assert parse_instructions(_REPORT) == 8_091_873_226
    with pytest.raises(SystemExit):
        main(["--alerts", "0"])
    if shutil.which("valgrind") is not None:
        assert main(["--tree", str(tmp_path), "--alerts", "10"]) == 2
        assert "is not a socnoc checkout" in capsys.readouterr().err


def test_without_valgrind_it_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["--alerts", "10"]) == 2
    assert "valgrind is not installed" in capsys.readouterr().err
