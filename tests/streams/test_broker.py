"""The embedded Tansu broker: starts on a free port, answers Kafka, stops with its group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from streams.broker import BrokerError, EmbeddedBroker, free_port, kafka_ready

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purpose
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def _wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_starts_answers_and_stops() -> None:
    broker = EmbeddedBroker()
    with broker:
        assert broker.running()
        assert kafka_ready(broker.host, broker.port)
        pid = broker.pid
        assert pid is not None
    assert not broker.running()
    assert _wait_gone(pid)
    assert not kafka_ready(broker.host, broker.port, timeout_s=0.2)


def test_stop_is_idempotent_and_kill_works() -> None:
    broker = EmbeddedBroker().start()
    pid = broker.pid
    assert pid is not None
    broker.kill()
    assert _wait_gone(pid)
    broker.stop()  # nothing left to stop


def test_nothing_listens_is_not_ready() -> None:
    assert not kafka_ready("127.0.0.1", free_port(), timeout_s=0.2)


def test_port_in_use_fails_clearly() -> None:
    with EmbeddedBroker() as first:
        second = EmbeddedBroker(first.port, start_timeout_s=3)
        with pytest.raises(BrokerError):
            second.start()
        assert not second.running()


def test_broker_dies_with_a_killed_parent(tmp_path: object) -> None:
    """A `kill -9` of the Python process that started it leaves no broker behind."""
    script = textwrap.dedent(
        """
        import sys, time
        from streams.broker import EmbeddedBroker
        broker = EmbeddedBroker().start()
        print(broker.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=os.getcwd()
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert _wait_gone(pid), "the broker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait(5)
        if parent.stdout is not None:
            parent.stdout.close()
