"""The bench machinery on tiny sizes: structure and correctness of its output, never speed."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import orjson
import pytest

from bench import run as bench_run
from bench.core import run_core
from bench.data import KAFKA_MAP, kafka_records, load_base, state_probe_rows, synthetic_rows, write_csv
from bench.pipeline import Arrivals, harness_gc_paused, percentile
from bench.rawpipe import run as rawpipe_run
from bench.run import KEYS, SCALING_SIZES, Config


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def test_synthetic_stream_continues_the_timeline_with_renamed_hosts() -> None:
    base = load_base()
    rows = list(synthetic_rows(base, len(base.rows) + 50))
    assert rows[: len(base.rows)] == list(base.rows)  # copy 0 is the real data, in time order
    times = [int(r[0]) for r in rows]
    assert times == sorted(times)
    tail = rows[len(base.rows) :]
    assert all(r[3].endswith("~1") for r in tail)
    assert int(tail[0][0]) == int(base.rows[0][0]) + base.period
    assert base.period % 86400 == 0 and base.period > base.end - base.start
    assert [r[4] for r in tail] == [r[4] for r in base.rows[:50]]  # same signatures, same order
    assert all(r[2] == "" or r[2].startswith("10.0.1.") for r in tail)


def test_runs_pause_the_harness_collector_and_restore_it_on_error() -> None:
    assert gc.isenabled()
    with harness_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), harness_gc_paused():
        raise RuntimeError("a run failed")
    assert gc.isenabled()


def test_state_probe_gives_each_asset_its_own_real_alerts_within_the_span() -> None:
    base = load_base()
    rows = list(state_probe_rows(base, 300, 2, span_s=600))
    assert len(rows) == 600
    assert len({r[3] for r in rows}) == 300 and len({r[2] for r in rows}) == 300
    times = [float(r[0]) for r in rows]
    assert times == sorted(times) and times[-1] - times[0] <= 600
    assert {r[4] for r in rows} <= {r[4] for r in base.rows}


def test_core_decides_every_alert_and_reports_cumulative_costs(tmp_path: Path) -> None:
    base = load_base()
    path = tmp_path / "s.csv"
    write_csv(path, base.header, synthetic_rows(base, 3000))
    result = run_core(path, "aitads", [1000, 3000, 5000])
    assert result.alerts == result.decisions == 3000
    assert set(result.checkpoints) == {"1000", "3000"}  # 5000 is beyond the stream
    assert all(v > 0 for v in result.checkpoints.values())
    assert result.alerts_per_s > 0 and result.peak_rss_bytes > 0


def test_kafka_records_are_json_the_jsonl_map_reads_back() -> None:
    from schemas.adapters.base import ParseContext
    from schemas.adapters.registry import get_adapter
    from schemas.models import Alert

    base = load_base()
    records = kafka_records(base, 10, 20, run="t")
    assert len(records) == 20 and records.ids[0] == "t:10"
    adapter = get_adapter("jsonl", {"map": KAFKA_MAP})
    alert = adapter.parse(records.values[0], ParseContext(record_id="x"))[0]
    assert isinstance(alert, Alert) and alert.id == "t:10"
    assert alert.asset == base.rows[10][3] and alert.signature == base.rows[10][4]
    closing = orjson.loads(records.closing)
    assert closing["time"] > int(base.rows[29][0])


def test_bench_run_ends_with_one_json_line_of_exactly_the_design_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "BENCH_RUNS": "1",
        "BENCH_SYNTHETIC_ALERTS": "2000",
        "BENCH_STATE_ASSETS": "300",
        "BENCH_SKIP_KAFKA": "1",
        "BENCH_OUT": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)
    assert bench_run.main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = orjson.loads(lines[-1])
    assert tuple(result) == KEYS
    assert _is_number(result["core_alerts_per_s_aitads"])
    assert _is_number(result["state_bytes_per_asset"]) and _is_number(result["peak_rss_mb"])
    assert result["core_alerts_per_s"] is None  # a 2000-alert stream is no 1M stream
    assert set(result["scaling_us_per_alert"]) == {str(n) for n in SCALING_SIZES}
    assert result["scaling_us_per_alert"]["1000000"] is None
    for key in ("raw_alerts_per_s", "e2e_alerts_per_s", "e2e_ratio_vs_raw", "p50_latency_ms", "p99_latency_ms"):
        assert result[key] is None  # skipped, never made up
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert report["core_aitads"][0]["alerts"] == report["core_aitads"][0]["decisions"] == len(load_base().rows)
    # each core run beside the same core without the compiled build
    assert report["core_aitads_pure"][0]["compiled"] == [] == report["core_synthetic_pure"][0]["compiled"]
    assert report["core_aitads_pure"][0]["decisions"] == report["core_aitads"][0]["decisions"]
    assert _is_number(report["result"]["core_alerts_per_s_aitads_pure"])
    assert any("skipped" in note for note in report["notes"])
    assert not list(tmp_path.glob("*.csv"))  # generated inputs are cleaned up


@pytest.mark.integration
def test_kafka_phase_on_the_embedded_broker(tmp_path: Path) -> None:
    cfg = Config(runs=1, e2e_alerts=600, latency_seconds=2, latency_dump=True, out=tmp_path)
    report = bench_run.run(cfg, phases=("kafka",))
    result = report.result
    assert _is_number(result["raw_alerts_per_s"]) and _is_number(result["e2e_alerts_per_s"])
    assert result["e2e_ratio_vs_raw"] == pytest.approx(result["e2e_alerts_per_s"] / result["raw_alerts_per_s"], 0.01)
    # the worker's Kafka traffic without its work drained the same records beside the raw run
    assert len(report.plumbing) == 1 and report.plumbing[0] > 0
    assert report.plumbing_cpu[0]["pipeline"] > 0
    assert result["plumbing_ratio_vs_raw"] == pytest.approx(report.plumbing[0] / report.raw[0], abs=0.001)
    latency = report.latency[0]
    assert latency["decided"] == latency["sent"] >= 100
    assert 0 < latency["on_arrival"] <= latency["sent"]
    assert 0 <= result["p50_latency_ms"] <= result["p99_latency_ms"]
    floor = report.raw_latency[0]  # the raw pipeline at the same rate: every record timed
    assert floor["rate"] == latency["rate"] and floor["records"] == latency["sent"]
    assert 0 <= floor["p50_ms"] <= floor["p99_ms"]
    dumped = (tmp_path / "kafka" / "latency-1.tsv").read_text().splitlines()
    assert dumped[0] == "due_s\tlatency_ms\tdecode_ms\tcorrelate_ms\tdeliver_ms"
    assert len(dumped) == 1 + latency["on_arrival"] and all(line.count("\t") == 4 for line in dumped)
    due = [float(line.split("\t")[0]) for line in dumped[1:]]
    assert due == sorted(due) and 0 <= due[0] and due[-1] <= cfg.latency_seconds + 1
    ms = [float(line.split("\t")[1]) for line in dumped[1:]]
    assert percentile(ms, 0.5) == pytest.approx(result["p50_latency_ms"], abs=0.1)
    assert report.worker_peak_rss_mb and all(mb > 0 for mb in report.worker_peak_rss_mb)


def test_the_raw_pipeline_refuses_an_unknown_shape_before_connecting() -> None:
    stop = asyncio.Event()
    with pytest.raises(ValueError, match="unknown shape 'fast' \\(shapes: raw, plumbing\\)"):
        asyncio.run(rawpipe_run("127.0.0.1:1", "in", "out", {0: 0}, stop, shape="fast"))


def test_arrivals_note_each_alert_of_the_run_once_by_position() -> None:
    arrived = Arrivals(["a", "b", "c"])
    arrived.add("b", 2.0, "first")
    arrived.add("b", 9.0, "again")  # a later copy of a decision: the first arrival counts
    arrived.add("z", 3.0)  # not of this run
    assert (arrived.count, arrived.complete(), arrived.extra) == (1, False, [None, "first", None])
    arrived.add("a", 1.5)
    arrived.add("c", 4.0)
    assert arrived.complete() and arrived.at == [1.5, 2.0, 4.0]
    assert arrived.latencies_ms([1.0, 1.0, 1.0], [0, 2]) == [500.0, 3000.0]


def test_a_failed_phase_leaves_its_figures_null_and_the_exit_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("no worker today")

    monkeypatch.setattr(bench_run, "_state_phase", broken)
    monkeypatch.setattr(bench_run, "_core_phase", lambda *args: None)
    for name, value in {"BENCH_RUNS": "1", "BENCH_SKIP_KAFKA": "1", "BENCH_OUT": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    assert bench_run.main([]) == 1
    result = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert tuple(result) == KEYS and result["state_bytes_per_asset"] is None
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert report["failed"] == ["state"] and any("no worker today" in n for n in report["notes"])


def test_alerts_due_on_arrival_are_found_without_kafka() -> None:
    """With several input partitions the latency harness finds the alerts decided as they are
    taken in by running the worker's engine over the records; most are (duplicates, joins),
    the ones waiting for a window are not, and a record is never counted twice."""
    from bench.pipeline import KafkaBench, due_on_arrival

    records = kafka_records(load_base(), 0, 2_000, run="due")
    due = due_on_arrival(KafkaBench("127.0.0.1:1", Path("/nonexistent"), prefix="t").env(), records)
    assert due <= set(records.ids)
    assert 0.5 * len(records) < len(due) < len(records)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BENCH_LATENCY_RATE", "fast", "BENCH_LATENCY_RATE must be a whole number >= 0, got 'fast'"),
        ("BENCH_LATENCY_RATE", "-5", "BENCH_LATENCY_RATE must be a whole number >= 0"),
        ("BENCH_RUNS", "0", "BENCH_RUNS must be a whole number >= 1, got '0'"),
        ("BENCH_E2E_ALERTS", "1e5", "BENCH_E2E_ALERTS must be a whole number >= 1, got '1e5'"),
        ("BENCH_INPUT_PARTITIONS", "4 ünïts", "BENCH_INPUT_PARTITIONS must be a whole number >= 1"),
        ("BENCH_PHASES", "core,warp", "BENCH_PHASES: unknown phase 'warp' (phases: core, state, kafka)"),
    ],
)
def test_unusable_settings_stop_before_measuring_with_a_clear_message(
    name: str,
    value: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(bench_run, "run", lambda *args, **kwargs: pytest.fail("it measured"))
    monkeypatch.setenv("BENCH_OUT", str(tmp_path))
    monkeypatch.setenv(name, value)
    assert bench_run.main([]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and not captured.out
    assert not (tmp_path / "report.json").exists()
