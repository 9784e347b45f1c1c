"""One round of the correlate stage (`CorrelateStage._round`) on records handed over from memory,
with the clients' stand-ins of `streams.testing` (no broker: the stage's Kafka side is covered
by the integration tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streams.correlate_stage import CorrelateStage
from streams.partition import Processor
from streams.partition_state import PartitionState
from streams.records import AlertItem, Local, encode_item
from streams.settings import Settings
from streams.testing import AckingProducer, NullConsumer
from streams.worker import Worker
from tests.streams.test_metrics import value
from tests.streams.test_partition import alert


def _stage(registry: CollectorRegistry) -> tuple[CorrelateStage, AckingProducer]:
    worker = Worker(Settings(partitions=1), registry=registry)
    stage = worker.stages[1]
    assert isinstance(stage, CorrelateStage)
    producer = AckingProducer(1)
    stage._producer, stage._consumer = producer, NullConsumer()  # type: ignore[assignment]
    stage.owned = {0: PartitionState(0, Processor(stage._new()), 0)}
    return stage, producer


async def test_a_round_decides_what_was_handed_over_and_counts_the_late_alerts() -> None:
    registry = CollectorRegistry()
    stage, producer = _stage(registry)
    items = [
        AlertItem(alert(600, "web-1", "s1"), 1, source="in:0"),
        AlertItem(alert(0, "db-1", "s2"), 2, source="in:0"),
    ]
    stage.offer([Local(0, i, item, encode_item(item).value) for i, item in enumerate(items)])
    await stage._round()
    assert stage.owned[0].next_offset == 2  # both records went through the engine
    assert value(registry, "socnoc_late_events_total") == 1  # ten hours behind the first
    await stage._round()  # (a round with nothing to do counts nothing more)
    assert value(registry, "socnoc_late_events_total") == 1
    # the late alert is decided at once, and its decision published to the decisions topic
    assert producer.ends.get((stage.settings.decisions_topic, 0), 0) >= 1
