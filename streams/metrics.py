"""Prometheus metrics of the worker, the gateway and the syslog listener.

Every metric is created by a factory that takes a `CollectorRegistry`, so tests use a fresh
registry and nothing registers at import time. The shell calls the `observe_*` helpers; the
names listed in `METRIC_NAMES` are what dashboards and alert rules may rely on.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Literal

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from schemas.models import (
    DeadLetter,
    Decision,
    Disposition,
    IncidentEvent,
    IncidentKind,
    LifecycleEvent,
)

__all__ = [
    "METRIC_NAMES",
    "GATEWAY_METRIC_NAMES",
    "SYSLOG_METRIC_NAMES",
    "LATENCY_BUCKETS",
    "INCIDENT_TIME_BUCKETS",
    "UNOWNED",
    "Metrics",
    "GatewayMetrics",
    "SyslogMetrics",
    "metrics_app",
    "start_metrics_server",
    "RUNTIME_METRIC_NAMES",
    "process_registry",
]

# Arrival -> decision, in wall-clock seconds: most decisions are due on arrival (ms), the
# rest wait for their window to close (minutes).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
)
# Checkpoint pauses of the correlate stage: milliseconds to seconds.
CHECKPOINT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Event-time durations of incidents: seconds to a day.
INCIDENT_TIME_BUCKETS: tuple[float, ...] = (
    0.0, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    14400.0, 28800.0, 86400.0,
)
UNOWNED = "unowned"

RuleReloadResult = Literal["ok", "error"]

# What the process, platform and GC collectors of prometheus_client export (on Linux), which
# a socnoc process's /metrics carries beside its own: CPU, memory, file descriptors, and the
# garbage collector's work (the worker tunes it: `streams.worker.tune_gc`).
RUNTIME_METRIC_NAMES: tuple[str, ...] = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "python_info",
    "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total",
    "python_gc_collections_total",
)


def process_registry() -> CollectorRegistry:
    """A process's own registry, with its CPU, memory, file descriptors and GC counters (the
    default registry has them; socnoc's processes build their own)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


METRIC_NAMES: tuple[str, ...] = (
    "socnoc_input_records_total",
    "socnoc_alerts_total",
    "socnoc_decisions_total",
    "socnoc_incidents_total",
    "socnoc_incidents_by_owner_total",
    "socnoc_open_incidents",
    "socnoc_noise_reduction_ratio",
    "socnoc_decision_latency_seconds",
    "socnoc_time_to_detect_seconds",
    "socnoc_incident_open_duration_seconds",
    "socnoc_consumer_lag",
    "socnoc_dlq_records_total",
    "socnoc_late_events_total",
    "socnoc_tracked_assets",
    "socnoc_reorder_held_alerts",
    "socnoc_state_bytes",
    "socnoc_broker_up",
    "socnoc_rule_reloads_total",
    "socnoc_caps_hit_total",
    "socnoc_checkpoint_restore_failures_total",
    "socnoc_checkpoint_duration_seconds",
)
GATEWAY_METRIC_NAMES: tuple[str, ...] = (
    "socnoc_gateway_requests_total",
    "socnoc_gateway_records_produced_total",
)
SYSLOG_METRIC_NAMES: tuple[str, ...] = (
    "socnoc_syslog_messages_total",
    "socnoc_syslog_bad_frames_total",
    "socnoc_syslog_dropped_total",
)


class CounterTally(Collector):
    """A labelled counter kept in plain ints, for the series counted once an alert: a
    `Counter` child's `inc()` takes a lock (0.24 µs a call here, a dict increment 0.06).
    Only for a process whose increments and scrapes run on one thread (the worker's event
    loop); scraped, it reads as a `Counter` would (without the `_created` series)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def declare(self, *values: str) -> None:
        """A series that starts at 0 (dashboards and `rate()` see it from the start)."""
        self.counts.setdefault(values, 0)

    def value(self, *values: str) -> int:
        return self.counts.get(values, 0)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, count in self.counts.items():
            family.add_metric(values, count)
        yield family


class HistogramTally(Collector):
    """An unlabelled histogram kept in plain ints, for the same reason and on the same
    condition as `CounterTally` (`Histogram.observe()` 0.53 µs here, this 0.10)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(sorted(b for b in buckets if b != float("inf")))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # `le`: the first bound >= amount
        self.sum += amount

    def collect(self) -> Iterator[Metric]:
        cumulative = list(accumulate(self.counts))
        buckets = [(floatToGoString(b), n) for b, n in zip(self.bounds, cumulative, strict=False)]  # type: ignore[no-untyped-call]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


