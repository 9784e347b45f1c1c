"""A real Prometheus scrapes socnoc during a replay of bundled data through Kafka.

Wazuh alerts (security) and BGL log lines (ops) are produced to the input topics, garbage
included, plus an Alertmanager webhook and syslog lines through the gateway. Then: every
dashboard panel's query returns data through the Prometheus HTTP API, and the counters equal
what the worker published on its output topics (the replay's own counts).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from tests.ingest.conftest import Broker, consume
from tests.ingest.stack import (
    ROOT,
    TOKEN,
    Procs,
    dashboard_queries,
    prom_by,
    prom_query,
    prom_value,
    read_topic,
    start_gateway,
    start_prometheus,
    start_worker,
)
from tests.programs import free_port

WAZUH = ROOT / "examples" / "data" / "wazuh-ldsv1" / "ossec_spiral.json"
BGL = ROOT / "examples" / "data" / "loghub-bgl" / "BGL_2k.log"
GARBAGE = [b"not json at all", b"{}", b"\xff\xfe\x00"]
SYSLOG = [f"<187>1 2024-05-01T12:00:0{i}Z edge-rtr2 bgpd 9 PEER - neighbour 10.0.0.{i} down"
          for i in range(3)]


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value)
        await producer.flush()
    finally:
        await producer.stop()


async def through_gateway(http_port: int, syslog_port: int) -> None:
    webhook = {"version": "4", "status": "firing", "receiver": "socnoc", "groupKey": "g",
               "alerts": [{"status": "firing", "startsAt": "2024-05-01T12:00:00Z",
                           "labels": {"alertname": "NodeDown", "instance": f"edge-rtr{i}",
                                      "severity": "critical"}} for i in (1, 2)]}
    async with aiohttp.ClientSession() as session, session.post(
        f"http://127.0.0.1:{http_port}/api/v1/alertmanager", json=webhook,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as response:
        assert response.status == 202, await response.text()
    _, writer = await asyncio.open_connection("127.0.0.1", syslog_port)
    for line in SYSLOG:
        data = line.encode()
        writer.write(str(len(data)).encode() + b" " + data)  # RFC 6587 octet counting
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_dashboard_and_counters_during_a_replay(broker: Broker, procs: Procs) -> None:
    wazuh, bgl = lines(WAZUH), lines(BGL)
    total_alerts = len(wazuh) + len(bgl) + len(GARBAGE) + 2 + len(SYSLOG)
    total_records = len(wazuh) + len(bgl) + len(GARBAGE) + 1 + len(SYSLOG)
    try:
        worker = start_worker(
            procs, broker.bootstrap, SOCNOC_IDLE_TIMEOUT="2s",
            SOCNOC_INPUTS='{"soc.alerts": {"format": "wazuh"}, "noc.events": {"format": "bgl"}}',
        )
        syslog_port = free_port()
        http, gw_metrics = start_gateway(procs, broker.bootstrap,
                                         SOCNOC_SYSLOG_HOST="127.0.0.1",
                                         SOCNOC_SYSLOG_TCP_PORT=str(syslog_port))
        prom = start_prometheus(procs, {"socnoc": [worker], "socnoc-gateway": [gw_metrics]})

        await produce(broker.bootstrap, "soc.alerts", wazuh + GARBAGE)
        await produce(broker.bootstrap, "noc.events", bgl)
        await through_gateway(http, syslog_port)

        # Every input alert gets exactly one decision (windows close on the idle timeout).
        decisions = [orjson.loads(r.value) for r in
                     await consume(broker.bootstrap, "alerts.decisions", total_alerts, 120)]
        ids = Counter(d["alert_id"] for d in decisions)
        assert len(ids) == total_alerts and max(ids.values()) == 1
        by_disposition = Counter(d["disposition"] for d in decisions)

        async with aiohttp.ClientSession() as session:
            # Wait for a scrape that saw everything, and enough samples for rate().
            async with asyncio.timeout(60):
                while await prom_value(session, prom, "sum(socnoc_decisions_total)") \
                        != total_alerts or not await prom_query(
                            session, prom, "min(count_over_time(socnoc_decisions_total[1m])) > 3"):
                    await asyncio.sleep(0.5)
            # Incident events settle after the last decision; wait until the topic and the
            # counter agree, then compare them exactly.
            async with asyncio.timeout(30):
                while True:
                    events = [orjson.loads(r.value)
                              for r in await read_topic(broker.bootstrap, "incidents")]
                    lifecycle = Counter((e["kind"], e["event"]) for e in events)
                    scraped = await prom_query(session, prom,
                                               "sum by (kind, event) (socnoc_incidents_total)")
                    counted = {(r["metric"]["kind"], r["metric"]["event"]): float(r["value"][1])
                               for r in scraped if float(r["value"][1])}
                    if counted == {k: float(v) for k, v in lifecycle.items()}:
                        break
                    await asyncio.sleep(0.5)
            assert sum(n for (_, ev), n in lifecycle.items() if ev == "opened") > 0
            assert sum(n for (_, ev), n in lifecycle.items() if ev == "resolved") > 0

            assert await prom_by(session, prom, "disposition",
                                 "sum by (disposition) (socnoc_decisions_total) > 0") == {
                k: float(v) for k, v in by_disposition.items()}
            dlq = await read_topic(broker.bootstrap, "alerts.dlq")
            assert len(dlq) >= len(GARBAGE)
            assert await prom_value(session, prom, "sum(socnoc_dlq_records_total)") == len(dlq)
            assert await prom_value(session, prom, "sum(socnoc_input_records_total)") \
                == total_records
            assert await prom_value(session, prom, "sum(socnoc_alerts_total)") \
                == total_alerts - by_disposition["invalid"]
            sources = await prom_by(session, prom, "source",
                                    "sum by (source) (socnoc_alerts_total)")
            assert sources["alertmanager"] == 2 and sources["syslog"] == len(SYSLOG)
            opened = sum(n for (_, ev), n in lifecycle.items() if ev == "opened")
            reduction = await prom_value(session, prom, "socnoc_noise_reduction_ratio")
            assert reduction is not None
            assert abs(reduction - (1 - opened / total_alerts)) < 1e-9
            owners = await prom_value(session, prom, "sum(socnoc_incidents_by_owner_total)")
            assert owners is not None and owners >= opened
            assert await prom_value(
                session, prom, 'sum(socnoc_gateway_records_produced_total{topic="noc.events"})'
            ) == 1  # the webhook; syslog has its own counter

            assert await prom_value(
                session, prom, 'socnoc_syslog_messages_total{transport="tcp"}') == len(SYSLOG)

            # Each socnoc process exports its own CPU, memory and GC figures.
            for job in ("socnoc", "socnoc-gateway"):
                rss = await prom_value(
                    session, prom, f'sum(process_resident_memory_bytes{{job="{job}"}})')
                assert rss is not None and rss > 10_000_000, job
                assert await prom_query(
                    session, prom, f'python_gc_collections_total{{job="{job}"}}'), job

            # Every dashboard panel shows data (a target may be empty, e.g. no cap was hit).
            empty: dict[str, list[str]] = {}
            for title, expr in dashboard_queries():
                if not await prom_query(session, prom, expr):
                    empty.setdefault(title, []).append(expr)
            blank = {t for t in empty if all(
                e in empty[t] for tt, e in dashboard_queries() if tt == t)}
            assert not blank, empty

            # socnoc's own health rules load, and none fires on this healthy stack.
            async with session.get(f"http://127.0.0.1:{prom}/api/v1/rules") as response:
                groups = (await response.json())["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert rules and all(r["health"] == "ok" for r in rules)
            assert not [r["name"] for r in rules if r["state"] == "firing"]
    except BaseException:
        print(procs.logs())
        raise
