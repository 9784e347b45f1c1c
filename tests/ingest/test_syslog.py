"""The syslog listener fed by a real rsyslog (omfwd) and by garbage, against a real broker."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from schemas.adapters.base import ParseContext
from schemas.adapters.syslog import SyslogAdapter
from schemas.models import Alert, Severity
from streams.kafka_sink import KafkaSink
from streams.metrics import SyslogMetrics
from streams.syslog import SyslogConfig, SyslogListener
from tests.ingest.conftest import (
    Broker,
    consume,
    free_port,
    require_binary,
    stop_process,
    wait_for_port,
)

COUNT = 5


class Listening:
    def __init__(self, listener: SyslogListener, registry: CollectorRegistry) -> None:
        self.listener = listener
        self.registry = registry

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def listening(broker: Broker) -> AsyncIterator[Listening]:
    registry = CollectorRegistry()
    sink = KafkaSink(broker.bootstrap, timeout_s=2.0, retry_s=0.2)
    await sink.start()
    assert await sink.wait_up(10)
    listener = SyslogListener(
        SyslogConfig(host="127.0.0.1", udp_port=0, tcp_port=0, max_message_bytes=2048),
        sink, SyslogMetrics.create(registry),
    )
    await listener.start()
    try:
        yield Listening(listener, registry)
    finally:
        await listener.stop()
        await sink.stop()


RSYSLOG_CONF = """
global(workDirectory="{work}" maxMessageSize="8k")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{in_port}" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
  action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp"
         template="RSYSLOG_TraditionalForwardFormat")
  action(type="omfwd" target="127.0.0.1" port="{udp}" protocol="udp"
         template="RSYSLOG_SyslogProtocol23Format")
}}
"""


@pytest.fixture
def rsyslog_factory(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        stop_process(proc)


def start_rsyslog(tmp_path: Path, procs: list[subprocess.Popen[bytes]], tcp: int, udp: int
                  ) -> int:
    rsyslogd = require_binary("/usr/sbin/rsyslogd", "rsyslogd")
    work = tmp_path / "rsyslog"
    work.mkdir()
    in_port = free_port()
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, in_port=in_port, tcp=tcp, udp=udp))
    check = subprocess.run([rsyslogd, "-N1", "-f", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with (work / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [rsyslogd, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )
    procs.append(proc)
    wait_for_port(in_port, proc=proc)
    return in_port


LINES = {
    # A core switch reporting link flaps in BSD syslog, as most network devices do.
    "rfc3164": "<187>May  1 12:00:0{i} core-sw1 ifmgr[77]: uplink Gi0/{i} down\n",
    # The same in RFC 5424 (rsyslog's traditional format then writes `ifmgr[77]` without a colon).
    "rfc5424": "<187>1 2024-05-01T12:00:0{i}Z core-sw1 ifmgr 77 - - uplink Gi0/{i} down\n",
}


@pytest.mark.parametrize("arrives_as", sorted(LINES))
async def test_rsyslog_forwards_through_the_listener_to_kafka(
    listening: Listening, broker: Broker, tmp_path: Path,
    rsyslog_factory: list[subprocess.Popen[bytes]], arrives_as: str,
) -> None:
    listener = listening.listener
    assert listener.tcp_port and listener.udp_port
    in_port = start_rsyslog(tmp_path, rsyslog_factory, listener.tcp_port, listener.udp_port)
    reader, writer = await asyncio.open_connection("127.0.0.1", in_port)
    for i in range(COUNT):
        writer.write(LINES[arrives_as].format(i=i).encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    records = await consume(broker.bootstrap, "noc.events", 3 * COUNT)
    assert len(records) == 3 * COUNT
    adapter = SyslogAdapter()
    alerts: list[Alert] = []
    for record in records:
        headers = dict(record.headers)
        assert headers["socnoc-format"] == b"syslog"
        assert record.key == b"127.0.0.1"
        ctx = ParseContext(record_id=f"noc.events:{record.partition}:{record.offset}",
                           transport_time=datetime.fromtimestamp(record.timestamp / 1000, UTC))
        (alert,) = adapter.parse(record.value, ctx)
        assert isinstance(alert, Alert), alert
        alerts.append(alert)
    assert {a.asset for a in alerts} == {"core-sw1"}
    assert {a.signature for a in alerts} == {"ifmgr"}
    assert {a.severity for a in alerts} == {Severity.HIGH}  # PRI 187: local7.err
    titles = sorted(a.title for a in alerts)
    assert titles == sorted(f"uplink Gi0/{i} down" for i in range(COUNT) for _ in range(3))
    assert listening.count("socnoc_syslog_messages_total", transport="tcp") == 2 * COUNT
    assert listening.count("socnoc_syslog_messages_total", transport="udp") == COUNT
    assert listening.count("socnoc_syslog_bad_frames_total", transport="tcp",
                           reason="bad_length") == 0


async def test_garbage_is_counted_and_never_stops_the_listener(
    listening: Listening, broker: Broker
) -> None:
    listener = listening.listener
    assert listener.tcp_port and listener.udp_port
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", listener.udp_port))
    udp.sendto(b"\0")
    udp.sendto(b"\r\n")
    udp.sendto(b"<13>" + b"u" * 5000)
    udp.sendto(b"\xff\xfe binary \x00 junk")
    udp.close()

    _, writer = await asyncio.open_connection("127.0.0.1", listener.tcp_port)
    writer.write(b"99999999 " + b"z" * 100 + b"\n")   # octet count beyond the limit
    writer.write(b"<13>" + b"v" * 3000 + b"\n")        # oversize line
    writer.write(b"   \n\n\0\r\n")                     # blanks
    writer.write(b"12 <13>ok frame")                   # valid octet-counted frame
    writer.write(b"<13>May  1 12:00:00 sw9 app: after the garbage\n")
    writer.write(b"40 <13>cut short")                  # truncated by the sender closing
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    # The two valid TCP messages and the binary UDP one reach Kafka (the worker's adapter
    # turns undecodable ones into dead letters); the bad frames are only counted.
    records = await consume(broker.bootstrap, "noc.events", 3)
    values = sorted(r.value for r in records)
    assert values == sorted([b"<13>ok frame", b"<13>May  1 12:00:00 sw9 app: after the garbage",
                             b"\xff\xfe binary \x00 junk"])
    async with asyncio.timeout(10):
        while listening.count("socnoc_syslog_bad_frames_total", transport="tcp",
                              reason="bad_length") < 1:
            await asyncio.sleep(0.02)
    assert listening.count("socnoc_syslog_bad_frames_total", transport="udp", reason="empty") == 2
    assert listening.count("socnoc_syslog_bad_frames_total", transport="udp",
                           reason="oversize") == 1
    assert listening.count("socnoc_syslog_bad_frames_total", transport="tcp",
                           reason="oversize") == 2

    # Still serving.
    _, writer = await asyncio.open_connection("127.0.0.1", listener.tcp_port)
    writer.write(b"<13>May  1 12:00:01 sw9 app: still alive\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    records = await consume(broker.bootstrap, "noc.events", 4)
    assert b"<13>May  1 12:00:01 sw9 app: still alive" in {r.value for r in records}


async def test_udp_beyond_the_queue_is_dropped_and_counted_while_kafka_is_down() -> None:
    registry = CollectorRegistry()
    sink = KafkaSink(f"127.0.0.1:{free_port()}", timeout_s=0.5, retry_s=0.2)
    await sink.start()
    listener = SyslogListener(
        SyslogConfig(host="127.0.0.1", udp_port=0, tcp_port=None, queue_size=2, batch_size=1),
        sink, SyslogMetrics.create(registry),
    )
    await listener.start()
    assert listener.udp_port
    try:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", listener.udp_port))
        for i in range(6):
            udp.sendto(f"<13>May  1 12:00:0{i} sw1 app: message {i}".encode())
        udp.close()
        # One message is held by the producing task, two wait in the queue, three drop.
        async with asyncio.timeout(10):
            while (registry.get_sample_value("socnoc_syslog_dropped_total",
                                             {"transport": "udp"}) or 0) < 3:
                await asyncio.sleep(0.02)
        assert registry.get_sample_value("socnoc_syslog_messages_total",
                                         {"transport": "udp"}) is None
    finally:
        async with asyncio.timeout(10):  # stopping never hangs on an unreachable Kafka
            await listener.stop(drain_s=0.5)
            await sink.stop()
