"""The short soak: a slice of real data through two workers under every kind of fault, and
the independent checker's count: nothing lost, nothing decided twice, no incident opened twice.

Faults, in order: `kill -9` of a worker (restarted a moment later) three times, a second
worker joining and later leaving (rebalances), the broker unreachable for the workers
(held connections, then reset connections), and a redelivery (both workers killed, the
decode group's offsets rewound). The input holds 1% garbage and out-of-order and late
records. `make soak` runs the same with random faults for minutes.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from bench.soak import Checker, Counts, Fault, Soak, SoakConfig
from streams.broker import free_port
from streams.faultproxy import FaultProxy, kafka_client_id
from streams.testing import Names

pytestmark = pytest.mark.integration

PLAN = [
    Fault(4.0, "kill", 1.0),
    Fault(9.0, "rebalance"),  # worker 1 joins
    Fault(14.0, "outage", 3.0, "drop"),
    Fault(21.0, "kill", 1.0),
    Fault(26.0, "redeliver", 200),
    Fault(33.0, "rebalance"),  # worker 1 leaves
    Fault(36.0, "outage", 2.0, "reset"),
    Fault(40.0, "kill", 0.5),
]


async def test_short_soak_conserves_every_alert(tmp_path: Path) -> None:
    cfg = SoakConfig(
        seconds=44.0,
        seed=20261126,
        rate=70.0,
        window=(64_000, 3_000),  # Huawei alarms and AIT-ADS routine traffic turning into the attack
        max_records=3_000,
        plan=PLAN,
        checkpoint_s=1.0,
        drain_timeout_s=120.0,
        out_dir=tmp_path,
    )
    soak = Soak(cfg)
    result = await soak.run()
    logs = "\n".join(w.log_text()[-3000:] for w in soak.workers)
    assert result["in"] >= 2_900, result
    _assert_conserved(result, soak, logs)
    assert result["decided"] == result["in"]
    assert result["dlq"] >= 10, result  # ~1% garbage, each dead-lettered once
    faults = result["faults"]
    assert faults["kills"] >= 3 and faults["rebalances"] >= 2 and faults["broker_outages"] == 2, faults
    assert soak.counts.redeliveries == 1 and soak.counts.redelivered > 0, soak.counts
    assert soak.counts.late > 0 and soak.counts.swapped > 0, soak.counts


def _assert_conserved(result: dict[str, Any], soak: Soak, logs: str) -> None:
    """Nothing lost, nothing decided twice, no incident opened twice."""
    assert result["lost"] == 0, (result, soak.details, logs)
    assert result["duplicate_decisions"] == 0, (result, soak.details, logs)
    assert result["duplicate_incident_opens"] == 0, result


def _request(client_id: bytes, body: bytes = b"ping") -> bytes:
    header = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id + body
    return struct.pack(">i", len(header)) + header


async def _roundtrip(port: int, client_id: bytes, timeout_s: float = 0.5) -> bytes | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        message = _request(client_id)
        writer.write(message)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(message)), timeout_s)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return None
    finally:
        writer.close()


async def test_fault_proxy_cuts_off_all_but_the_exempt_clients() -> None:
    assert kafka_client_id(_request(b"socnoc-decode")) == "socnoc-decode"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[:2]
    port = free_port()
    proxy = await FaultProxy(port, target, exempt=["soak-"]).start()
    try:
        assert await _roundtrip(port, b"socnoc-decode") == _request(b"socnoc-decode")
        held_reader, held_writer = await asyncio.open_connection("127.0.0.1", port)
        held_writer.write(_request(b"socnoc-correlate"))
        await held_reader.readexactly(len(_request(b"socnoc-correlate")))
        proxy.cut("drop")
        assert await _roundtrip(port, b"socnoc-decode") is None  # new connections: no answer
        held_writer.write(_request(b"socnoc-correlate"))
        with pytest.raises(TimeoutError):  # held connections: no answer either
            await asyncio.wait_for(held_reader.read(1), 0.3)
        assert await _roundtrip(port, b"soak-producer") == _request(b"soak-producer")
        proxy.heal()
        assert await asyncio.wait_for(held_reader.read(1), 2) == b""  # reset: the client reconnects
        held_writer.close()
        assert await _roundtrip(port, b"socnoc-decode") == _request(b"socnoc-decode")
        proxy.cut("reset")
        assert await _roundtrip(port, b"socnoc-decode") is None
        proxy.heal()
        assert await _roundtrip(port, b"socnoc-decode") == _request(b"socnoc-decode")
    finally:
        await proxy.stop()
        server.close()
        await server.wait_closed()


def test_checker_counts_losses_and_repeats() -> None:
    names = Names("unused:0", "chk")
    checker = Checker(names)

    def records(*values: dict[str, object]) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(
                value=orjson.dumps(v), partition=0, offset=i, timestamp=1000 + i, headers=[("socnoc-src", b"3:4%d" % i)]
            )
            for i, v in enumerate(values)
        ]

    decision = {"alert_id": "a", "disposition": "noise"}
    checker.feed(names.decisions, records(decision, decision, {"alert_id": "t:0:7", "disposition": "invalid"}))
    checker.feed(names.dlq, records({"topic": "t", "partition": 0, "offset": 7}))
    opened = {"incident_id": "INC-1", "version": 1, "event": "opened"}
    checker.feed(names.incidents, records(opened, opened, {"incident_id": "INC-2", "version": 1, "event": "opened"}))
    result = checker.result({"a", "b", "t:0:7"}, Counts(kills=3, rebalances=1, outages=1))
    assert result == {
        "in": 3,
        "decided": 2,
        "lost": 1,
        "duplicate_decisions": 1,
        "duplicate_incident_opens": 1,
        "dlq": 1,
        "faults": {"kills": 3, "rebalances": 1, "broker_outages": 1},
    }
    details = checker.details({"a", "b", "t:0:7"})
    assert details["repeated_incident_versions"] == 1
    # where the repeated decision's copies were read, and which internal partition made them
    assert details["repeat_sample"] == {"a": [(0, 0, 1000, "3:40"), (0, 1, 1001, "3:41")]}
    assert details["repeats_by_src_partition"] == {"3": 1}
    assert details["repeats_time_span_ms"] == [1001, 1001]


async def test_a_worker_cut_off_past_its_session_repeats_nothing(tmp_path: Path) -> None:
    # Regression: a worker expelled from the group (cut off longer than the session timeout)
    # rejoined, got its old partitions back and kept its stale in-memory engines, so it
    # decided again what the other worker had decided meanwhile (2,242 repeats in a soak).
    cfg = SoakConfig(
        seconds=24.0,
        seed=11,
        rate=80.0,
        window=(64_000, 1_800),
        max_records=1_800,
        plan=[Fault(2.0, "rebalance"), Fault(7.0, "isolate", 8.0, "drop")],
        checkpoint_s=1.0,
        drain_timeout_s=120.0,
        out_dir=tmp_path,
    )
    soak = Soak(cfg)
    result = await soak.run()
    logs = "\n".join(w.log_text()[-3000:] for w in soak.workers)
    assert soak.counts.isolations == 1
    # expelled, it either fenced itself (the lease lapsed with outputs undelivered, or with
    # outputs to send: a new session) or found a new member id on rejoining
    told = "".join(w.log_text() for w in soak.workers)
    assert "LeaseLost" in told or "rejoined the group as a new member" in told, logs
    _assert_conserved(result, soak, logs)
