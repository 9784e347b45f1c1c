"""`socnoc worker`: the correlation worker against a Kafka cluster.

A worker runs supervised stages (inventory follower, decode, correlate: `SOCNOC_STAGES`
picks decode and/or correlate), a broker probe and an HTTP endpoint with `/metrics` and
`/health`. Scale out by starting more workers with the same `SOCNOC_APP_ID`: the decode and
correlate consumer groups split the partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
from typing import Any

import orjson
from aiohttp import web
from aiokafka.client import AIOKafkaClient
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from pydantic_settings import SettingsError

from correlators.identity import Identity
from schemas.errors import ConfigError
from schemas.native import compiled_packages
from streams.control import broadcast, current_rules
from streams.correlate_stage import CorrelateStage
from streams.correlator import new_correlator, snapshotter, worker_context
from streams.decode_stage import DecodeStage
from streams.health import Health
from streams.inventory import InventoryReader
from streams.kafka import BROKER_ERRORS, client_options, ensure_topics, retry_forever, topic_specs
from streams.metrics import Metrics, metrics_app, process_registry
from streams.settings import Settings
from streams.stage import Stage

__all__ = ["Worker", "register", "main", "configure_logging"]

log = logging.getLogger(__name__)

_PROBE_INTERVAL_S = 2.0
_INVENTORY_WAIT_S = 60.0


class Worker:
    """One worker process's stages, probe and web endpoint; `run()` until `stop()`."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or process_registry()  # its own: with CPU, memory and GC
        self.metrics = Metrics.create(self.registry)
        self.health = Health(self.metrics)
        self.identity = Identity()
        context = worker_context(settings)
        self.inventory = InventoryReader(settings, self.health, self.identity)
        # only the stages this worker runs exist (and appear in /health)
        self.stages: list[Stage] = []
        decode = correlate = None
        if "decode" in settings.stages:
            decode = DecodeStage(settings, self.health, self.metrics, self.identity)
            self.stages.append(decode)
        if "correlate" in settings.stages:
            correlate = CorrelateStage(
                settings,
                self.health,
                self.metrics,
                new_correlator=lambda: new_correlator(settings, context),
                snapshotter=snapshotter(settings, context),
            )
            self.stages.append(correlate)
        if decode is not None and correlate is not None and settings.handoff != "off":
            # what this process decodes for the partitions it correlates is not read back
            decode.handoff = correlate.offer
        self.web_port: int | None = None
        self.started = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Finish the batches in flight, checkpoint, and return from `run()`."""
        self._stop.set()

    async def run(self) -> None:
        """Serve, connect (retrying), create topics, then run the stages until stopped."""
        runner = await self._serve()
        probe = asyncio.create_task(self._probe(), name="broker-probe")
        tasks: list[asyncio.Task[None]] = []
        try:
            setup = asyncio.create_task(self._setup())
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({setup, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set():
                setup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await setup
                return
            stopper.cancel()
            await self.reload_rules(startup=True)
            tasks.append(asyncio.create_task(self.inventory.run(), name="inventory"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready_or_stopped(), _INVENTORY_WAIT_S)
            if not self._stop.is_set():
                for stage in self.stages:
                    tasks.append(asyncio.create_task(stage.run(), name=stage.name))
                self.started.set()
                compiled = compiled_packages()
                log.info(
                    "worker running (app %s, stages %s, core %s)",
                    self.settings.app_id,
                    ", ".join(s.name for s in self.stages),
                    "compiled: " + ", ".join(compiled) if compiled else "pure Python",
                )
                await self._stop.wait()
        finally:
            for stage in (*self.stages, self.inventory):
                stage.stop()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=60)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            await runner.cleanup()
            log.info("worker stopped")

    async def reload_rules(self, *, startup: bool = False) -> bool:
        """Load the rule files again and put the rule set in every partition's log.

        Going through the log (not straight into the engines) keeps each partition's
        processing a function of its log, which restarts rely on. A bad file changes nothing.
        """
        try:
            item = current_rules(self.settings)
        except ConfigError as exc:
            log.error("rule reload failed, keeping the current rules: %s", exc)
            self.metrics.observe_rule_reload("error")
            return False
        try:
            await broadcast(self.settings, item)
        except BROKER_ERRORS as exc:
            log.error("rule reload could not reach Kafka: %s: %s", type(exc).__name__, exc)
            self.metrics.observe_rule_reload("error")
            return False
        if not startup:
            self.metrics.observe_rule_reload("ok")
        log.info("rules %s: %d rules", "published" if startup else "reloaded", len(item.rules))
        return True

    async def _ready_or_stopped(self) -> None:
        ready = asyncio.create_task(self.inventory.ready.wait())
        stopped = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            stopped.cancel()

    async def _setup(self) -> None:
        if self.settings.create_topics:
            specs = topic_specs(self.settings)
            await retry_forever(
                "creating topics",
                lambda: ensure_topics(self.settings, specs),
                settings=self.settings,
                on_failure=self.health.down,
            )

    async def _probe(self) -> None:
        """Keep `/health` and `socnoc_broker_up` true to whether Kafka answers."""
        delay = 0.5
        cap = max(delay, self.settings.kafka_retry_max.total_seconds())
        client: Any = None
        try:
            while True:
                try:
                    if client is None:
                        client = AIOKafkaClient(
                            **client_options(self.settings),
                            client_id=f"{self.settings.kafka_client_id}-probe",
                            request_timeout_ms=5000,
                        )
                        await asyncio.wait_for(client.bootstrap(), 10)
                    await asyncio.wait_for(client.fetch_all_metadata(), 10)
                except BROKER_ERRORS as exc:
                    if self.health.broker_up or delay == 0.5:
                        log.error(
                            "Kafka at %s is unreachable (%s: %s); retrying with backoff",
                            self.settings.kafka_bootstrap,
                            type(exc).__name__,
                            exc,
                        )
                    self.health.down(exc)
                    if client is not None:
                        with contextlib.suppress(Exception):
                            await client.close()
                        client = None
                    await asyncio.sleep(delay)
                    delay = min(cap, delay * 2)
                    continue
                if not self.health.broker_up:
                    log.info("Kafka at %s is reachable", self.settings.kafka_bootstrap)
                self.health.up()
                delay = 0.5
                await asyncio.sleep(_PROBE_INTERVAL_S)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()

    async def _serve(self) -> web.AppRunner:
        app = metrics_app(self.registry)

        async def health(_request: web.Request) -> web.Response:
            body = self.health.as_dict()
            return web.Response(
                status=200 if self.health.ok else 503,
                body=orjson.dumps(body),
                content_type="application/json",
            )

        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.web_host, self.settings.web_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.web_port = int(sockets[0].getsockname()[1]) if sockets else self.settings.web_port
        log.info("serving /metrics and /health on %s:%s", self.settings.web_host, self.web_port)
        return runner


def configure_logging(level: str = "INFO") -> None:
    """Plain structured-ish log lines on stderr."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