def _base(name: str) -> str:
    # prometheus_client appends `_total` to counters itself.
    return name.removesuffix("_total")


@dataclass
class Metrics:
    """The worker's metrics; the agents call the `observe_*`/`set_*` helpers only."""

    registry: CollectorRegistry
    input_records: Counter
    alerts: CounterTally
    decisions: CounterTally
    incidents: Counter
    incidents_by_owner: Counter
    open_incidents: Gauge
    noise_reduction: Gauge
    decision_latency: HistogramTally
    time_to_detect: Histogram
    incident_open_duration: Histogram
    consumer_lag: Gauge
    dlq_records: Counter
    late_events: Counter
    tracked_assets: Gauge
    reorder_held: Gauge
    state_bytes: Gauge
    broker_up: Gauge
    rule_reloads: Counter
    caps_hit: Counter
    checkpoint_restore_failures: Counter
    checkpoint_duration: Histogram
    _decided: int = field(default=0, repr=False)
    _opened: int = field(default=0, repr=False)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        """Register every worker metric on `registry` (a fresh one per test)."""
        r = registry
        m = cls(
            registry=r,
            input_records=Counter(
                _base("socnoc_input_records_total"),
                "Records consumed from the input topics, before decoding.",
                ["topic"], registry=r,
            ),
            alerts=CounterTally(
                _base("socnoc_alerts_total"),
                "Alerts decoded from input records, by source tool and domain.",
                ("source", "domain"), registry=r,
            ),
            decisions=CounterTally(
                _base("socnoc_decisions_total"),
                "Decisions made, one per input alert, by disposition.",
                ("disposition",), registry=r,
            ),
            incidents=Counter(
                _base("socnoc_incidents_total"),
                "Incident lifecycle events published, by incident kind and event.",
                ["kind", "event"], registry=r,
            ),
            incidents_by_owner=Counter(
                _base("socnoc_incidents_by_owner_total"),
                "Incidents opened, by owner team (one count per owner) and kind.",
                ["owner", "kind"], registry=r,
            ),
            open_incidents=Gauge(
                "socnoc_open_incidents",
                "Incidents currently open on this worker, by kind.",
                ["kind"], registry=r,
            ),
            noise_reduction=Gauge(
                "socnoc_noise_reduction_ratio",
                "1 - incidents opened / alerts decided, on this worker since start.",
                registry=r,
            ),
            decision_latency=HistogramTally(
                "socnoc_decision_latency_seconds",
                "Wall-clock time from an alert's arrival to its decision.",
                buckets=LATENCY_BUCKETS, registry=r,
            ),
            time_to_detect=Histogram(
                "socnoc_time_to_detect_seconds",
                "Event time from an incident's first alert to its opening, by kind.",
                ["kind"], buckets=INCIDENT_TIME_BUCKETS, registry=r,
            ),
            incident_open_duration=Histogram(
                "socnoc_incident_open_duration_seconds",
                "Event time from an incident's opening to its resolution, by kind.",
                ["kind"], buckets=INCIDENT_TIME_BUCKETS, registry=r,
            ),
            consumer_lag=Gauge(
                "socnoc_consumer_lag",
                "Records behind the partition's high watermark, per consumed partition.",
                ["topic", "partition"], registry=r,
            ),
            dlq_records=Counter(
                _base("socnoc_dlq_records_total"),
                "Records sent to the dead-letter topic, by input topic and error class.",
                ["topic", "error"], registry=r,
            ),
            late_events=Counter(
                _base("socnoc_late_events_total"),
                "Alerts that arrived behind the watermark beyond the allowed lateness.",
                registry=r,
            ),
            tracked_assets=Gauge(
                "socnoc_tracked_assets",
                "Assets whose timeline this worker currently holds.",
                registry=r,
            ),
            reorder_held=Gauge(
                "socnoc_reorder_held_alerts",
                "Alerts held back to keep event-time order across input partitions.",
                registry=r,
            ),
            state_bytes=Gauge(
                "socnoc_state_bytes",
                "Size of this worker's correlation state as last checkpointed (checkpoints and "
                "the memory segments they refer to, compressed), in bytes.",
                registry=r,
            ),
            broker_up=Gauge(
                "socnoc_broker_up",
                "1 while the worker is connected to the Kafka cluster, else 0.",
                registry=r,
            ),
            rule_reloads=Counter(
                _base("socnoc_rule_reloads_total"),
                "Rule pack reloads, by result (ok | error).",
                ["result"], registry=r,
            ),
            caps_hit=Counter(
                _base("socnoc_caps_hit_total"),
                "Times a state size cap was reached and something was evicted or truncated.",
                ["cap"], registry=r,
            ),
            checkpoint_restore_failures=Counter(
                _base("socnoc_checkpoint_restore_failures_total"),
                "Corrupt checkpoints passed over on restore (an older one, or the log from the"
                " start, was used instead), by what was unreadable (envelope | state).",
                ["what"], registry=r,
            ),
            checkpoint_duration=Histogram(
                "socnoc_checkpoint_duration_seconds",
                "How long the correlate stage paused for a checkpoint (outputs acknowledged,"
                " state serialised, checkpoint records acknowledged).",
                buckets=CHECKPOINT_BUCKETS, registry=r,
            ),
        )
        m._initialise_series()
        return m

    def _initialise_series(self) -> None:
        # Known label values start at 0 so rate() and dashboards see series from the start.
        for disposition in Disposition:
            self.decisions.declare(disposition.value)
        for kind in IncidentKind:
            self.open_incidents.labels(kind=kind.value)
            for event in LifecycleEvent:
                self.incidents.labels(kind=kind.value, event=event.value)
        for result in ("ok", "error"):
            self.rule_reloads.labels(result=result)
        # computed when scraped, not set on every decision (the hot path)
        self.noise_reduction.set_function(self._reduction)
        self.broker_up.set(0.0)

    # -- input side --------------------------------------------------------------------

    def declare_inputs(self, topics: Iterable[str]) -> None:
        """Start each input topic's counter at 0, so the first records show as an increase
        (a counter born at 1 looks flat to `rate()`, and `SocnocNoInput` would go pending)."""
        for topic in topics:
            self.input_records.labels(topic=topic)

    def observe_input(self, topic: str, count: int = 1) -> None:
        """Count records consumed from an input topic (garbage included)."""
        self.input_records.labels(topic=topic).inc(count)

    def observe_dead_letter(self, letter: DeadLetter) -> None:
        """Count one record sent to `alerts.dlq` (its `invalid` decision is counted apart)."""
        self.dlq_records.labels(topic=letter.topic, error=letter.error).inc()

    def observe_late(self, count: int = 1) -> None:
        """Count alerts that arrived too late for their window."""
        self.late_events.inc(count)

    # -- output side -------------------------------------------------------------------

    def observe_decision(self, decision: Decision, latency_s: float | None = None) -> None:
        """Count a decision; `latency_s` is wall-clock arrival -> decision, if known."""
        counts = self.decisions.counts
        # (a `StrEnum` member is its value as a label and equal to it as a key; `.value`, a
        # property, would cost more than the rest of this call)
        key = (decision.disposition,)
        counts[key] = counts.get(key, 0) + 1
        if latency_s is not None:
            self.decision_latency.observe(latency_s if latency_s > 0.0 else 0.0)
        self._decided += 1

    def observe_incident_event(self, event: IncidentEvent) -> None:
        """Count a lifecycle event and feed the KPIs: time to detect, time open, owners."""
        kind = event.kind.value
        self.incidents.labels(kind=kind, event=event.event.value).inc()
        if event.event is LifecycleEvent.OPENED:
            self._opened += 1
            for owner in event.owners or (UNOWNED,):
                self.incidents_by_owner.labels(owner=owner, kind=kind).inc()
            first = min((entry.time for entry in event.timeline), default=None)
            if first is not None:
                ttd = (event.opened_at - first).total_seconds()
                self.time_to_detect.labels(kind=kind).observe(max(0.0, ttd))
        elif event.event is LifecycleEvent.RESOLVED and event.resolved_at is not None:
            duration = (event.resolved_at - event.opened_at).total_seconds()
            self.incident_open_duration.labels(kind=kind).observe(max(0.0, duration))

    def observe_outputs(self, outputs: Iterable[Decision | IncidentEvent]) -> None:
        """Count a batch of core outputs whose decision latency is unknown (replay)."""
        for output in outputs:
            if isinstance(output, Decision):
                self.observe_decision(output)
            else:
                self.observe_incident_event(output)

    def _reduction(self) -> float:
        return max(0.0, 1.0 - self._opened / self._decided) if self._decided else 0.0

    # -- runtime state -----------------------------------------------------------------

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """Record a partition's lag (high watermark - position)."""
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a partition's lag series after a rebalance took it away."""
        self.consumer_lag.remove(topic, str(partition))

    def set_reorder_held(self, count: int) -> None:
        """Alerts the correlating partitions hold for event-time order (`streams.reorder`)."""
        self.reorder_held.set(count)

    def set_state(self, *, tracked_assets: int, state_bytes: int) -> None:
        """Record the size of the correlation state."""
        self.tracked_assets.set(tracked_assets)
        self.state_bytes.set(state_bytes)

    def set_open_incidents(self, kind: IncidentKind, count: int) -> None:
        """Record how many incidents of `kind` are open."""
        self.open_incidents.labels(kind=kind.value).set(count)

    def set_broker_up(self, up: bool) -> None:
        """Record whether the Kafka cluster is reachable."""
        self.broker_up.set(1.0 if up else 0.0)

    def observe_rule_reload(self, result: RuleReloadResult) -> None:
        """Count a rule reload attempt."""
        self.rule_reloads.labels(result=result).inc()

    def observe_cap_hit(self, cap: str, count: int = 1) -> None:
        """Count a state cap being reached (`cap` names the setting, e.g. max_assets)."""
        self.caps_hit.labels(cap=cap).inc(count)

    def observe_checkpoint(self, seconds: float) -> None:
        """A checkpoint paused the correlate stage this long."""
        self.checkpoint_duration.observe(seconds)

    def observe_checkpoint_restore_failure(self, what: str) -> None:
        """Count a corrupt checkpoint passed over on restore (`what`: envelope | state |
        memory, a memory segment it refers to missing or corrupt)."""
        self.checkpoint_restore_failures.labels(what=what).inc()


