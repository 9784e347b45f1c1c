"""`SOCNOC_*` settings: parsing, validation, secrets, and what reaches aiokafka."""

from __future__ import annotations

import ssl
from datetime import timedelta

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from streams.decode_stage import SourceClock
from streams.kafka import client_options, topic_specs
from streams.settings import InputSpec, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SOCNOC_"):
            monkeypatch.delenv(key)


def test_defaults_and_every_field_documented() -> None:
    settings = Settings()
    assert settings.kafka_bootstrap is None
    assert settings.inputs == {"soc.alerts": InputSpec(), "noc.events": InputSpec()}
    assert settings.idle_timeout == timedelta(seconds=30)
    assert all(field.description for field in Settings.model_fields.values())
    with pytest.raises(ValidationError):
        settings.partitions = 3  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30), ("2.5", 2.5), ("500ms", 0.5), ("5m", 300), ("1h", 3600), ("PT45S", 45)]
)
def test_durations(monkeypatch: pytest.MonkeyPatch, text: str, seconds: float) -> None:
    monkeypatch.setenv("SOCNOC_IDLE_TIMEOUT", text)
    assert Settings().idle_timeout == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0", "0.5ms", "11s", "-1", "soon", "nan", ""])
def test_a_fetch_wait_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("SOCNOC_KAFKA_FETCH_WAIT", text)
    with pytest.raises(ValidationError, match="kafka_fetch_wait"):
        Settings()


async def test_the_fetch_wait_reaches_every_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    """10 ms by default (Tansu holds a fetch for the whole wait); a consumer that need not
    hurry (the inventory reader, the checkpoint reader) waits at least its own floor."""
    from streams.kafka import make_consumer

    monkeypatch.setenv("SOCNOC_KAFKA_BOOTSTRAP", "k1:9092")
    cases = [(None, 0, 10), ("500ms", 0, 500), ("500ms", 250, 500), ("10ms", 0, 10), ("10ms", 250, 250)]
    for wait, floor, expected in cases:
        if wait is not None:
            monkeypatch.setenv("SOCNOC_KAFKA_FETCH_WAIT", wait)
        consumer = make_consumer(Settings(), name="x", group=None, fetch_wait_floor_ms=floor)
        try:
            assert consumer._fetch_max_wait_ms == expected, (wait, floor)
        finally:
            await consumer.stop()


@pytest.mark.parametrize("text", ["0", "5ms", "2m", "-1", "soon", "1e400", ""])
def test_a_handoff_idle_bound_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("SOCNOC_HANDOFF_IDLE", text)
    with pytest.raises(ValidationError, match="handoff_idle"):
        Settings()


def test_the_handoff_idle_bound_reaches_the_correlate_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.correlate_stage import CorrelateStage
    from streams.worker import Worker

    assert Settings().handoff_idle == timedelta(milliseconds=250)
    monkeypatch.setenv("SOCNOC_HANDOFF_IDLE", "3s")
    stage = next(s for s in Worker(Settings()).stages if isinstance(s, CorrelateStage))
    assert stage._idle_s == 3.0


def test_inputs_from_json_and_strict_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SOCNOC_INPUTS", '{"zbx": {"format": "zabbix"}, "csv": {"format": "csv", "map": "time=t"}}'
    )
    settings = Settings()
    assert settings.inputs["csv"].options() == {"map": "time=t"}
    monkeypatch.setenv("SOCNOC_INPUTS", '{"zbx": {"fromat": "zabbix"}}')
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("SOCNOC_INPUTS", "{}")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("SOCNOC_INPUTS")
    monkeypatch.setenv("SOCNOC_DEFAULT_TZ", "Mars/Olympus")
    with pytest.raises(ValidationError):
        Settings()


def test_sasl_and_tls_pass_through_and_secrets_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCNOC_KAFKA_BOOTSTRAP", "k1:9093,k2:9093")
    monkeypatch.setenv("SOCNOC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SOCNOC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SOCNOC_KAFKA_SASL_USERNAME", "socnoc")
    monkeypatch.setenv("SOCNOC_KAFKA_SASL_PASSWORD", "hunter2-very-secret")
    settings = Settings()
    assert "hunter2" not in repr(settings)
    opts = client_options(settings)
    assert opts["bootstrap_servers"] == "k1:9093,k2:9093"
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "socnoc"
    assert opts["sasl_plain_password"] == "hunter2-very-secret"
    assert isinstance(opts["ssl_context"], ssl.SSLContext)


def test_plaintext_has_no_tls_or_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCNOC_KAFKA_BOOTSTRAP", "localhost:9092")
    opts = client_options(Settings())
    assert "ssl_context" not in opts and "sasl_mechanism" not in opts


def test_topics_socnoc_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCNOC_APP_ID", "prod")
    specs = {s.name: s for s in topic_specs(Settings())}
    assert {"soc.alerts", "noc.events", "prod.by-asset", "prod.checkpoints", "incidents"} <= set(specs)
    assert ("cleanup.policy", "compact") in specs["ctx.assets"].config
    assert ("cleanup.policy", "compact") in specs["prod.checkpoints"].config
    # older checkpoints outlive compaction for ten intervals: a corrupt newest one has a fallback
    assert ("min.compaction.lag.ms", "60000") in specs["prod.checkpoints"].config
    monkeypatch.setenv("SOCNOC_CHECKPOINT_INTERVAL", "30s")
    slow = {s.name: s for s in topic_specs(Settings())}
    assert ("min.compaction.lag.ms", "300000") in slow["prod.checkpoints"].config


