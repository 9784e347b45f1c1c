"""A worker running both stages hands its own internal records from decoding to correlating
in memory.

The decode stage learns each internal record's offset from the broker's acknowledgement of
its batch (base offset + position). The correlate stage processes a record from memory only
when it is the next offset of its partition. With `handoff=memory` (the default) it stops
fetching a partition while that keeps up, and fetches it again from the next offset at a gap
(another decoder's records), or when nothing has been handed over for a moment and the
partition's end shows records it has not processed. With
`handoff=verify` it goes on fetching and compares each record's bytes with what its consumer
delivers at that offset; a difference ends the session, the partitions are restored from
their checkpoints and fed from Kafka, and the process stops handing records over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.decode_stage import DecodeStage
from streams.kafka import BatchSender, TopicSpec, ensure_topics
from streams.records import AlertItem, Local
from streams.worker import Worker
from tests.integration.checks import assert_decided_once
from tests.integration.conftest import Names, Tail, WorkerProcess, until
from tests.integration.datasets import aitads_rows, produce_paced

pytestmark = pytest.mark.integration


async def test_acknowledged_offsets_are_where_the_records_are(names: Names, producer: AIOKafkaProducer) -> None:
    """Offsets from the acknowledgements, for small batches, a batch that filled up and went
    out early (`add`) or was queued until `send` (`put`), and a record too big for a batch
    (sent alone), equal the log's."""
    topic = f"{names.prefix}.tagged"
    await ensure_topics(names.settings(), [TopicSpec(topic, 2)])
    expected: dict[tuple[int, int], bytes] = {}
    for round_ in range(3):
        sender = BatchSender(producer, tagged=True)
        values = [f"r{round_}-{i}-".encode() * (1 + i % 40) for i in range(400)]
        values.append(b"x" * 40_000)  # bigger than a batch (16 KB)
        for i, value in enumerate(values):
            if round_ == 1:
                sender.put(topic, value, i % 2, tag=value)
            else:
                await sender.add(topic, value, partition=i % 2, tag=value)
        assert sender.queued == (round_ == 1)
        await sender.add(topic, b"keyed", key=b"some-key", tag=b"keyed")
        futures = await sender.send()
        await asyncio.gather(*futures)
        sent = sender.take_sent()
        assert len(sent) == len(futures) > 3  # filled batches went out before send()
        for request in sent:
            base = request.ack.result().offset
            for i, tag in enumerate(request.tags):
                expected[(request.partition, base + i)] = tag
    assert len(expected) == 3 * 402

    async with Tail(names.bootstrap, topic) as tail:
        await until(lambda: len(tail.records[topic]) >= len(expected), 60, "every record read back")
        found = {(r.partition, r.offset): r.value for r in tail.records[topic]}
    assert found == expected


@pytest.mark.parametrize("mode", ["memory", "verify"])
async def test_a_worker_correlates_what_it_decoded_from_memory(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer, mode: str
) -> None:
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
        SOCNOC_IDLE_TIMEOUT="2",  # windows close once the input stops
        SOCNOC_HANDOFF=mode,
        # paced input has no pause this long: a partition is fetched again only if the
        # decoder stalls for it (a full suite on a slow machine made 250 ms stalls)
        SOCNOC_HANDOFF_IDLE="3s",
    )
    worker = workers(env)
    await worker.wait_partitions()

    async def correlating() -> bool:  # what is decoded before then is read from Kafka
        health = await worker.health()
        return health is not None and bool(health[1]["stages"]["correlate"]["partitions"])

    await until(correlating, 60, "the correlate stage's partitions", worker)
    rows = await _decide_once(names, producer, worker, 3000)
    health = await worker.health()
    assert health is not None
    correlate = health[1]["stages"]["correlate"]
    # alerts, ticks and the start markers; everything but the rules at start-up, which
    # the worker writes with its own producer, can come from memory
    assert correlate["records"] > len(rows)
    assert correlate["from_memory"] >= len(rows) // 2, correlate
    assert correlate["errors"] == 0, correlate
    if mode == "memory":  # the partition is not fetched while its records come from memory
        # (a fetch already in flight when the partition was paused reads a few back)
        assert correlate["read_back"] < correlate["from_memory"] // 10, correlate
    else:  # every one is fetched again, to be compared
        assert correlate["read_back"] >= correlate["from_memory"] // 2, correlate


async def test_an_idle_partition_fed_from_memory_is_not_fetched_again_without_new_records(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """Alone, a worker's correlating side gets its records from memory: once its input stops,
    each paused partition's end (asked every `handoff_idle`) holds nothing it has not
    processed, and it stays paused (each was fetched again as soon as it went idle, before
    the ends were asked: ~70 empty fetches a second on Tansu)."""
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
        SOCNOC_HANDOFF="memory",
        # well past the round trip after which the decode stage hands over the ticks it sent
        # (a partition asked for its end before then is behind by them, and fetched again)
        SOCNOC_HANDOFF_IDLE="1s",
        SOCNOC_IDLE_TIMEOUT="600",  # no idle ticks during the test
    )
    worker = workers(env)
    await worker.wait_partitions()

    async def correlate() -> dict[str, object]:
        health = await worker.health()
        assert health is not None
        stage: dict[str, object] = health[1]["stages"]["correlate"]
        return stage

    async def correlating() -> bool:
        return bool((await correlate())["partitions"])

    await until(correlating, 60, "the correlate stage's partitions", worker)
    _, rows = aitads_rows()
    await produce_paced(producer, names.alerts, [row for _, row in rows[:300]], [], 3000)

    async def handed() -> bool:
        return int(str((await correlate())["from_memory"])) >= 300

    await until(handed, 60, "the alerts handed over in memory", worker)
    await asyncio.sleep(0.5)
    before = await correlate()
    await asyncio.sleep(3.5)  # 3 x handoff_idle with nothing new
    after = await correlate()
    # the alerts' partition (at least) stays paused, and none is fetched again meanwhile
    assert int(str(before["paused"])) >= 1, before
    assert after["paused"] == before["paused"] and after["resumed"] == before["resumed"], (before, after)
    assert after["errors"] == 0, after