@dataclass(frozen=True)
class GatewayMetrics:
    """Metrics of the HTTP ingest gateway."""

    requests: Counter
    produced: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GatewayMetrics:
        """Register the gateway metrics on `registry`."""
        return cls(
            requests=Counter(
                _base("socnoc_gateway_requests_total"),
                "HTTP requests answered by the gateway, by route and status code.",
                ["route", "code"], registry=registry,
            ),
            produced=Counter(
                _base("socnoc_gateway_records_produced_total"),
                "Records the gateway produced to Kafka, by topic.",
                ["topic"], registry=registry,
            ),
        )

    def observe_request(self, route: str, code: int) -> None:
        """Count an answered request."""
        self.requests.labels(route=route, code=str(code)).inc()

    def observe_produced(self, topic: str, count: int = 1) -> None:
        """Count records produced."""
        self.produced.labels(topic=topic).inc(count)


@dataclass(frozen=True)
class SyslogMetrics:
    """Metrics of the syslog listener."""

    messages: Counter
    bad_frames: Counter
    dropped: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SyslogMetrics:
        """Register the syslog listener metrics on `registry`."""
        return cls(
            messages=Counter(
                _base("socnoc_syslog_messages_total"),
                "Syslog messages received and produced to Kafka, by transport.",
                ["transport"], registry=registry,
            ),
            bad_frames=Counter(
                _base("socnoc_syslog_bad_frames_total"),
                "Syslog frames rejected (bad framing, oversize, empty), by transport and reason.",
                ["transport", "reason"], registry=registry,
            ),
            dropped=Counter(
                _base("socnoc_syslog_dropped_total"),
                "Syslog messages dropped because Kafka could not take them in time.",
                ["transport"], registry=registry,
            ),
        )


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """An aiohttp app serving `registry` at GET /metrics (text exposition format)."""

    async def handle(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app


async def start_metrics_server(
    registry: CollectorRegistry, host: str, port: int
) -> web.AppRunner:
    """Serve /metrics on host:port; call `await runner.cleanup()` to stop."""
    runner = web.AppRunner(metrics_app(registry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