def test_context_topics_are_created_with_their_own_partition_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Context topics are low-volume and in every fetch of the decode consumers: one partition
    each unless told otherwise; every other topic gets `SOCNOC_PARTITIONS`."""
    context = {"ctx.assets", "ctx.changes", "ctx.feedback"}
    specs = {s.name: s.partitions for s in topic_specs(Settings())}
    assert {name: specs[name] for name in context} == dict.fromkeys(context, 1)
    assert {n for name, n in specs.items() if name not in context} == {8}
    monkeypatch.setenv("SOCNOC_CONTEXT_PARTITIONS", "3")
    monkeypatch.setenv("SOCNOC_PARTITIONS", "12")
    specs = {s.name: s.partitions for s in topic_specs(Settings())}
    assert {name: specs[name] for name in context} == dict.fromkeys(context, 3)
    assert {n for name, n in specs.items() if name not in context} == {12}
    monkeypatch.setenv("SOCNOC_CONTEXT_PARTITIONS", "0")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("bad", ["0", "-0.1", "1.5", "a tenth", ""])
def test_a_checkpoint_share_outside_0_to_1_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("SOCNOC_CHECKPOINT_MAX_SHARE", bad)
    with pytest.raises(ValidationError, match="checkpoint_max_share"):
        Settings()
    monkeypatch.setenv("SOCNOC_CHECKPOINT_MAX_SHARE", "1")
    assert Settings().checkpoint_max_share == 1.0


def test_source_clock_ticks_progress_then_idleness() -> None:
    clock = SourceClock(last_record=100.0, last_tick=100.0)
    assert clock.due(100.5, idle_after=30, quiet_after=10, wall=5e9) is None  # nothing seen yet
    clock.observe(100.6, 1_000.0)
    assert clock.due(100.7, idle_after=30, quiet_after=10, wall=5e9) is None  # at most one tick a second
    tick = clock.due(101.5, idle_after=30, quiet_after=10, wall=5e9)
    assert tick is not None and tick.watermark == 1_000.0 and not tick.idle
    clock.ticked(101.5, tick)
    assert clock.due(103.0, idle_after=30, quiet_after=10, wall=5e9) is None  # no progress since
    idle = clock.due(130.6, idle_after=30, quiet_after=10, wall=5e9)
    assert idle is not None and idle.idle and idle.watermark == 5e9 - 30
    clock.ticked(130.6, idle)
    assert clock.due(140.0, idle_after=30, quiet_after=10, wall=5e9) is None
    assert clock.due(160.6, idle_after=30, quiet_after=10, wall=5e9 + 30) is not None  # follows the wall clock
    clock.observe(161.0, None)  # a record (not an alert) ends idleness
    assert clock.due(162.0, idle_after=30, quiet_after=10, wall=5e9) is None


def test_source_clock_says_once_when_a_source_went_quiet() -> None:
    clock = SourceClock(last_record=100.0, last_tick=100.0)
    kw = {"idle_after": 30.0, "quiet_after": 0.5, "wall": 5e9}
    assert clock.due(101.0, **kw, high=0) is None  # never sent anything: nobody waits for it
    clock.observe(101.0, 1_000.0)
    clock.next_offset = 10
    progress = clock.due(101.2, **kw, high=10)
    assert progress is not None and not progress.quiet  # progress (a second on)
    clock.ticked(101.2, progress)
    assert clock.due(101.4, **kw, high=10) is None  # not silent long enough
    assert clock.due(101.6, **kw, high=12) is None  # silent, but records are still queued
    assert clock.due(101.6, **kw, high=None) is None  # unknown end: not quiet either
    quiet = clock.due(101.6, **kw, high=10)
    assert quiet is not None and quiet.quiet and not quiet.idle and quiet.watermark == 1_000.0
    clock.ticked(101.6, quiet)
    assert clock.due(102.5, **kw, high=10) is None  # once
    clock.observe(103.0, 1_001.0)
    clock.next_offset = 11
    progress = clock.due(103.2, **kw, high=11)
    assert progress is not None and not progress.quiet  # sending again
    clock.ticked(103.2, progress)
    again = clock.due(103.6, **kw, high=11)
    assert again is not None and again.quiet and again.watermark == 1_001.0


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`SOCNOC_{n.upper()}`" not in readme]
    assert not missing, f"README lacks {missing}"


def test_team_topics_are_created_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCNOC_TEAM_TOPICS", '{"soc": "incidents.soc", "noc": "incidents.noc", "*": "incidents"}')
    settings = Settings()
    # the main topic is not a copy target, even when a route names it
    assert settings.team_topic_names() == ["incidents.noc", "incidents.soc"]
    assert {"incidents.soc", "incidents.noc"} <= {s.name for s in topic_specs(settings)}
    too_long = '{"soc": "' + "a" * 250 + '"}'
    for bad in ('{"soc": "has space"}', '{"": "x"}', '{"soc": ""}', '{"soc": 3}', '["soc"]', "{", too_long):
        monkeypatch.setenv("SOCNOC_TEAM_TOPICS", bad)
        with pytest.raises((ValidationError, SettingsError)):
            Settings()


@pytest.mark.parametrize(
    ("value", "stages"),
    [("decode", ("decode",)), (" correlate , decode ", ("correlate", "decode")), ('["correlate"]', ("correlate",))],
)
def test_stages_are_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch, value: str, stages: tuple[str, ...]
) -> None:
    monkeypatch.setenv("SOCNOC_STAGES", value)
    assert Settings().stages == stages


@pytest.mark.parametrize("value", ["", " , ", "decode,decode", "decoder", '["decode", 3]', "[", "{}"])
def test_bad_stages_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOCNOC_STAGES", value)
    with pytest.raises((ValidationError, SettingsError)):
        Settings()