# A worker allocates and frees objects by the hundred thousand a second (records, batches,
# futures) yet almost never makes a reference cycle: in a 150k-alert run the collector
# found ~2,000 cyclic objects in all, and spent 417 ms of 6.8 s (6%) looking, in 1,170
# collections, the slowest 31 ms (a full one, which walks every object the engine holds).
# With a young generation of 10,000 instead of 700: 27 collections, 60 ms, none over 16 ms
# (stop 15). With the records handed over in memory, what is young at a collection grew:
# in a 95k-alert e2e run, 32 young collections of ~9 ms each, ~5% of the worker's CPU, and
# 1.4% in 300k alerts of `bench.instructions`' stages workload (6 ms each). At 100,000 none
# ran in either (the count is allocations less deallocations: what a batch allocates and
# frees again stays below it; none in 1M alerts of a steady state either, stop 31); what
# does build up (state, cycles) is collected 100,000 objects later at most. While the state
# grows (200,000 new assets), every setting tried stalls: at 100,000, young collections of
# 13-103 ms and a middle one of 264-360 ms; at 10,000, middle ones up to 133 ms and a full one
# of 481 ms (bench/HISTORY.md, stop 31). Everything loaded at start (modules, rules, settings)
# is moved out of the collector's reach first: later full collections no longer walk it.
GC_THRESHOLDS = (100_000, 10, 10)


def tune_gc() -> None:
    """The collector settings of a long-running worker process (see GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(settings: Settings) -> int:
    """Run a worker until SIGTERM/SIGINT."""
    worker = Worker(settings)
    tune_gc()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        log.info("SIGHUP: reloading rules")
        task = asyncio.create_task(worker.reload_rules())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await worker.run()
    return 0


def main(args: argparse.Namespace) -> int:
    """`socnoc worker` handler: settings from the environment, then run."""
    configure_logging(args.log_level)
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        log.error("invalid SOCNOC_* settings:\n%s", exc)
        return 2
    if not settings.kafka_bootstrap:
        log.error("SOCNOC_KAFKA_BOOTSTRAP is not set (use `socnoc run` for the embedded broker)")
        return 2
    return asyncio.run(serve(settings))


def register(subparsers: Any) -> None:
    """Add `socnoc worker` to the CLI."""
    p = subparsers.add_parser(
        "worker",
        help="the correlation worker against a Kafka cluster (settings: SOCNOC_* variables)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=main)
