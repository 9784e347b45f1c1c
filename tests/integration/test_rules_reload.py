"""Rules reload without a restart: SIGHUP re-reads the rule files, logs and counts it; a
broken file is reported and the rules in force stay."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import Names, Tail, WorkerProcess, until
from tests.integration.datasets import wazuh_lines

pytestmark = pytest.mark.integration

RULE = """rules:
  - id: {id}
    type: suppress
    match: {{signature: "{signature}"}}
    reason: lab noise
"""


async def test_sighup_reloads_rules_and_a_bad_file_changes_nothing(
    names: Names,
    workers: Callable[..., WorkerProcess],
    producer: AIOKafkaProducer,
    tmp_path: Path,
) -> None:
    rules = tmp_path / "site.yml"
    rules.write_text(RULE.format(id="nothing", signature="no-such-signature"))
    worker = workers(names.worker_env(SOCNOC_RULES=orjson.dumps([str(rules)]).decode()))
    await worker.wait_partitions()
    assert worker.proc is not None
    lines = [line for line in wazuh_lines() if b'"id":"86601"' in line]
    ids = [orjson.loads(line)["id"] for line in lines]

    async with Tail(names.bootstrap, names.decisions) as tail:

        def decision(alert_id: str) -> dict[str, object] | None:
            return next((d for d in tail.values(names.decisions) if d["alert_id"] == alert_id), None)

        async def reloads(result: str, count: int) -> bool:
            return f'socnoc_rule_reloads_total{{result="{result}"}} {count}.0' in await worker.metrics()

        rules.write_text(RULE.format(id="lab-scanner", signature="86601"))
        os.kill(worker.proc.pid, signal.SIGHUP)
        await until(lambda: reloads("ok", 1), 30, "the reload to be counted", worker)
        await producer.send_and_wait(names.alerts, lines[0])
        first = await until(lambda: decision(ids[0]), 30, "a decision", worker)
        assert first["disposition"] == "noise"
        assert first["reason"] == "suppressed by rule lab-scanner: lab noise"

        rules.write_text("rules:\n  - id: broken\n    type: nonsense\n")
        os.kill(worker.proc.pid, signal.SIGHUP)
        await until(lambda: reloads("error", 1), 30, "the failed reload to be counted", worker)
        await producer.send_and_wait(names.alerts, lines[1])
        second = await until(lambda: decision(ids[1]), 30, "a decision", worker)
        assert second["reason"] == "suppressed by rule lab-scanner: lab noise"

    log = worker.log_text()
    assert "rule reload failed, keeping the current rules" in log
    assert f"{rules}:" in log  # the error names the file (and line)
    assert worker.alive()
