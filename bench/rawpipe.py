"""The raw pipeline `make bench` compares the worker with: consume, `orjson.loads`, produce.

A plain aiokafka consume-transform-produce loop with pinned settings — the same batch size,
fetch sizes, acks and linger as the worker's clients (`streams/kafka.py`,
`SOCNOC_BATCH_MAX_RECORDS`) — so the ratio measures what socnoc adds on top of Kafka
plumbing. It reads the input topic from the given offsets without a consumer group, loads
each record's JSON, produces one small record per input to the output topic and waits for
each batch's acknowledgements (at-least-once, like the worker's decode stage). Runs in its
own process, like the worker: `python -m bench.rawpipe BOOTSTRAP IN OUT P:O[,P:O...]`.

`--shape plumbing` is the worker's Kafka traffic without its work (report.json's `plumbing`):
records batched with the worker's own `BatchSender`, each input loaded and written again, with
two headers, to one partition of an internal topic (`OUT.internal`, as `SOCNOC_PARTITION_BY=single`
does), acknowledged, then one small record with a header per input to the output, acknowledged.
Two writes an alert where the raw pipeline makes one: what the worker's design costs before any
decoding, validation or correlation (its rate over the raw pipeline's bounds `e2e_ratio_vs_raw`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

__all__ = ["CONSUMER", "PRODUCER", "BATCH", "SHAPES", "internal_topic", "run", "main"]

BATCH = 2000  # SOCNOC_BATCH_MAX_RECORDS default
CONSUMER: dict[str, Any] = {
    "enable_auto_commit": False,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "fetch_max_bytes": 16 * 1024 * 1024,
    "max_poll_records": BATCH,
    "fetch_max_wait_ms": 10,  # the worker's default `SOCNOC_KAFKA_FETCH_WAIT`
    "isolation_level": "read_uncommitted",
}
PRODUCER: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "max_batch_size": 1024 * 1024,
    "max_request_size": 64 * 1024 * 1024,
}


SHAPES = ("raw", "plumbing")
_HEADERS = [("socnoc-kind", b"alert"), ("socnoc-source", b"bench:0")]  # (the worker's are this size)
_OUTPUT_HEADERS = _HEADERS[:1]


def internal_topic(target: str) -> str:
    """The internal topic of the `plumbing` shape (one partition, created by the caller)."""
    return f"{target}.internal"


async def run(
    bootstrap: str, source: str, target: str, offsets: dict[int, int], stop: asyncio.Event, shape: str = "raw"
) -> int:
    """Process records from `offsets` until `stop` is set; returns how many were processed."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} (shapes: {', '.join(SHAPES)})")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="bench-raw", **CONSUMER)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="bench-raw", **PRODUCER)
    await producer.start()
    await consumer.start()
    done = 0
    try:
        tps = {p: TopicPartition(source, p) for p in offsets}
        consumer.assign(list(tps.values()))
        for p, offset in offsets.items():
            consumer.seek(tps[p], offset)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        if shape == "plumbing":
            return await _plumbing(consumer, producer, internal_topic(target), target, stop)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            futures = []
            for records in batch.values():
                for rec in records:
                    obj = orjson.loads(rec.value)
                    small = orjson.dumps({"id": obj.get("id") if isinstance(obj, dict) else None})
                    futures.append(await producer.send(target, small, key=rec.key))
                done += len(records)
            if futures:
                await asyncio.gather(*futures)
    finally:
        await consumer.stop()
        await producer.stop()
    return done


async def _plumbing(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, internal: str, target: str, stop: asyncio.Event
) -> int:
    from streams.kafka import BatchSender  # (the worker's own batching; `raw` stays plain aiokafka)

    done = 0
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=200, max_records=BATCH)
        if not batch:
            continue
        loaded: list[tuple[bytes | None, Any]] = []
        sender = BatchSender(producer)
        for records in batch.values():
            for rec in records:
                obj = orjson.loads(rec.value)
                loaded.append((rec.key, obj))
                sender.put(internal, orjson.dumps(obj), 0, key=rec.key, headers=_HEADERS)
                if sender.queued:
                    await sender.drain()
        await sender.flush()  # the internal records are acknowledged before their outputs go
        sender = BatchSender(producer)
        for key, obj in loaded:
            small = orjson.dumps({"id": obj.get("id") if isinstance(obj, dict) else None})
            sender.put(target, small, 0, key=key, headers=_OUTPUT_HEADERS)
            if sender.queued:
                await sender.drain()
        await sender.flush()
        done += len(loaded)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rawpipe")
    parser.add_argument("bootstrap")
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("offsets", help="partition:offset,... to start from")
    parser.add_argument("--shape", choices=SHAPES, default="raw")
    args = parser.parse_args(argv)
    offsets = {int(p): int(o) for p, o in (item.split(":") for item in args.offsets.split(","))}

    async def serve() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await run(args.bootstrap, args.source, args.target, offsets, stop, args.shape)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
