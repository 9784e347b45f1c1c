"""The HTTP gateway against a real embedded broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from schemas.models import IncidentEvent, IncidentKind, LifecycleEvent, Severity, TimelineEntry
from streams.gateway import Gateway, GatewayConfig
from streams.incident_view import IncidentFeed, IncidentView
from streams.kafka_sink import KafkaSink
from streams.metrics import GatewayMetrics
from tests.ingest.conftest import Broker, consume, free_port

TOKEN = "s3cret-token-for-tests-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4", "status": "firing", "receiver": "socnoc", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am.example", "alerts": list(alerts),
    }


def am_alert(name: str = "HostDown", instance: str = "sw1:9100", **labels: str
             ) -> dict[str, Any]:
    return {
        "status": "firing", "labels": {"alertname": name, "instance": instance, **labels},
        "annotations": {"summary": f"{name} on {instance}"},
        "startsAt": "2024-05-01T12:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prom.example/graph", "fingerprint": "abc123",
    }


class Harness:
    def __init__(self, client: TestClient[Any, Any], gateway: Gateway, registry: CollectorRegistry
                 ) -> None:
        self.client = client
        self.gateway = gateway
        self.registry = registry

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None
                   ) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        response = await self.client.post(
            path, data=data, headers={**AUTH, "Content-Type": "application/json",
                                      **(headers or {})})
        return response.status, await response.json()

    async def get(self, path: str, headers: dict[str, str] | None = None
                  ) -> tuple[int, dict[str, Any]]:
        response = await self.client.get(path, headers=AUTH if headers is None else headers)
        return response.status, await response.json()


async def make_harness(bootstrap: str, **config: Any) -> AsyncIterator[Harness]:
    registry = CollectorRegistry()
    sink = KafkaSink(bootstrap, timeout_s=1.0, retry_s=0.2, probe_s=0.5)
    await sink.start()
    view = IncidentView()
    feed = IncidentFeed(view, bootstrap=bootstrap, topic="incidents", retry_s=0.2)
    await feed.start()
    gateway = Gateway(GatewayConfig(token=TOKEN, **config), sink, view,
                      GatewayMetrics.create(registry))
    client: TestClient[Any, Any] = TestClient(TestServer(gateway.app()))
    await client.start_server()
    try:
        yield Harness(client, gateway, registry)
    finally:
        await client.close()
        await feed.stop()
        await sink.stop()


@pytest.fixture
async def gw(broker: Broker) -> AsyncIterator[Harness]:
    async for harness in make_harness(broker.bootstrap, max_body_bytes=64 * 1024):
        assert await harness.gateway.sink.wait_up(10), "gateway never connected to the broker"
        yield harness


async def test_health_is_public_and_reports_kafka(gw: Harness) -> None:
    assert await gw.get("/healthz", headers={}) == (200, {"status": "ok", "kafka": "up"})
    assert await gw.get("/readyz", headers={}) == (200, {"status": "ready"})


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer wrong-token-of-some-length"}, "invalid bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "missing bearer token"),
        ({"Authorization": "Bearer "}, "missing bearer token"),
    ],
)
async def test_every_api_route_needs_the_token(
    gw: Harness, headers: dict[str, str], detail: str
) -> None:
    for method, path in [("POST", "/api/v1/alertmanager"), ("POST", "/api/v1/alerts"),
                         ("GET", "/api/v1/incidents"), ("GET", "/api/v1/incidents/x")]:
        response = await gw.client.request(method, path, data=b"{}", headers=headers)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="socnoc"'
        assert await response.json() == {"error": "unauthorized", "detail": detail}
    assert gw.registry.get_sample_value(
        "socnoc_gateway_requests_total", {"route": "/api/v1/alerts", "code": "401"}) == 1


async def test_oversize_bodies_get_413(gw: Harness) -> None:
    big = orjson.dumps(webhook(*[am_alert(instance=f"h{i}:9100") for i in range(400)]))
    assert len(big) > 64 * 1024
    status, body = await gw.post("/api/v1/alertmanager", big)
    assert status == 413
    assert body["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]

    response = await gw.client.post("/api/v1/alerts", data=chunks(), headers=AUTH)
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/v1/alertmanager", b"{not json", 400, "invalid_json"),
        ("/api/v1/alertmanager", b"\xff\xfe\x00garbage", 400, "invalid_json"),
        ("/api/v1/alertmanager", b"", 400, "empty_body"),
        ("/api/v1/alertmanager", b"[1, 2]", 400, "invalid_payload"),
        ("/api/v1/alertmanager", b'{"version": "4"}', 400, "invalid_payload"),
        ("/api/v1/alertmanager", b'{"version": "3", "alerts": []}', 400, "invalid_payload"),
        ("/api/v1/alerts", b"{oops", 400, "invalid_json"),
        ("/api/v1/alerts", b"[]", 400, "invalid_payload"),
        ("/api/v1/alerts", b'"a string"', 400, "invalid_alerts"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    gw: Harness, path: str, body: bytes, status: int, error: str
) -> None:
    got_status, got = await gw.post(path, body)
    assert (got_status, got["error"]) == (status, error)
    assert got["detail"]


async def test_wrong_media_type_and_unknown_route(gw: Harness) -> None:
    status, body = await gw.post("/api/v1/alerts", b"a=b",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body["error"]) == (415, "unsupported_media_type")
    status, body = await gw.get("/api/v1/nope")
    assert (status, body["error"]) == (404, "not_found")
    response = await gw.client.delete("/api/v1/alerts", headers=AUTH)
    assert response.status == 405


async def test_webhook_whose_alerts_are_all_invalid_is_rejected(gw: Harness) -> None:
    bad = am_alert()
    del bad["labels"]["alertname"]
    status, body = await gw.post("/api/v1/alertmanager", webhook(bad))
    assert status == 400
    assert body["rejected"][0]["index"] == 1
    assert body["rejected"][0]["error"] == "MissingField"


async def test_valid_webhook_ends_up_on_noc_events(gw: Harness, broker: Broker) -> None:
    partly_bad = am_alert("DiskFull")
    partly_bad["status"] = "exploded"
    payload = webhook(am_alert(), partly_bad)
    status, body = await gw.post("/api/v1/alertmanager", payload)
    assert status == 202, body
    assert body["accepted"] == 1
    assert body["rejected"][0]["index"] == 2
    (record_id,) = body["records"]
    assert record_id.startswith("noc.events:")
    (record,) = await consume(broker.bootstrap, "noc.events", 1)
    assert f"noc.events:{record.partition}:{record.offset}" == record_id
    assert record.value == orjson.dumps(payload)  # the body exactly as sent
    headers = dict(record.headers)
    assert headers["socnoc-format"] == b"alertmanager"
    assert record.key == b"{}:{}"
    assert gw.registry.get_sample_value(
        "socnoc_gateway_records_produced_total", {"topic": "noc.events"}) == 1


async def test_security_webhook_goes_to_soc_alerts(gw: Harness, broker: Broker) -> None:
    status, body = await gw.post("/api/v1/alertmanager",
                                 webhook(am_alert("Falco", domain="security")))
    assert status == 202
    assert body["records"][0].startswith("soc.alerts:")
    await consume(broker.bootstrap, "soc.alerts", 1)


async def test_generic_alerts_are_routed_by_domain(gw: Harness, broker: Broker) -> None:
    alerts = [
        {"source": "edr", "domain": "security", "time": "2024-05-01T12:00:00Z", "asset": "pc7",
         "signature": "mimikatz", "severity": "high", "tactics": ["credential-access"]},
        {"id": "nms-1", "source": "nms", "domain": "ops", "time": 1714564800, "asset": "sw1",
         "signature": "link-down"},
    ]
    status, body = await gw.post("/api/v1/alerts", alerts)
    assert status == 202, body
    assert [r.split(":")[0] for r in body["records"]] == ["soc.alerts", "noc.events"]
    (sec,) = await consume(broker.bootstrap, "soc.alerts", 1)
    (ops,) = await consume(broker.bootstrap, "noc.events", 1)
    assert orjson.loads(sec.value) == alerts[0]
    assert orjson.loads(ops.value) == alerts[1]
    body = b'{"source":"nms", "domain":"ops", "time":"2024-05-01T12:00:00Z", "asset":"sw3",\n "signature":"x"}'
    status, answer = await gw.post("/api/v1/alerts", body)
    assert status == 202, answer
    records = await consume(broker.bootstrap, "noc.events", 2)
    assert body in {r.value for r in records}  # a lone object is produced byte for byte
    assert dict(ops.headers)["socnoc-format"] == b"alert"
    assert ops.key == b"sw1"


async def test_one_invalid_generic_alert_rejects_the_batch(gw: Harness) -> None:
    good = {"source": "nms", "domain": "ops", "time": "2024-05-01T12:00:00Z", "asset": "sw1",
            "signature": "s"}
    cases = [
        {**good, "time": "yesterday"},
        {**good, "time": 1e300},
        {**good, "domain": "finance"},
        {**good, "severity": "apocalyptic"},
        {**good, "raw": "x"},
        {k: v for k, v in good.items() if k != "asset"},
        {**good, "unknown_field": 1},
        "not an object",
    ]
    status, body = await gw.post("/api/v1/alerts", [good, *cases])
    assert status == 400
    assert body["error"] == "invalid_alerts"
    assert [r["index"] for r in body["rejected"]] == list(range(2, len(cases) + 2))
    assert body["rejected"][0]["error"] == "BadTimestamp"
    assert gw.registry.get_sample_value(
        "socnoc_gateway_records_produced_total", {"topic": "noc.events"}) is None


def incident(incident_id: str, version: int, event: LifecycleEvent, *, kind: IncidentKind,
             owners: tuple[str, ...], assets: tuple[str, ...], resolved: bool = False
             ) -> IncidentEvent:
    return IncidentEvent(
        incident_id=incident_id, kind=kind, assets=assets, opened_at=T0,
        updated_at=T0 + timedelta(minutes=version),
        resolved_at=T0 + timedelta(minutes=version) if resolved else None,
        severity=Severity.HIGH, score=80, alert_count=version, owners=owners, event=event,
        version=version, alert_ids=(f"{incident_id}-a{version}",), alert_ids_total=version,
        reasons=(f"reason {version}",),
        timeline=(TimelineEntry(time=T0 + timedelta(minutes=version), asset=assets[0],
                                alert_id=f"{incident_id}-a{version}", source="wazuh",
                                signature="5710", severity=Severity.HIGH),),
    )


async def test_read_api_serves_the_incidents_topic(gw: Harness, broker: Broker) -> None:
    events = [
        incident("inc-1", 1, LifecycleEvent.OPENED, kind=IncidentKind.SECURITY,
                 owners=("secops",), assets=("pc7",)),
        incident("inc-2", 1, LifecycleEvent.OPENED, kind=IncidentKind.OPERATIONAL,
                 owners=("netops",), assets=("sw1", "sw2")),
        incident("inc-1", 2, LifecycleEvent.UPDATED, kind=IncidentKind.SECURITY,
                 owners=("secops",), assets=("pc7",)),
        incident("inc-2", 2, LifecycleEvent.RESOLVED, kind=IncidentKind.OPERATIONAL,
                 owners=("netops",), assets=("sw1", "sw2"), resolved=True),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait("incidents", e.model_dump_json().encode(),
                                         key=e.incident_id.encode())
        await producer.send_and_wait("incidents", b"garbage", key=b"x")
    finally:
        await producer.stop()
    async with asyncio.timeout(20):
        while gw.gateway.view.get("inc-2") is None or \
                gw.gateway.view.get("inc-2", )["version"] < 2 or \
                gw.gateway.view.get("inc-1")["version"] < 2:  # type: ignore[index]
            await asyncio.sleep(0.05)

    status, body = await gw.get("/api/v1/incidents")
    assert status == 200
    assert body["total"] == 2
    assert [i["incident_id"] for i in body["incidents"]] == ["inc-2", "inc-1"]
    assert (await gw.get("/api/v1/incidents?state=open"))[1]["incidents"][0]["incident_id"] \
        == "inc-1"
    assert (await gw.get("/api/v1/incidents?state=resolved&kind=operational"))[1]["total"] == 1
    assert (await gw.get("/api/v1/incidents?owner=netops"))[1]["incidents"][0]["state"] \
        == "resolved"
    assert (await gw.get("/api/v1/incidents?asset=sw2"))[1]["total"] == 1
    assert (await gw.get("/api/v1/incidents?asset=nowhere"))[1]["total"] == 0
    assert (await gw.get("/api/v1/incidents?limit=1"))[1]["total"] == 2

    status, detail = await gw.get("/api/v1/incidents/inc-1")
    assert status == 200
    assert detail["alert_ids"] == ["inc-1-a1", "inc-1-a2"]
    assert detail["reasons"] == ["reason 1", "reason 2"]
    assert [t["alert_id"] for t in detail["timeline"]] == ["inc-1-a1", "inc-1-a2"]
    assert [h["event"] for h in detail["lifecycle"]] == ["opened", "updated"]

    assert (await gw.get("/api/v1/incidents/none"))[0] == 404
    for bad in ("state=closed", "kind=weird", "limit=0", "limit=x", "colour=red"):
        status, body = await gw.get(f"/api/v1/incidents?{bad}")
        assert (status, body["error"]) == (400, "invalid_query"), bad


async def test_503_while_kafka_is_down_then_recovers(gw: Harness, broker: Broker) -> None:
    assert (await gw.post("/api/v1/alertmanager", webhook(am_alert())))[0] == 202
    broker.stop()
    status, body = await gw.post("/api/v1/alertmanager", webhook(am_alert()))
    assert status == 503
    assert body["error"] == "kafka_unavailable"
    response = await gw.client.get("/readyz")
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    # Reads keep serving the (stale) view.
    assert (await gw.get("/api/v1/incidents"))[1]["kafka"] == "down"

    broker.start()
    # Like Alertmanager, retry until accepted: the restarted broker is empty (memory storage)
    # and creates the topic on first use.
    async with asyncio.timeout(20):
        while (await gw.post("/api/v1/alertmanager", webhook(am_alert())))[0] != 202:
            await gw.gateway.sink.wait_up(1)


async def test_503_when_kafka_was_never_reachable() -> None:
    async for harness in make_harness(f"127.0.0.1:{free_port()}"):
        status, body = await harness.post("/api/v1/alerts", {
            "source": "nms", "domain": "ops", "time": "2024-05-01T12:00:00Z", "asset": "sw1",
            "signature": "s"})
        assert (status, body["error"]) == (503, "kafka_unavailable")
        assert (await harness.get("/healthz", headers={}))[1]["kafka"] == "down"


def test_token_is_never_in_the_config_repr() -> None:
    config = GatewayConfig(token=TOKEN)
    assert TOKEN not in repr(config)
    with pytest.raises(ValueError, match="at least 16"):
        GatewayConfig(token="short")
