"""End to end with the real programs: a Prometheus rule fires, Alertmanager posts to the
gateway, the worker opens an incident, and the gateway's read API shows it.

Every process is real: Tansu, `socnoc worker`, `socnoc gateway` (subprocesses), Debian's
prometheus and prometheus-alertmanager. Timings are short (1 s evaluation, 1 s group wait).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import yaml

from tests.ingest.conftest import Broker, consume
from tests.ingest.stack import (
    ROOT,
    TOKEN,
    Procs,
    start_gateway,
    start_prometheus,
    start_worker,
)
from tests.programs import free_port, require_binary, wait_for_port

ASSET = "core-sw9"


def alertmanager_config(tmp: Path, gateway_port: int) -> Path:
    """The shipped deploy/alertmanager/alertmanager.yml, pointed at this gateway."""
    config = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    webhook = config["receivers"][0]["webhook_configs"][0]
    webhook["url"] = f"http://127.0.0.1:{gateway_port}/api/v1/alertmanager"
    webhook["http_config"]["authorization"] = {"type": "Bearer", "credentials": TOKEN}
    config["route"].update(group_wait="1s", group_interval="1s")
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def fire_rule(tmp: Path) -> str:
    rules = {"groups": [{"name": "e2e", "interval": "1s", "rules": [{
        "alert": "CoreSwitchUplinkDown",
        "expr": "vector(1) > 0",
        "labels": {"severity": "critical", "instance": ASSET},
        "annotations": {"summary": f"uplink of {ASSET} is down"},
    }]}]}
    path = tmp / "e2e_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return str(path)


async def test_prometheus_alert_becomes_a_socnoc_incident(
    broker: Broker, procs: Procs, tmp_path: Path
) -> None:
    alertmanager = require_binary("/usr/bin/prometheus-alertmanager", "alertmanager")
    try:
        start_worker(procs, broker.bootstrap)
        gw_port, _ = start_gateway(procs, broker.bootstrap)
        am_port = free_port()
        am = procs.start("alertmanager", [
            alertmanager, f"--config.file={alertmanager_config(tmp_path, gw_port)}",
            f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",  # no HA gossip port
        ])
        wait_for_port(am_port, 30, am)
        start_prometheus(
            procs, {}, rule_files=(fire_rule(tmp_path),),
            extra_config={"alerting": {"alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]}},
        )

        # Alertmanager's webhook lands on noc.events through the gateway...
        (record,) = await consume(broker.bootstrap, "noc.events", 1, deadline_s=60)
        payload = orjson.loads(record.value)
        assert dict(record.headers)["socnoc-format"] == b"alertmanager"
        assert payload["receiver"] == "socnoc"
        assert payload["alerts"][0]["labels"]["alertname"] == "CoreSwitchUplinkDown"

        # ...and the worker opens an incident on the asset.
        events = await consume(broker.bootstrap, "incidents", 1, deadline_s=60)
        opened = orjson.loads(events[0].value)
        assert opened["event"] == "opened"
        assert ASSET in opened["assets"]
        assert opened["kind"] == "operational"

        # The gateway's read API serves it from the incidents topic.
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {TOKEN}"}
        ) as session:
            url = f"http://127.0.0.1:{gw_port}/api/v1/incidents"
            async with asyncio.timeout(30):
                while True:
                    async with session.get(url, params={"asset": ASSET}) as response:
                        listing = await response.json()
                    if listing["total"]:
                        break
                    await asyncio.sleep(0.2)
            incident_id = listing["incidents"][0]["incident_id"]
            assert incident_id == opened["incident_id"]
            async with session.get(f"{url}/{incident_id}") as response:
                detail = await response.json()
        assert detail["state"] == "open"
        assert detail["alert_ids"][0] == f"noc.events:{record.partition}:{record.offset}#1"
        assert detail["timeline"][0]["signature"] == "CoreSwitchUplinkDown"
    except BaseException:
        print(procs.logs())
        raise
