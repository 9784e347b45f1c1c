from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemas.models import (
    Alert,
    DeadLetter,
    Decision,
    Disposition,
    Domain,
    IncidentEvent,
    IncidentKind,
    LifecycleEvent,
    Severity,
    TimelineEntry,
)
from streams.metrics import (
    GATEWAY_METRIC_NAMES,
    LATENCY_BUCKETS,
    METRIC_NAMES,
    RUNTIME_METRIC_NAMES,
    SYSLOG_METRIC_NAMES,
    CounterTally,
    GatewayMetrics,
    HistogramTally,
    Metrics,
    SyslogMetrics,
    metrics_app,
    process_registry,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics.create(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    assert got is not None, f"no sample {name}{labels}"
    return got


def decision(disposition: Disposition) -> Decision:
    return Decision(alert_id="a", disposition=disposition, reason="r")


def event(
    kind: LifecycleEvent,
    *,
    owners: tuple[str, ...] = ("netops",),
    first_alert: datetime | None = None,
    resolved_at: datetime | None = None,
    incident_kind: IncidentKind = IncidentKind.OPERATIONAL,
) -> IncidentEvent:
    timeline = ()
    if first_alert is not None:
        timeline = (
            TimelineEntry(time=first_alert + timedelta(seconds=30), asset="sw1", alert_id="2",
                          source="zabbix", signature="s", severity=Severity.HIGH),
            TimelineEntry(time=first_alert, asset="sw1", alert_id="1", source="zabbix",
                          signature="s", severity=Severity.HIGH),
        )
    return IncidentEvent(
        incident_id="inc-1", kind=incident_kind, assets=("sw1",), opened_at=T0,
        updated_at=resolved_at or T0, resolved_at=resolved_at, severity=Severity.HIGH,
        score=70, alert_count=2, owners=owners, event=kind, version=1, timeline=timeline,
    )


def test_every_documented_name_is_exposed(registry: CollectorRegistry) -> None:
    Metrics.create(registry)
    GatewayMetrics.create(registry)
    SyslogMetrics.create(registry)
    families = {f.name for f in registry.collect()}
    for name in METRIC_NAMES + GATEWAY_METRIC_NAMES + SYSLOG_METRIC_NAMES:
        assert name.removesuffix("_total") in families, name
        assert name.startswith("socnoc_")


def test_runtime_collectors_export_the_documented_names() -> None:
    registry = process_registry()
    text = generate_latest(registry).decode()
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    assert exposed == set(RUNTIME_METRIC_NAMES)
    # its own figures: this process has a resident size and at least one open file
    assert value(registry, "process_resident_memory_bytes") > 1_000_000
    assert value(registry, "process_open_fds") >= 1


def test_two_registries_do_not_clash() -> None:
    Metrics.create(CollectorRegistry())
    Metrics.create(CollectorRegistry())


def test_known_label_values_start_at_zero(registry: CollectorRegistry, metrics: Metrics) -> None:
    for disposition in Disposition:
        assert value(registry, "socnoc_decisions_total", disposition=disposition.value) == 0
    assert value(registry, "socnoc_incidents_total", kind="converged", event="opened") == 0
    assert value(registry, "socnoc_rule_reloads_total", result="error") == 0
    assert value(registry, "socnoc_broker_up") == 0


def test_declared_inputs_start_at_zero(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.declare_inputs(["soc.alerts", "noc.events"])
    assert value(registry, "socnoc_input_records_total", topic="noc.events") == 0


def test_alerts_and_dead_letters(registry: CollectorRegistry, metrics: Metrics) -> None:
    alert = Alert(id="1", source="wazuh", domain=Domain.SECURITY, time=T0, asset="h",
                  signature="5710")
    metrics.observe_input("soc.alerts", 2)
    # the decode stage counts alerts in the tally itself (`Decoder.decode_fetched`), keyed
    # by the domain's enum member: a scrape reads its value
    metrics.alerts.counts[(alert.source, alert.domain)] = 1
    metrics.observe_dead_letter(DeadLetter(raw="", topic="soc.alerts", partition=0, offset=1,
                                           error="DecodeError", reason="x", received_at=T0))
    metrics.observe_late()
    assert value(registry, "socnoc_input_records_total", topic="soc.alerts") == 2
    assert value(registry, "socnoc_alerts_total", source="wazuh", domain="security") == 1
    assert value(registry, "socnoc_dlq_records_total", topic="soc.alerts",
                 error="DecodeError") == 1
    assert value(registry, "socnoc_late_events_total") == 1


def test_decisions_latency_and_noise_reduction(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    for _ in range(3):
        metrics.observe_decision(decision(Disposition.NOISE), latency_s=0.004)
    metrics.observe_decision(decision(Disposition.INCIDENT), latency_s=-1.0)  # clock skew
    assert value(registry, "socnoc_decisions_total", disposition="noise") == 3
    assert value(registry, "socnoc_decision_latency_seconds_count") == 4
    assert value(registry, "socnoc_decision_latency_seconds_bucket", le="0.005") == 4
    assert value(registry, "socnoc_decision_latency_seconds_sum") == pytest.approx(0.012)
    metrics.observe_incident_event(event(LifecycleEvent.OPENED))
    assert value(registry, "socnoc_noise_reduction_ratio") == pytest.approx(0.75)


def test_opened_feeds_time_to_detect_and_owners(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    opened = event(LifecycleEvent.OPENED, owners=("netops", "secops"),
                   first_alert=T0 - timedelta(seconds=90))
    metrics.observe_incident_event(opened)
    assert value(registry, "socnoc_incidents_total", kind="operational", event="opened") == 1
    assert value(registry, "socnoc_incidents_by_owner_total", owner="netops",
                 kind="operational") == 1
    assert value(registry, "socnoc_incidents_by_owner_total", owner="secops",
                 kind="operational") == 1
    assert value(registry, "socnoc_time_to_detect_seconds_sum", kind="operational") == 90
    assert value(registry, "socnoc_time_to_detect_seconds_bucket", kind="operational",
                 le="60.0") == 0
    assert value(registry, "socnoc_time_to_detect_seconds_bucket", kind="operational",
                 le="120.0") == 1


def test_unowned_incident_and_alert_after_opening(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_incident_event(event(LifecycleEvent.OPENED, owners=(),
                                         first_alert=T0 + timedelta(seconds=5)))
    assert value(registry, "socnoc_incidents_by_owner_total", owner="unowned",
                 kind="operational") == 1
    assert value(registry, "socnoc_time_to_detect_seconds_sum", kind="operational") == 0


def test_resolved_feeds_open_duration(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.observe_incident_event(event(LifecycleEvent.UPDATED))
    metrics.observe_incident_event(
        event(LifecycleEvent.RESOLVED, resolved_at=T0 + timedelta(minutes=20))
    )
    assert value(registry, "socnoc_incident_open_duration_seconds_sum",
                 kind="operational") == 1200
    assert value(registry, "socnoc_incidents_total", kind="operational", event="updated") == 1
    assert value(registry, "socnoc_noise_reduction_ratio") == 0


def test_observe_outputs_routes_by_type(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.observe_outputs([decision(Disposition.DUPLICATE), event(LifecycleEvent.MERGED)])
    assert value(registry, "socnoc_decisions_total", disposition="duplicate") == 1
    assert value(registry, "socnoc_incidents_total", kind="operational", event="merged") == 1
    assert value(registry, "socnoc_decision_latency_seconds_count") == 0


def test_runtime_gauges(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.set_consumer_lag("noc.events", 3, 42)
    metrics.set_consumer_lag("noc.events", 4, -1)
    assert value(registry, "socnoc_consumer_lag", topic="noc.events", partition="3") == 42
    assert value(registry, "socnoc_consumer_lag", topic="noc.events", partition="4") == 0
    metrics.forget_partition("noc.events", 3)
    metrics.forget_partition("noc.events", 3)
    assert registry.get_sample_value("socnoc_consumer_lag",
                                     {"topic": "noc.events", "partition": "3"}) is None
    metrics.set_state(tracked_assets=10, state_bytes=2048)
    metrics.set_open_incidents(IncidentKind.SECURITY, 2)
    metrics.set_broker_up(True)
    metrics.observe_rule_reload("error")
    metrics.observe_cap_hit("max_assets")
    assert value(registry, "socnoc_tracked_assets") == 10
    assert value(registry, "socnoc_state_bytes") == 2048
    assert value(registry, "socnoc_open_incidents", kind="security") == 2
    assert value(registry, "socnoc_broker_up") == 1
    assert value(registry, "socnoc_rule_reloads_total", result="error") == 1
    assert value(registry, "socnoc_caps_hit_total", cap="max_assets") == 1


def test_gateway_and_syslog_helpers(registry: CollectorRegistry) -> None:
    gateway = GatewayMetrics.create(registry)
    gateway.observe_request("/api/v1/alerts", 401)
    gateway.observe_produced("noc.events", 3)
    assert value(registry, "socnoc_gateway_requests_total", route="/api/v1/alerts",
                 code="401") == 1
    assert value(registry, "socnoc_gateway_records_produced_total", topic="noc.events") == 3


async def test_metrics_endpoint_serves_exposition_format(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_decision(decision(Disposition.NOISE), latency_s=0.1)
    async with TestClient(TestServer(metrics_app(registry))) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "socnoc_decisions" in names
    assert 'socnoc_decisions_total{disposition="noise"} 1.0' in text


def test_tallies_expose_what_prometheus_client_s_own_metrics_would() -> None:
    """The per-alert series are plain-int tallies; scraped, they read exactly like a
    `Counter` and a `Histogram` given the same observations (bar the `_created` series)."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = CounterTally("t_decisions", "help", ("disposition",), registry=ours)
    histogram = HistogramTally("t_latency_seconds", "help", LATENCY_BUCKETS, registry=ours)
    their_counter = Counter("t_decisions", "help", ["disposition"], registry=theirs)
    their_histogram = Histogram("t_latency_seconds", "help", buckets=LATENCY_BUCKETS, registry=theirs)
    counter.declare("noise")
    their_counter.labels(disposition="noise")
    amounts = [0.0, 0.005, 0.0051, *LATENCY_BUCKETS[:-1], 1e-9, 3.0, 1e9, 7.25]
    for i, amount in enumerate(amounts):
        disposition = ("incident", "noise", "suppressed")[i % 3]
        counter.counts[(disposition,)] = counter.value(disposition) + 1
        their_counter.labels(disposition=disposition).inc()
        histogram.observe(amount)
        their_histogram.observe(amount)

    def samples(registry: CollectorRegistry) -> list[tuple[str, list[tuple[str, str]], float]]:
        text = generate_latest(registry).decode()
        return sorted(
            (s.name, sorted(s.labels.items()), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.name.endswith("_created")
        )

    assert samples(ours) == samples(theirs)
    assert counter.value("noise") == len(amounts[1::3]) and counter.value("unknown") == 0
