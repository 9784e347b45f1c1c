"""`socnoc gateway`: the ingest process — HTTP gateway, syslog listener and /metrics.

Its settings are the worker's (`SOCNOC_KAFKA_*` for the cluster, `SOCNOC_WEB_*` for
/metrics) plus the `SOCNOC_GATEWAY_*` and `SOCNOC_SYSLOG_*` variables below. The bearer
token comes from the environment only, never from the command line (it would show in `ps`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from datetime import timedelta
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsError

from streams.gateway import DEFAULT_PORT, Gateway, GatewayConfig
from streams.incident_view import IncidentFeed, IncidentView
from streams.kafka import client_options
from streams.kafka_sink import KafkaSink
from streams.metrics import GatewayMetrics, SyslogMetrics, metrics_app, process_registry
from streams.settings import Duration, Settings
from streams.syslog import SyslogConfig, SyslogListener

__all__ = ["IngestSettings", "Ingest", "main", "register"]

log = logging.getLogger(__name__)


class IngestSettings(Settings):
    """The worker's settings plus the ingest edges' own (`SOCNOC_GATEWAY_*`, `SOCNOC_SYSLOG_*`)."""

    gateway_host: str = Field(default="0.0.0.0", description="Address of the HTTP gateway.")
    gateway_port: int = Field(default=DEFAULT_PORT, ge=0, le=65535,
                              description="Port of the HTTP gateway (0: any free).")
    gateway_token: SecretStr | None = Field(
        default=None, description="Bearer token every API call must present (16+ characters)."
    )
    gateway_max_body_bytes: int = Field(default=1024 * 1024, ge=1024,
                                        description="Largest accepted request body.")
    gateway_max_alerts: int = Field(default=1000, ge=1,
                                    description="Most alerts in one request.")
    gateway_produce_timeout: Duration = Field(
        default=timedelta(seconds=5),
        description="How long a request waits for Kafka's ack before answering 503.",
    )
    gateway_security_topic: str = Field(default="soc.alerts",
                                        description="Topic of security alerts.")
    gateway_ops_topic: str = Field(default="noc.events", description="Topic of ops alerts.")
    gateway_max_incidents: int = Field(default=10_000, ge=1,
                                       description="Incidents the read API keeps in memory.")
    syslog_host: str = Field(default="0.0.0.0", description="Address of the syslog listener.")
    syslog_udp_port: int | None = Field(default=None, ge=0, le=65535,
                                        description="Syslog UDP port (unset: no UDP).")
    syslog_tcp_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Syslog TCP port, RFC 6587 octet-counting or LF framing (unset: no TCP).",
    )
    syslog_topic: str = Field(default="noc.events", description="Topic of syslog messages.")
    syslog_max_message_bytes: int = Field(default=64 * 1024, ge=480,
                                          description="Longest syslog message kept.")


class Ingest:
    """The running ingest process: one Kafka sink shared by the gateway and syslog."""

    def __init__(self, settings: IngestSettings, registry: CollectorRegistry | None = None
                 ) -> None:
        if settings.gateway_token is None:
            raise ValueError("SOCNOC_GATEWAY_TOKEN is not set")
        self.settings = settings
        self.registry = registry or process_registry()  # its own: with CPU, memory and GC
        options = client_options(settings)
        bootstrap = options.pop("bootstrap_servers")
        self.sink = KafkaSink(
            bootstrap, timeout_s=settings.gateway_produce_timeout.total_seconds(),
            client_options=options, client_id=f"{settings.kafka_client_id}-gateway",
        )
        self.view = IncidentView(settings.gateway_max_incidents)
        self.feed = IncidentFeed(self.view, bootstrap=bootstrap,
                                 topic=settings.incidents_topic, client_options=options)
        config = GatewayConfig(
            token=settings.gateway_token.get_secret_value(),
            security_topic=settings.gateway_security_topic,
            ops_topic=settings.gateway_ops_topic,
            incidents_topic=settings.incidents_topic,
            max_body_bytes=settings.gateway_max_body_bytes,
            max_alerts_per_request=settings.gateway_max_alerts,
            max_incidents=settings.gateway_max_incidents,
        )
        self.gateway = Gateway(config, self.sink, self.view, GatewayMetrics.create(self.registry))
        self.syslog: SyslogListener | None = None
        if settings.syslog_udp_port is not None or settings.syslog_tcp_port is not None:
            self.syslog = SyslogListener(
                SyslogConfig(
                    host=settings.syslog_host, udp_port=settings.syslog_udp_port,
                    tcp_port=settings.syslog_tcp_port, topic=settings.syslog_topic,
                    max_message_bytes=settings.syslog_max_message_bytes,
                ),
                self.sink, SyslogMetrics.create(self.registry),
            )
        self._runners: list[web.AppRunner] = []
        self._stop = asyncio.Event()
        self.ports: dict[str, int] = {}

    async def _site(self, name: str, app: web.Application, host: str, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runners.append(runner)
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.ports[name] = int(sockets[0].getsockname()[1]) if sockets else port

    async def start(self) -> None:
        """Connect (in the background), then open the HTTP, syslog and metrics ports."""
        s = self.settings
        await self.sink.start()
        await self.feed.start()
        await self._site("gateway", self.gateway.app(), s.gateway_host, s.gateway_port)
        await self._site("metrics", metrics_app(self.registry), s.web_host, s.web_port)
        if self.syslog is not None:
            await self.syslog.start()
            if self.syslog.udp_port is not None:
                self.ports["syslog_udp"] = self.syslog.udp_port
            if self.syslog.tcp_port is not None:
                self.ports["syslog_tcp"] = self.syslog.tcp_port
        log.info("ingest ready: %s", self.ports)

    def stop(self) -> None:
        """Ask `run()` to return."""
        self._stop.set()

    async def run(self) -> None:
        """Start, wait for `stop()`, then close everything (HTTP first, Kafka last)."""
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.syslog is not None:
            await self.syslog.stop()
        await self.feed.stop()
        await self.sink.stop()


async def serve(settings: IngestSettings) -> int:
    """Run until SIGTERM/SIGINT."""
    ingest = Ingest(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ingest.stop)
    await ingest.run()
    return 0


def main(args: argparse.Namespace) -> int:
    """`socnoc gateway` handler: settings from the environment, then run."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        settings = IngestSettings()
    except (ValidationError, SettingsError) as exc:
        log.error("invalid SOCNOC_* settings:\n%s", exc)
        return 2
    if not settings.kafka_bootstrap:
        log.error("SOCNOC_KAFKA_BOOTSTRAP is not set")
        return 2
    token = settings.gateway_token
    if token is None or len(token.get_secret_value()) < 16:
        log.error("SOCNOC_GATEWAY_TOKEN must be set to a secret of at least 16 characters")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(settings))
    return 0


def register(subparsers: Any) -> None:
    """Add `socnoc gateway` to the CLI."""
    p = subparsers.add_parser(
        "gateway",
        help="HTTP (Alertmanager webhook, JSON alerts, incidents API) and syslog ingest "
        "(settings: SOCNOC_* variables)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=main)
