"""Real processes for the end-to-end tests: socnoc worker/gateway, Prometheus, and helpers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from tests.programs import free_port, require_binary, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "socnoc.json"
SOCNOC = [sys.executable, "-m", "streams.cli"]
TOKEN = "e2e-token-0123456789abcdef"


class Procs:
    """Started processes, their logs in the test's tmp dir, stopped in reverse order."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
        self.procs.append((name, proc))
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{(self.tmp / f'{name}.log').read_text(errors='replace')[-3000:]}"
            for name, _ in self.procs
        )

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            stop_process(proc, timeout_s=15)
        self.procs.clear()


def socnoc_env(bootstrap: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCNOC_")}
    env.update(SOCNOC_KAFKA_BOOTSTRAP=bootstrap, SOCNOC_WEB_HOST="127.0.0.1",
               SOCNOC_PARTITIONS="2", **extra)
    return env


def start_worker(procs: Procs, bootstrap: str, **extra: str) -> int:
    """`socnoc worker`; returns its /metrics port once it listens."""
    port = free_port()
    proc = procs.start("worker", [*SOCNOC, "worker"],
                       socnoc_env(bootstrap, SOCNOC_WEB_PORT=str(port), **extra))
    wait_for_port(port, 30, proc)
    return port


def start_gateway(procs: Procs, bootstrap: str, **extra: str) -> tuple[int, int]:
    """`socnoc gateway`; returns (HTTP port, /metrics port) once both listen."""
    http, metrics = free_port(), free_port()
    proc = procs.start("gateway", [*SOCNOC, "gateway"], socnoc_env(
        bootstrap, SOCNOC_WEB_PORT=str(metrics), SOCNOC_GATEWAY_HOST="127.0.0.1",
        SOCNOC_GATEWAY_PORT=str(http), SOCNOC_GATEWAY_TOKEN=TOKEN, **extra))
    wait_for_port(http, 30, proc)
    wait_for_port(metrics, 30, proc)
    return http, metrics


def start_prometheus(procs: Procs, targets: dict[str, list[int]],
                     extra_config: dict[str, Any] | None = None,
                     rule_files: tuple[str, ...] = ()) -> int:
    """Debian's prometheus scraping `job -> [ports]` every second, with socnoc's rules."""
    prometheus = require_binary("/usr/bin/prometheus", "prometheus")
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [*rule_files, str(ROOT / "deploy" / "prometheus" / "rules.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [
                {"targets": [f"127.0.0.1:{p}" for p in ports]}]}
            for job, ports in targets.items()
        ],
        **(extra_config or {}),
    }
    path = procs.tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = procs.start("prometheus", [
        prometheus, f"--config.file={path}", f"--storage.tsdb.path={procs.tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # The first evaluation can beat Alertmanager discovery; resend soon, not in 1 m.
        "--rules.alert.resend-delay=1s",
    ])
    wait_for_port(port, 30, proc)
    return port


async def prom_query(session: aiohttp.ClientSession, port: int, expr: str) -> list[Any]:
    async with session.get(f"http://127.0.0.1:{port}/api/v1/query",
                           params={"query": expr}) as response:
        body = await response.json()
    assert body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


async def prom_value(session: aiohttp.ClientSession, port: int, expr: str) -> float | None:
    result = await prom_query(session, port, expr)
    return float(result[0]["value"][1]) if result else None


async def prom_by(session: aiohttp.ClientSession, port: int, label: str, expr: str
                  ) -> dict[str, float]:
    result = await prom_query(session, port, expr)
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard target, Grafana variables filled in."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "1m")
                    .replace("$__range", "5m").replace("$__interval", "15s"))
            out.append((panel["title"], expr))
    return out


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` right now (up to the end offsets taken at the start)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        if topic not in await consumer.topics():  # also loads the cluster metadata
            return []
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while any([await consumer.position(tp) < end[tp] for tp in partitions]):
                batch = await consumer.getmany(*partitions, timeout_ms=200)
                for recs in batch.values():
                    records.extend(recs)
        return records
    finally:
        await consumer.stop()
