"""`SOCNOC_*` settings: parsing, validation, secrets, and what reaches aiokafka."""

from __future__ import annotations

import ssl
from datetime import timedelta

import pytest
from pydantic import ValidationError

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


def test_source_clock_ticks_progress_then_idleness() -> None:
    clock = SourceClock(last_record=100.0, last_tick=100.0)
    assert clock.due(100.5, idle_after=30, wall=5e9) is None  # nothing seen yet
    clock.observe(100.6, 1_000.0)
    assert clock.due(100.7, idle_after=30, wall=5e9) is None  # at most one tick a second
    tick = clock.due(101.5, idle_after=30, wall=5e9)
    assert tick is not None and tick.watermark == 1_000.0 and not tick.idle
    clock.ticked(101.5, tick)
    assert clock.due(103.0, idle_after=30, wall=5e9) is None  # no progress since
    idle = clock.due(130.6, idle_after=30, wall=5e9)
    assert idle is not None and idle.idle and idle.watermark == 5e9 - 30
    clock.ticked(130.6, idle)
    assert clock.due(140.0, idle_after=30, wall=5e9) is None
    assert clock.due(160.6, idle_after=30, wall=5e9 + 30) is not None  # follows the wall clock
    clock.observe(161.0, None)  # a record (not an alert) ends idleness
    assert clock.due(162.0, idle_after=30, wall=5e9) is None


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`SOCNOC_{n.upper()}`" not in readme]
    assert not missing, f"README lacks {missing}"
