"""Bundled real scenarios for `socnoc run`, and publishing them at accelerated event time.

A scenario is a list of raw records (exactly as a shipper would publish them) with their
event times, in (event time, line) order, plus the input topic format that reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

__all__ = ["Scenario", "SCENARIOS", "load_scenario", "publish", "examples_dir"]


@dataclass(frozen=True)
class Scenario:
    """Records to replay through Kafka."""

    name: str
    title: str
    format: str
    records: list[tuple[float, bytes]]  # (event time, raw record), in replay order

    @property
    def span(self) -> tuple[datetime, datetime]:
        return (
            datetime.fromtimestamp(self.records[0][0], tz=UTC),
            datetime.fromtimestamp(self.records[-1][0], tz=UTC),
        )


def examples_dir() -> Path:
    """`examples/data` of the source tree (the datasets ship with the project)."""
    return Path(__file__).resolve().parents[1] / "examples" / "data"


def _aitads(root: Path) -> Scenario:
    lines = (root / "ait-ads" / "russellmitchell_alerts.csv").read_bytes().splitlines()
    # 24 h of routine operations (what the engine learns as normal), then the attack's start.
    lo = datetime(2022, 1, 23, 3, 0, tzinfo=UTC).timestamp()
    hi = datetime(2022, 1, 24, 4, 40, tzinfo=UTC).timestamp()
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        ts = float(line.split(b",", 1)[0])
        if lo <= ts < hi:
            rows.append((ts, number, line))
    rows.sort()
    return Scenario(
        "aitads",
        "AIT-ADS russellmitchell: a day of routine operations, then the attack (2022-01-24)",
        "aitads",
        [(ts, line) for ts, _, line in rows],
    )


def _wazuh(root: Path) -> Scenario:
    rows = []
    path = root / "wazuh-ldsv1" / "ossec_spiral.json"
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if line.strip():
            stamp = orjson.loads(line)["timestamp"]
            rows.append((datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp(), number, line))
    rows.sort()
    return Scenario(
        "wazuh",
        "AIT-LDS v1.1 Wazuh alerts of one web server under a multi-step attack",
        "wazuh",
        [(ts, line) for ts, _, line in rows],
    )


SCENARIOS: dict[str, Callable[[Path], Scenario]] = {"aitads": _aitads, "wazuh": _wazuh}


def load_scenario(name: str, root: Path | None = None) -> Scenario:
    """A bundled scenario by name."""
    return SCENARIOS[name](root or examples_dir())


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    scenario: Scenario,
    *,
    duration_s: float,
    progress: Callable[[int, float], None],
    stop: asyncio.Event,
    max_rate: float = 20_000.0,
) -> int:
    """Publish in order to partition 0, compressing event time into about `duration_s`.

    Wall time follows event time, but quiet hours are squeezed: each record's slot is half
    its share of event time and half its share of records, so a burst (the attack) plays
    slowly enough to watch. Calls `progress(sent, event_time)`; returns how many were sent.
    """
    first, last = scenario.records[0][0], scenario.records[-1][0]
    span = max(last - first, 1e-9)
    count = len(scenario.records)
    start = time.monotonic()
    sent = 0
    pending: list[asyncio.Future[object]] = []
    for ts, raw in scenario.records:
        if stop.is_set():
            break
        share = 0.5 * (ts - first) / span + 0.5 * sent / count
        due = max(start + share * duration_s, start + sent / max_rate)
        delay = due - time.monotonic()
        if delay > 0.002:
            if pending:
                await asyncio.gather(*pending)
                pending.clear()
            progress(sent, ts)
            await asyncio.sleep(delay)
        pending.append(await producer.send(topic, raw, partition=0))
        sent += 1
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
            progress(sent, ts)
    if pending:
        await asyncio.gather(*pending)
    progress(sent, scenario.records[sent - 1][0] if sent else first)
    return sent