async def test_a_record_that_differs_from_memory_is_caught_and_read_from_kafka(
    names: Names, producer: AIOKafkaProducer
) -> None:
    """Two alerts handed over with each other's offsets (as if the broker misreported them):
    the comparison with the log catches it, the stage restarts from its checkpoint, and
    every alert still gets exactly one decision."""
    worker = Worker(
        names.settings(
            SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
            SOCNOC_WEB_PORT="0",
            SOCNOC_IDLE_TIMEOUT="2",
            SOCNOC_KAFKA_RETRY_MAX="1",
            SOCNOC_HANDOFF="verify",
        )
    )
    decode = next(s for s in worker.stages if isinstance(s, DecodeStage))
    handoff = decode.handoff
    assert handoff is not None, "a worker running both stages hands records over"
    swapped: list[int] = []

    def swap_two_alerts(written: list[Local]) -> None:
        alerts = [i for i, local in enumerate(written) if isinstance(local.item, AlertItem)]
        if not swapped and len(alerts) >= 2:
            a, b = written[alerts[0]], written[alerts[1]]
            if a.partition == b.partition:
                written = list(written)
                written[alerts[0]] = Local(a.partition, a.offset, b.item, b.value)
                written[alerts[1]] = Local(b.partition, b.offset, a.item, a.value)
                swapped.append(a.offset)
        handoff(written)

    decode.handoff = swap_two_alerts
    running = asyncio.create_task(worker.run())
    try:
        await until(lambda: worker.started.is_set(), 60, "the worker started")
        correlate = worker.health.stage("correlate")
        await until(lambda: correlate.running and bool(correlate.partitions), 60, "partitions assigned")
        _, rows = aitads_rows()
        rows = rows[:1500]
        sent: list[str] = []
        async with Tail(names.bootstrap, names.decisions) as tail:
            await produce_paced(producer, names.alerts, [r for _, r in rows], sent, 3000)
            await until(lambda: len(tail.records[names.decisions]) >= len(rows), 120, "every alert decided")
            await asyncio.sleep(2.5)  # checkpoints and restarts settle: anything repeated shows
            decisions = tail.values(names.decisions)
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, 60)
    assert swapped, "no two alerts were handed over in one acknowledgement"
    assert correlate.errors >= 1 and "HandoffMismatch" in (correlate.last_error or ""), correlate
    assert_decided_once(decisions, set(sent))


async def test_records_another_decoder_writes_in_between_are_read_from_kafka(
    names: Names, workers: Callable[..., WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """`handoff=memory` with a second, decode-only worker writing to the same correlation
    partition: the correlating worker stops fetching while its own records keep up, and
    fetches again at each gap the other decoder leaves (or when its own input is quiet), so
    every alert of both decoders is still decided, once."""
    env = names.worker_env(
        SOCNOC_INPUTS=orjson.dumps({names.alerts: {"format": "aitads"}}).decode(),
        SOCNOC_IDLE_TIMEOUT="2",
        SOCNOC_HANDOFF="memory",
    )
    both = workers(env, "both")
    decoder = workers({**env, "SOCNOC_STAGES": "decode"}, "decoder")
    await both.wait_partitions()
    await decoder.wait_partitions()

    async def split() -> bool:  # each decode stage owns some of the input partitions
        a, b = await both.health(), await decoder.health()
        if a is None or b is None:
            return False
        pa, pb = (set(h[1]["stages"]["decode"]["partitions"]) for h in (a, b))
        correlating = a[1]["stages"]["correlate"]["partitions"]
        return bool(pa and pb and not pa & pb and correlating)

    await until(split, 60, "two decoders and one correlator", both)
    await _decide_once(names, producer, both, 3000)
    health = await both.health()
    assert health is not None
    correlate = health[1]["stages"]["correlate"]
    decoded = (await decoder.health() or (0, {}))[1]["stages"]["decode"]["records"]
    assert decoded > 0, "the decode-only worker decoded nothing"
    assert correlate["from_memory"] > 0, correlate
    # the other decoder's records, read from Kafka
    assert correlate["records"] - correlate["from_memory"] >= decoded, (correlate, decoded)
    assert correlate["resumed"] >= 1, correlate  # fetched again at the other decoder's records
    assert correlate["errors"] == 0, correlate


async def _decide_once(names: Names, producer: AIOKafkaProducer, worker: WorkerProcess, count: int) -> list[bytes]:
    """Send the first `count` AIT-ADS rows at 3,000/s; each gets exactly one decision."""
    _, rows = aitads_rows()
    values = [row for _, row in rows[:count]]
    sent: list[str] = []
    async with Tail(names.bootstrap, names.decisions) as tail:
        await produce_paced(producer, names.alerts, values, sent, 3000)
        await until(lambda: len(tail.records[names.decisions]) >= len(values), 120, "every alert decided", worker)
        await asyncio.sleep(1.0)  # anything decided twice shows up now
        decisions = tail.values(names.decisions)
    assert_decided_once(decisions, set(sent))
    return values
