"""The raw pipeline `make bench` compares the worker with: consume, `orjson.loads`, produce.

A plain aiokafka consume-transform-produce loop with pinned settings — the same batch size,
fetch sizes, acks and linger as the worker's clients (`streams/kafka.py`,
`SOCNOC_BATCH_MAX_RECORDS`) — so the ratio measures what socnoc adds on top of Kafka
plumbing. It reads the input topic from the given offsets without a consumer group, loads
each record's JSON, produces one small record per input to the output topic and waits for
each batch's acknowledgements (at-least-once, like the worker's decode stage). Runs in its
own process, like the worker: `python -m bench.rawpipe BOOTSTRAP IN OUT P:O[,P:O...]`.
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

__all__ = ["CONSUMER", "PRODUCER", "BATCH", "run", "main"]

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


async def run(bootstrap: str, source: str, target: str, offsets: dict[int, int], stop: asyncio.Event) -> int:
    """Process records from `offsets` until `stop` is set; returns how many were processed."""
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rawpipe")
    parser.add_argument("bootstrap")
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("offsets", help="partition:offset,... to start from")
    args = parser.parse_args(argv)
    offsets = {int(p): int(o) for p, o in (item.split(":") for item in args.offsets.split(","))}

    async def serve() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await run(args.bootstrap, args.source, args.target, offsets, stop)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
