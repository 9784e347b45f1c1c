"""`socnoc run` (`make run`): the whole service on one machine, replaying a real scenario.

Starts the embedded Kafka-compatible broker (Tansu) unless `SOCNOC_KAFKA_BOOTSTRAP` points
at one, a worker with its metrics endpoint, then publishes a bundled real dataset into the
input topic at accelerated event time and shows incidents opening, updating and resolving.
At the end of the scenario the input is ended (waiting alerts decided, as in replay) and
event time moves a day on, so quiet incidents resolve; then a summary. Ctrl-C stops it
cleanly at any point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError
from pydantic_settings import SettingsError

from streams.broker import BrokerError, EmbeddedBroker, free_port
from streams.control import broadcast, end_of_input, wait_decoded
from streams.kafka import client_options
from streams.records import TickItem
from streams.scenario import SCENARIOS, Scenario, load_scenario, publish
from streams.settings import InputSpec, Settings
from streams.view import Screen, Tally, incident_line, summary_lines
from streams.worker import Worker

__all__ = ["register", "main", "run_demo"]

log = logging.getLogger(__name__)

_DAY_S = 86400.0
_DEMO_TOPIC = "soc.alerts"


def _demo_settings(base: Settings, bootstrap: str, scenario: Scenario) -> Settings:
    """The worker's settings for the demo: the scenario's format, quick group joins."""
    web_port = base.web_port if base.web_port and _port_free(base.web_port) else free_port()
    return base.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "inputs": {_DEMO_TOPIC: InputSpec(format=scenario.format)},
            "group_session_timeout": min(base.group_session_timeout, _seconds(3)),
            "group_heartbeat_interval": min(base.group_heartbeat_interval, _seconds(0.5)),
            "idle_timeout": max(base.idle_timeout, _seconds(600)),  # the demo ends the input
            "web_host": "127.0.0.1",
            "web_port": web_port,
        }
    )


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _Follower:
    """Reads the decisions and incidents topics into the tally, and draws the view."""

    def __init__(self, settings: Settings, tally: Tally, screen: Screen) -> None:
        self.settings = settings
        self.tally = tally
        self.screen = screen
        self._printed: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(**client_options(s), group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps: list[TopicPartition] = []
            producer = AIOKafkaProducer(**client_options(s))
            await producer.start()
            try:
                for topic in (s.decisions_topic, s.incidents_topic, s.dlq_topic):
                    tps += [TopicPartition(topic, p) for p in await producer.partitions_for(topic)]
            finally:
                await producer.stop()
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=20_000)
                for tp, records in batch.items():
                    for record in records:
                        self._record(tp.topic, record.value)
                self.screen.status(self.tally)
        finally:
            await consumer.stop()

    def _record(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        data = orjson.loads(value)
        if topic == self.settings.decisions_topic:
            self.tally.decision(data)
        elif topic == self.settings.incidents_topic:
            if self.tally.incident(data) and self._show(data):
                self.screen.line(incident_line(data, self.screen.tty), self.tally)
        else:
            self.tally.dead_letters += 1

    def _show(self, event: dict[str, Any]) -> bool:
        """Every open/resolve/merge; an incident's updates at most every 2 s of wall time."""
        if event["event"] != "updated":
            return True
        now = time.monotonic()
        if now - self._printed.get(event["incident_id"], 0.0) < 2.0:
            return False
        self._printed[event["incident_id"]] = now
        return True


