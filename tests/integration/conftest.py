"""Integration fixtures: one embedded Tansu broker per session, workers as real processes.

Every test gets its own topic names and app id (`names`), so tests share the broker without
seeing each other's records. Workers run `socnoc worker` in a subprocess (their own process
group) with group settings tuned for a quick join on Tansu. The helpers themselves live in
`streams.testing` (shared with `make soak`); they are re-exported here for the tests.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import EmbeddedBroker
from streams.testing import (
    DATA,
    ROOT,
    Names,
    Tail,
    WorkerProcess,
    ensure_topic_partitions,
    until,
)

__all__ = ["DATA", "ROOT", "Names", "Tail", "WorkerProcess", "ensure_topic_partitions", "until"]

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    instance = EmbeddedBroker(log_path=log_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def names(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Names:
    short = request.node.name.replace("test_", "")[:20].replace("[", "-").replace("]", "")
    return Names(broker.bootstrap, f"t{next(_counter)}-{short}")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str = "worker") -> WorkerProcess:
        proc = WorkerProcess(env, tmp_path / f"{name}-{len(started)}.log").start()
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill9() if proc.alive() else proc._close()


@pytest.fixture
async def producer(broker: EmbeddedBroker) -> AsyncIterator[AIOKafkaProducer]:
    instance = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", max_request_size=16 * 1024 * 1024
    )
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()
