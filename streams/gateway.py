"""The HTTP ingest gateway: Alertmanager webhooks and generic JSON alerts in, incidents out.

Write routes validate, then produce the records to the input topics (`noc.events` for ops,
`soc.alerts` for security) and answer 202 with the record ids; 503 while Kafka is down.
Read routes serve the `incidents` topic folded into an in-memory view. Every route but the
health checks needs `Authorization: Bearer <token>`. Payloads and the token are never
logged at INFO.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from schemas.adapters.alertmanager import AlertmanagerAdapter
from schemas.adapters.base import ParseContext, Rejected
from schemas.adapters.generic import parse_generic
from schemas.errors import InvalidInput
from schemas.models import Alert, Domain, IncidentKind
from streams.incident_view import IncidentQuery, IncidentState, IncidentView
from streams.kafka_sink import KafkaSink, KafkaUnavailable, OutRecord
from streams.metrics import GatewayMetrics

__all__ = [
    "DEFAULT_PORT",
    "FORMAT_HEADER",
    "GatewayConfig",
    "Gateway",
    "register",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080
FORMAT_HEADER = "socnoc-format"  # tells the worker which adapter decodes the record
RECEIVED_HEADER = "socnoc-received-at"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
MAX_LIMIT = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class GatewayConfig:
    """What the gateway needs; built from the settings by the CLI."""

    token: str
    security_topic: str = "soc.alerts"
    ops_topic: str = "noc.events"
    incidents_topic: str = "incidents"
    max_body_bytes: int = 1024 * 1024
    max_alerts_per_request: int = 1000
    max_incidents: int = 10_000

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ValueError("the gateway token must be at least 16 characters")

    def __repr__(self) -> str:  # the token must never reach a log line
        return f"GatewayConfig(topics={self.security_topic},{self.ops_topic}, token=***)"


class _ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, error: str, detail: str, **extra: Any) -> web.Response:
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="socnoc"'
    if status == 503:
        headers["Retry-After"] = "5"
    return _json(status, {"error": error, "detail": detail, **extra}, headers)


class Gateway:
    """The gateway's routes over a Kafka sink and an incident view."""

    def __init__(
        self,
        config: GatewayConfig,
        sink: KafkaSink,
        view: IncidentView,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.view = view
        self.metrics = metrics or GatewayMetrics.create(CollectorRegistry())
        self._token = config.token.encode()
        self._alertmanager = AlertmanagerAdapter()

    def app(self) -> web.Application:
        """The aiohttp application (one per gateway)."""
        app = web.Application(
            client_max_size=self.config.max_body_bytes,
            middlewares=[self._errors_middleware, self._auth_middleware],
        )
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_post("/api/v1/alertmanager", self.post_alertmanager)
        app.router.add_post("/api/v1/alerts", self.post_alerts)
        app.router.add_get("/api/v1/incidents", self.list_incidents)
        app.router.add_get("/api/v1/incidents/{incident_id}", self.get_incident)
        return app

    # -- middlewares -------------------------------------------------------------------

    @web.middleware
    async def _errors_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except _ApiError as exc:
            response = _error(exc.status, exc.error, exc.detail, **exc.extra)
        except web.HTTPRequestEntityTooLarge:
            response = self._too_large()
        except web.HTTPException as exc:  # 404, 405 from the router
            response = _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.metrics.observe_request(route, response.status)
        return response

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in PUBLIC_PATHS:
            self._authenticate(request)
        return await handler(request)

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise _ApiError(401, "unauthorized", "missing bearer token")
        if not hmac.compare_digest(credentials.strip().encode(), self._token):
            log.info("rejected a request with a wrong token from %s", request.remote)
            raise _ApiError(401, "unauthorized", "invalid bearer token")

    def _too_large(self) -> web.Response:
        return _error(413, "payload_too_large", f"request body exceeds {self.config.max_body_bytes} bytes")

    # -- health ------------------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        """Liveness: the process answers; says whether Kafka is reachable."""
        return _json(200, {"status": "ok", "kafka": "up" if self.sink.up else "down"})

    async def readyz(self, _request: web.Request) -> web.Response:
        """Readiness: 503 while Kafka is down, so load balancers route elsewhere."""
        if not self.sink.up:
            return _error(503, "kafka_unavailable", "not connected to Kafka")
        return _json(200, {"status": "ready"})

    # -- write routes ------------------------------------------------------------------

    async def _read_json(self, request: web.Request) -> tuple[bytes, Any]:
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            raise _ApiError(413, "payload_too_large", f"request body exceeds {self.config.max_body_bytes} bytes")
        ctype = request.content_type
        if request.headers.get("Content-Type") and ctype not in (
            "application/json",
            "text/json",
            "application/octet-stream",
        ):
            raise _ApiError(415, "unsupported_media_type", f"expected application/json, got {ctype}")
        body = await request.read()
        if not body:
            raise _ApiError(400, "empty_body", "request body is empty")
        try:
            return body, orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None

    async def _produce(self, records: list[OutRecord]) -> list[str]:
        try:
            delivered = await self.sink.send(records)
        except KafkaUnavailable as exc:
            raise _ApiError(503, "kafka_unavailable", str(exc)) from None
        for record in records:
            self.metrics.observe_produced(record.topic)
        return [d.record_id for d in delivered]

    def _headers(self, fmt: str) -> tuple[tuple[str, bytes], ...]:
        now = datetime.now(UTC).isoformat()  # transport metadata, not event time
        return (
            (FORMAT_HEADER, fmt.encode()),
            (RECEIVED_HEADER, now.encode()),
            ("content-type", b"application/json"),
        )

    async def post_alertmanager(self, request: web.Request) -> web.Response:
        """Alertmanager webhook (payload version 4): one record per notification."""
        value, payload = await self._read_json(request)
        if not isinstance(payload, dict):
            raise _ApiError(400, "invalid_payload", "an Alertmanager webhook is a JSON object")
        ctx = ParseContext(record_id="request", max_bytes=self.config.max_body_bytes)
        try:
            # The record keeps the body as sent (valid UTF-8: orjson accepted it).
            parsed = self._alertmanager.from_object(payload, value.decode(), ctx)
        except InvalidInput as exc:
            raise _ApiError(400, "invalid_payload", str(exc), error_class=type(exc).__name__) from None
        if len(parsed) > self.config.max_alerts_per_request:
            raise _ApiError(413, "too_many_alerts", f"{len(parsed)} alerts exceed {self.config.max_alerts_per_request}")
        alerts = [p for p in parsed if isinstance(p, Alert)]
        rejected = [
            {"index": i, "error": p.error.__class__.__name__, "reason": str(p.error)}
            for i, p in enumerate(parsed, start=1)
            if isinstance(p, Rejected)
        ]
        if not alerts:
            raise _ApiError(400, "invalid_payload", "no valid alert in the webhook", rejected=rejected)
        security = all(a.domain is Domain.SECURITY for a in alerts)
        topic = self.config.security_topic if security else self.config.ops_topic
        group_key = payload.get("groupKey")
        key = group_key.encode() if isinstance(group_key, str) else None
        record = OutRecord(topic, value, key=key, headers=self._headers("alertmanager"))
        (record_id,) = await self._produce([record])
        log.info(
            "accepted an Alertmanager webhook: %d alerts, %d rejected -> %s", len(alerts), len(rejected), record_id
        )
        return _json(202, {"accepted": len(alerts), "rejected": rejected, "records": [record_id]})

    async def post_alerts(self, request: web.Request) -> web.Response:
        """Generic JSON alerts (canonical field names), one object or a list; all or none."""
        body, payload = await self._read_json(request)
        single = not isinstance(payload, list)
        items = [payload] if single else payload
        if not items:
            raise _ApiError(400, "invalid_payload", "no alert in the request")
        if len(items) > self.config.max_alerts_per_request:
            raise _ApiError(413, "too_many_alerts", f"{len(items)} alerts exceed {self.config.max_alerts_per_request}")
        records: list[OutRecord] = []
        errors: list[dict[str, Any]] = []
        headers = self._headers("alert")
        for index, item in enumerate(items, start=1):
            try:
                alert = _generic_alert(item, self.config.max_body_bytes)
            except InvalidInput as exc:
                errors.append({"index": index, "error": type(exc).__name__, "reason": str(exc)})
                continue
            topic = self.config.security_topic if alert.domain is Domain.SECURITY else self.config.ops_topic
            value = body if single else orjson.dumps(item)  # a lone object stays as sent
            records.append(OutRecord(topic, value, key=alert.asset.encode(), headers=headers))
        if errors:
            raise _ApiError(
                400,
                "invalid_alerts",
                f"{len(errors)} of {len(items)} alerts are invalid; none was accepted",
                rejected=errors,
            )
        record_ids = await self._produce(records)
        log.info("accepted %d generic alerts", len(records))
        return _json(202, {"accepted": len(records), "rejected": [], "records": record_ids})

    # -- read routes -------------------------------------------------------------------

    async def list_incidents(self, request: web.Request) -> web.Response:
        """Incidents, most recently updated first; filters state, kind, owner, asset."""
        query = _parse_query(request.query)
        total, incidents = self.view.query(query)
        return _json(200, {"total": total, "incidents": incidents, "kafka": "up" if self.sink.up else "down"})

    async def get_incident(self, request: web.Request) -> web.Response:
        """One incident with its timeline, reasons, alert ids and lifecycle."""
        incident_id = request.match_info["incident_id"]
        detail = self.view.get(incident_id)
        if detail is None:
            raise _ApiError(404, "not_found", f"no incident {incident_id[:200]!r}")
        return _json(200, detail)


def _generic_alert(item: Any, max_bytes: int) -> Alert:
    """Validate one generic alert exactly as the worker's `alert` adapter will read it."""
    return parse_generic(item, ParseContext(record_id="pending", max_bytes=max_bytes))


def _parse_query(params: Any) -> IncidentQuery:
    unknown = set(params) - {"state", "kind", "owner", "asset", "limit"}
    if unknown:
        raise _ApiError(400, "invalid_query", f"unknown parameter(s): {sorted(unknown)}")
    try:
        state = IncidentState(params["state"]) if "state" in params else None
        kind = IncidentKind(params["kind"]) if "kind" in params else None
    except ValueError as exc:
        raise _ApiError(400, "invalid_query", str(exc)) from None
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        raise _ApiError(400, "invalid_query", "limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _ApiError(400, "invalid_query", f"limit must be between 1 and {MAX_LIMIT}")
    return IncidentQuery(state=state, kind=kind, owner=params.get("owner"), asset=params.get("asset"), limit=limit)


def register(subparsers: Any) -> None:
    """Add `socnoc gateway` to the CLI (the process lives in streams/ingest.py)."""
    from streams.ingest import register as register_ingest

    register_ingest(subparsers)
