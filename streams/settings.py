"""The worker's settings: one frozen class read from `SOCNOC_*` environment variables.

Built once in `main()` (`Settings()`), validated strictly and passed down; never read at
import time. Durations take seconds (`30`, `2.5`) or a unit (`500ms`, `30s`, `5m`, `1h`) or
ISO 8601 (`PT30S`). Secrets are `SecretStr` and never appear in `repr` or logs.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "InputSpec", "Duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def parse_duration(value: Any) -> Any:
    """Seconds or `<number><ms|s|m|h|d>` -> timedelta; anything else is left to pydantic."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if isinstance(value, str):
            match = _DURATION.match(value)
            if match:
                return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
    except OverflowError:  # not a ValueError, so pydantic would let it escape
        raise ValueError(f"duration {str(value)[:24]!r} is out of range") from None
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class InputSpec(BaseModel):
    """How the records of one input topic are decoded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = Field(
        default="auto",
        description="Adapter name (schemas/adapters/registry.py), or `auto` for JSON formats. "
        "A record's `socnoc-format` header overrides it.",
    )
    map: str | None = Field(default=None, description="`--map` spec for the csv/jsonl formats.")
    columns: str | None = Field(default=None, description="CSV header line for csv/aitads.")

    def options(self) -> dict[str, str]:
        """Adapter options."""
        opts: dict[str, str] = {}
        if self.map is not None:
            opts["map"] = self.map
        if self.columns is not None:
            opts["columns"] = self.columns
        return opts


def _json_list(value: str) -> object:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not a JSON list: {exc}") from None


def _default_inputs() -> dict[str, InputSpec]:
    return {"soc.alerts": InputSpec(), "noc.events": InputSpec()}


class Settings(BaseSettings):
    """Every knob of `socnoc worker` and `socnoc run` (environment variables `SOCNOC_<NAME>`)."""

    model_config = SettingsConfigDict(env_prefix="SOCNOC_", frozen=True, extra="forbid")

    # -- Kafka connection --------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers, `host:port[,host:port]`. Unset: `socnoc run` "
        "starts the embedded broker; `socnoc worker` refuses to start.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="aiokafka `security_protocol`."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle (PEM) for TLS.")
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS."
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Client key (PEM).")
    kafka_ssl_password: SecretStr | None = Field(
        default=None, description="Password of the client key, if encrypted."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Verify the broker's host name against its certificate."
    )
    kafka_client_id: str = Field(default="socnoc", description="Client id prefix in broker logs.")
    kafka_fetch_wait: Duration = Field(
        default=timedelta(milliseconds=10),
        ge=timedelta(milliseconds=1),
        le=timedelta(seconds=10),
        description="How long the broker may hold a consumer's fetch open when it has no "
        "records yet. Apache Kafka and Redpanda answer as soon as a record arrives, so set "
        "`500ms` there: an idle worker then sends a few fetches a second instead of ~70 per "
        "consumer. The embedded Tansu broker holds every fetch for the whole wait, records or "
        "not, so each hop through it takes this long: keep the default with it.",
    )
    kafka_retry_max: Duration = Field(
        default=timedelta(seconds=30),
        description="Longest wait between reconnection attempts to an unreachable cluster "
        "(exponential backoff from 0.5 s).",
    )

    # -- consumer groups ---------------------------------------------------------------
    app_id: str = Field(
        default="socnoc",
        description="Prefix of the consumer groups (`<app_id>-decode`, `<app_id>-correlate`) "
        "and of the internal topics.",
    )
    group_session_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="Consumer group session timeout: how long a dead worker keeps its "
        "partitions. Tansu needs about half of it to form a group.",
    )
    group_heartbeat_interval: Duration = Field(
        default=timedelta(seconds=1), description="Consumer group heartbeat interval."
    )
    group_rebalance_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="How long a rebalance waits for members to checkpoint revoked partitions.",
    )

    # -- topics ------------------------------------------------------------------------
    inputs: dict[str, InputSpec] = Field(
        default_factory=_default_inputs,
        description='Alert input topics and their formats, as JSON: '
        '`{"soc.alerts": {"format": "auto"}, "noc.events": {"format": "zabbix"}}`.',
    )
    assets_topic: str = Field(default="ctx.assets", description="Inventory (compacted).")
    changes_topic: str = Field(default="ctx.changes", description="Change/maintenance windows.")
    feedback_topic: str = Field(default="ctx.feedback", description="Analyst verdicts.")
    decisions_topic: str = Field(
        default="alerts.decisions", description="One decision per input alert, keyed by alert id."
    )
    incidents_topic: str = Field(
        default="incidents", description="Incident lifecycle events, keyed by incident id."
    )
    dlq_topic: str = Field(
        default="alerts.dlq", description="Dead letters: undecodable records with a reason."
    )
    publish_decisions: bool = Field(
        default=True, description="Publish every decision to the decisions topic (audit)."
    )
    team_topics: dict[str, str] = Field(
        default_factory=dict,
        description='Per-team incident topics, as JSON: `{"soc": "incidents.soc", "noc": '
        '"incidents.noc"}`. Each incident event also goes to the topic of every owner team '
        '(the key `*` takes incidents none of whose owners has a topic). Every incident record '
        "carries the headers `socnoc-owners` (comma-separated teams), `socnoc-kind` and "
        "`socnoc-event`, for consumers that filter instead.",
    )
    partitions: int = Field(
        default=8,
        ge=1,
        description="Partitions of the topics socnoc creates (the internal by-asset topic "
        "bounds how many workers share the correlation), except the context topics.",
    )
    context_partitions: int = Field(
        default=1,
        ge=1,
        description="Partitions of the context topics socnoc creates (`ctx.assets`, "
        "`ctx.changes`, `ctx.feedback`): low-volume and compacted, and each partition of theirs a "
        "decode consumer is assigned goes into every one of its fetches, records or not.",
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of the topics socnoc creates."
    )
    create_topics: bool = Field(
        default=True, description="Create missing topics at start (off: they must exist)."
    )

    # -- processing --------------------------------------------------------------------
    partition_by: Literal["single", "asset"] = Field(
        default="single",
        description="How alerts are spread over the correlation partitions. `single`: every "
        "alert goes to partition 0, so one engine sees every asset and the stream decides "
        "exactly like `socnoc replay` (other workers decode and stand by). `asset`: keyed by "
        "canonical asset id, so workers share the correlation, but cross-asset grouping "
        "(campaigns, topology, security+ops corroboration) only sees assets of the same "
        "partition.",
    )
    stages: Annotated[tuple[Literal["decode", "correlate"], ...], NoDecode] = Field(
        default=("decode", "correlate"),
        description="The stages this worker runs, comma-separated: `decode` (read, validate and "
        "key the inputs) and `correlate` (the engines and the outputs). Workers running one "
        "stage each put the two on separate processes (a core each) and scale them apart; every "
        "stage needs at least one worker of the app.",
    )
    engine: Literal["socnoc", "naive"] = Field(
        default="socnoc", description="Correlator: the engine, or the naive baseline."
    )
    default_rules: bool = Field(default=True, description="Load the shipped default rule pack.")
    rules: tuple[Path, ...] = Field(
        default=(), description="Extra rule files, as a JSON list of paths."
    )
    batch_max_records: int = Field(
        default=2000, ge=1, description="Most records taken from Kafka in one batch."
    )
    handoff: Literal["memory", "verify", "off"] = Field(
        default="memory",
        description="A worker running both stages hands what its decode stage wrote (once the "
        "broker acknowledged it, with its offset) to its correlate stage, which processes it "
        "if it is its partition's next offset. `memory`: while that keeps up, the correlate "
        "stage stops fetching the partition (it fetches again at a gap, another decoder's "
        "records, or after `handoff_idle` without a record handed over). `verify`: it goes on "
        "fetching every record and checks it is the one processed (a mismatch restarts the "
        "stage from its checkpoints, with the hand-off off). `off`: everything is read back "
        "from Kafka.",
    )
    handoff_idle: Duration = Field(
        default=timedelta(milliseconds=250),
        ge=timedelta(milliseconds=10),
        le=timedelta(minutes=1),
        description="`handoff=memory`: after this long with nothing handed over, a partition "
        "whose records come from memory has its end asked (and again every this long while "
        "idle); it is fetched again if the end holds records it has not processed (another "
        "worker's decode stage may be writing to it). Shorter than a decode stall under load, "
        "and what came from memory is read back; longer, and another decoder's records wait "
        "this long when this one is idle.",
    )
    checkpoint_interval: Duration = Field(
        default=timedelta(seconds=5),
        description="How often each partition's correlation state is checkpointed; after a "
        "crash at most this much input is processed again (without repeating outputs). A "
        "partition whose state takes long to encode is checkpointed less often "
        "(`checkpoint_max_share`).",
    )
    checkpoint_max_share: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="The most of its time the correlate stage spends encoding checkpoints (each "
        "one pauses all its partitions): of n partitions it owns, one whose last state took d "
        "seconds of CPU to encode is checkpointed again d * n / this later at the "
        "soonest, never sooner than `checkpoint_interval`, and never later than half of what "
        "compaction keeps older checkpoints (ten intervals, a minute at least: one to fall back "
        "to stays). A state that grows in an alert storm (100,000 assets with alerts waiting in "
        "their windows: ~4 s to encode on a slow core) is then checkpointed every 30 s instead "
        "of every 5 s, when the partition was paused most of the time; after a crash, that much "
        "input is processed again.",
    )
    redelivery_memory: int = Field(
        default=2_000_000,
        ge=1,
        le=100_000_000,
        description="Alert ids each partition's engine remembers as decided: a redelivered "
        "alert among them gets no second decision. About 100 bytes of memory an id.",
    )
    memory_segment_ids: int = Field(
        default=8_192,
        ge=16,
        le=1_000_000,
        description="A checkpoint holds the newest alert ids of the engine's redelivery memory "
        "(up to 2M ids already decided) itself; every this many older ids are written once, as "
        "a segment of their own, so a checkpoint's cost does not grow with the memory.",
    )
    update_interval: Duration = Field(
        default=timedelta(seconds=30),
        description="At most one `updated` event per incident per this much event time (storms are coalesced).",
    )
    reopen_window: Duration = Field(
        default=timedelta(hours=12),
        description="A resolved incident that gets new evidence within this much event time reopens (same id).",
    )
    order_wait: Duration = Field(
        default=timedelta(milliseconds=500),
        description="Alerts are handed to the engine in event-time order across input partitions: "
        "an alert waits until every input partition that is still sending has passed its time. An "
        "input partition silent for this long stops holding the others back (0: as soon as its "
        "records are decoded).",
    )
    idle_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="A partition without input for this long gets its watermark advanced to "
        "wall-clock now minus this timeout, so windows close and quiet incidents resolve.",
    )
    max_record_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Records above this size go to the DLQ."
    )
    dlq_max_raw_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="A dead letter keeps at most this many bytes of the raw record.",
    )
    default_tz: str = Field(
        default="UTC", description="Time zone of timestamps without one (RFC 3164 syslog)."
    )

    # -- HTTP ------------------------------------------------------------------------------
    web_host: str = Field(default="0.0.0.0", description="Address of /metrics and /health.")
    web_port: int = Field(
        default=9464, ge=0, le=65535, description="Port of /metrics and /health (0: any free)."
    )

    @field_validator("default_tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a known time zone") from exc
        return value

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_list(cls, value: object) -> object:
        if isinstance(value, str) and value.lstrip().startswith("["):
            value = _json_list(value)
        elif isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("at least one stage (decode, correlate) is needed")
            if len(set(value)) != len(value):
                raise ValueError(f"a stage named twice in {','.join(map(str, value))}")
        return value

    @field_validator("inputs")
    @classmethod
    def _some_input(cls, value: dict[str, InputSpec]) -> dict[str, InputSpec]:
        if not value:
            raise ValueError("at least one input topic is needed")
        return value

    @field_validator("team_topics")
    @classmethod
    def _team_topic_names(cls, value: dict[str, str]) -> dict[str, str]:
        for team, topic in value.items():
            if not team or not _TOPIC_NAME.fullmatch(topic):
                raise ValueError(
                    f"team {team!r} -> {topic!r}: a team name and a Kafka topic name "
                    "(letters, digits, '.', '_', '-'; at most 249) are needed"
                )
        return value

    def team_topic_names(self) -> list[str]:
        """The distinct per-team incident topics, other than the main incidents topic."""
        return sorted(set(self.team_topics.values()) - {self.incidents_topic})

    def tz(self) -> ZoneInfo:
        """`default_tz` as a zone."""
        return ZoneInfo(self.default_tz)

    def internal_topic(self) -> str:
        """The repartition topic: alerts and context keyed by canonical asset."""
        return f"{self.app_id}.by-asset"

    def checkpoint_topic(self) -> str:
        """Per-partition correlation checkpoints (state + input offset)."""
        return f"{self.app_id}.checkpoints"

    def context_topics(self) -> tuple[str, str, str]:
        """Inventory, change windows and feedback topics."""
        return (self.assets_topic, self.changes_topic, self.feedback_topic)