async def run_demo(
    base: Settings, scenario_name: str, duration_s: float, log_path: Path
) -> int:
    """The demo; returns the exit code (130 when interrupted)."""
    scenario = load_scenario(scenario_name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    screen = Screen()
    broker: EmbeddedBroker | None = None
    bootstrap = base.kafka_bootstrap
    if not bootstrap:
        broker = EmbeddedBroker(log_path=log_path.with_name("tansu.log"))
        await asyncio.to_thread(broker.start)
        bootstrap = broker.bootstrap
    settings = _demo_settings(base, bootstrap, scenario)
    worker = Worker(settings)
    worker_task = asyncio.create_task(worker.run(), name="worker")
    tally = Tally(total=len(scenario.records))
    started = time.monotonic()
    interrupted = False
    follower_stop = asyncio.Event()
    follower: asyncio.Task[None] | None = None
    try:
        first, last = scenario.span
        screen.line(f"socnoc run: {scenario.title}")
        screen.line(
            f"  {len(scenario.records):,} real alerts, event time {first:%Y-%m-%d %H:%M} .. "
            f"{last:%Y-%m-%d %H:%M} UTC, replayed in about {duration_s:.0f} s"
        )
        where = "embedded Tansu" if broker is not None else "Kafka"
        screen.line(f"  {where} at {bootstrap}; worker log: {log_path}")
        if not await _until(lambda: worker.started.is_set() or worker_task.done(), stop, 60):
            raise RuntimeError("the worker did not start (see the log)")
        screen.line(
            f"  metrics: http://127.0.0.1:{worker.web_port}/metrics   "
            f"health: http://127.0.0.1:{worker.web_port}/health"
        )
        ready = await _until(
            lambda: bool(worker.health.stage("correlate").partitions), stop, 60
        )
        if not ready:
            raise RuntimeError("the worker did not join its consumer groups (see the log)")
        screen.line("")
        follower = asyncio.create_task(_Follower(settings, tally, screen).run(follower_stop))
        producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=5)
        await producer.start()
        try:

            def progress(sent: int, event_time: float) -> None:
                tally.sent, tally.event_time = sent, event_time

            await publish(
                producer,
                _DEMO_TOPIC,
                scenario,
                duration_s=duration_s,
                progress=progress,
                stop=stop,
            )
        finally:
            await producer.stop()
        if not stop.is_set():
            await _finish(settings, scenario, tally, stop)
        interrupted = stop.is_set()
    except RuntimeError as exc:
        screen.line(f"socnoc run: {exc}")
        interrupted = True
    finally:
        follower_stop.set()
        if follower is not None:
            await asyncio.gather(follower, return_exceptions=True)
        screen.status(tally, force=True)
        screen.done()
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker_task, 60)
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        for line in summary_lines(tally, time.monotonic() - started, interrupted or stop.is_set()):
            screen.line(line)
    return 130 if interrupted or stop.is_set() else 0


async def _finish(settings: Settings, scenario: Scenario, tally: Tally, stop: asyncio.Event) -> None:
    """End of the scenario: decide waiting alerts, then let a day of event time pass."""
    await wait_decoded(settings, timeout_s=120)
    await end_of_input(settings)
    later = scenario.records[-1][0] + _DAY_S
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        parts = await producer.partitions_for(_DEMO_TOPIC)
    finally:
        await producer.stop()
    for p in sorted(parts):
        await broadcast(settings, TickItem(f"{_DEMO_TOPIC}:{p}", later))
    await _until(lambda: len(tally.decided) >= tally.sent and tally.open_incidents() == 0, stop, 60)
    await asyncio.sleep(0.5)  # let the last events reach the view


async def _until(check: Any, stop: asyncio.Event, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return bool(check())


def main(args: argparse.Namespace) -> int:
    """`socnoc run` handler."""
    log_path = Path(args.log).resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=log_path,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        print(f"socnoc run: invalid SOCNOC_* settings:\n{exc}")
        return 2
    try:
        return asyncio.run(run_demo(settings, args.scenario, args.duration, log_path))
    except BrokerError as exc:
        print(f"socnoc run: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


def register(subparsers: Any) -> None:
    """Add `socnoc run` to the CLI."""
    p = subparsers.add_parser(
        "run",
        help="embedded broker + worker + metrics, replaying a bundled real scenario",
    )
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="aitads")
    p.add_argument(
        "--duration", type=float, default=45.0, help="seconds the replay should take (about)"
    )
    p.add_argument("--log", default="build/socnoc-run.log", help="where the worker logs go")
    p.set_defaults(func=main)
