"""Slices of the bundled real datasets, as the records a source would publish."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from tests.integration.conftest import DATA

AITADS = DATA / "ait-ads" / "russellmitchell_alerts.csv"
WAZUH = DATA / "wazuh-ldsv1" / "ossec_spiral.json"

# 24 h of routine operations (the engine's baseline warm-up) and the attack's first phases.
ATTACK_SLICE = (datetime(2022, 1, 23, 3, 0, tzinfo=UTC), datetime(2022, 1, 24, 4, 40, tzinfo=UTC))


def aitads_rows(
    start: datetime = ATTACK_SLICE[0], end: datetime = ATTACK_SLICE[1]
) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Header and (line number, row) of the rows in [start, end), in (time, line) order."""
    lines = AITADS.read_bytes().splitlines()
    lo, hi = start.timestamp(), end.timestamp()
    rows = [
        (number, line)
        for number, line in enumerate(lines[1:], start=2)
        if lo <= float(line.split(b",", 1)[0]) < hi
    ]
    rows.sort(key=lambda r: (float(r[1].split(b",", 1)[0]), r[0]))
    return lines[0], rows


def host_of(row: bytes) -> bytes:
    """The `host` column of an AIT-ADS row (the key a shipper would use)."""
    return row.split(b",")[3]


def write_csv(path: Path, header: bytes, rows: list[bytes]) -> Path:
    """A CSV file of these rows (for `socnoc replay`)."""
    path.write_bytes(b"\n".join([header, *rows]) + b"\n")
    return path


def wazuh_lines() -> list[bytes]:
    """The Wazuh alerts.json records, one JSON object each."""
    return [line for line in WAZUH.read_bytes().splitlines() if line.strip()]


async def produce_paced(
    producer: AIOKafkaProducer,
    topic: str,
    rows: list[bytes],
    sent: list[str],
    rate: float,
    garbage_every: int | None = None,
) -> None:
    """Publish AIT-ADS rows keyed by host (a shipper's choice) at about `rate` records/s;
    every `garbage_every`-th one (from the first) replaced by garbage. `sent` collects the
    stream ids (`topic:partition:offset`) as the broker acknowledges them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, row in enumerate(rows):
        garbage = garbage_every is not None and i % garbage_every == 0
        value = b"\xde\xad garbage " + str(i).encode() if garbage else row
        fut = await producer.send(topic, value, key=host_of(row))
        fut.add_done_callback(lambda f: sent.append(f"{topic}:{f.result().partition}:{f.result().offset}"))
        if i % 500 == 0:
            await fut
            ahead = start + i / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
    await producer.flush()
