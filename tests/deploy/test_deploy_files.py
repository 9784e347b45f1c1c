"""deploy/ cannot run here (no Docker): check its files against the code and real tools.

Ports, topic names, metric names and SOCNOC_* variables in compose, Kubernetes, Prometheus
and Grafana files must be the ones the code uses; rules and configs pass promtool/amtool.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.rules import load_rules
from streams.gateway import DEFAULT_PORT as GATEWAY_PORT
from streams.ingest import IngestSettings
from streams.kafka import topic_specs
from streams.metrics import (
    GATEWAY_METRIC_NAMES,
    METRIC_NAMES,
    RUNTIME_METRIC_NAMES,
    SYSLOG_METRIC_NAMES,
)
from streams.settings import Settings
from streams.syslog import DEFAULT_PORT as SYSLOG_PORT
from streams.testing import settings_from_env
from tests.programs import require_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "socnoc.json"
K8S = DEPLOY / "k8s"
WEB_PORT = Settings.model_fields["web_port"].default
ALL_METRICS = set(METRIC_NAMES + GATEWAY_METRIC_NAMES + SYSLOG_METRIC_NAMES)
HISTOGRAMS = {n for n in ALL_METRICS if n.endswith("_seconds")}
TOPICS = {"soc.alerts", "noc.events", "ctx.assets", "ctx.changes", "ctx.feedback", "incidents",
          "alerts.decisions", "alerts.dlq"}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"socnoc:{VERSION}"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bsocnoc_[a-z_]+", text))


def known(name: str) -> bool:
    if name in ALL_METRICS:
        return True
    base, _, suffix = name.rpartition("_")
    return suffix in ("bucket", "sum", "count") and base in HISTOGRAMS


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


# -- settings and code facts the files rely on --------------------------------------------


def test_settings_defaults_name_the_documented_topics() -> None:
    s = Settings()
    assert set(s.inputs) == {"soc.alerts", "noc.events"}
    assert {s.assets_topic, s.changes_topic, s.feedback_topic, s.incidents_topic,
            s.decisions_topic, s.dlq_topic, *s.inputs} == TOPICS


# -- Prometheus ---------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    promtool = require_binary("/usr/bin/promtool", "promtool")
    result = run(promtool, "check", "rules", str(PROM / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    promtool = require_binary("/usr/bin/promtool", "promtool")
    result = run(promtool, "test", "rules", str(PROM / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_prometheus_config() -> None:
    promtool = require_binary("/usr/bin/promtool", "promtool")
    result = run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_checks_the_alertmanager_config() -> None:
    amtool = require_binary("/usr/bin/amtool", "amtool")
    path = DEPLOY / "alertmanager" / "alertmanager.yml"
    result = run(amtool, "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    webhook = load(path)["receivers"][0]["webhook_configs"][0]
    assert webhook["url"].endswith(f":{GATEWAY_PORT}/api/v1/alertmanager")


def test_rules_use_only_metrics_the_code_exports() -> None:
    for path in (PROM / "rules.yml", PROM / "rules_test.yml"):
        unknown = {n for n in metric_names(path.read_text()) if not known(n)}
        assert not unknown, f"{path.name}: {unknown}"


def test_health_rules_cover_the_required_conditions() -> None:
    rules = {r["alert"]: r for g in load(PROM / "rules.yml")["groups"] for r in g["rules"]}
    for needed in ("SocnocWorkerDown", "SocnocNoWorkers", "SocnocBrokerDown",
                   "SocnocConsumerLagHigh", "SocnocDeadLetterRateHigh", "SocnocNoInput"):
        assert needed in rules
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_scrape_targets_match_the_compose_services_and_ports() -> None:
    config = load(PROM / "prometheus.yml")
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    services = compose()["services"]
    for targets in jobs.values():
        for target in targets:
            host, port = target.rsplit(":", 1)
            env = services[host]["environment"]
            assert env["SOCNOC_WEB_PORT"] == port, target
            assert f"{port}:{port}" in services[host]["ports"]
    workers = {t.split(":")[0] for t in jobs["socnoc"]}
    assert workers == {n for n, s in services.items() if s.get("command") == ["worker"]}


# -- Grafana ------------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    datasource = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasource["datasources"][0]["uid"]
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(grid["x"] + dx, grid["y"] + dy)
                for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            assert target["expr"].strip()


def test_dashboard_shows_the_issue_panels() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard()["panels"])
    for needed in ("noise reduction", "incidents opened by kind", "owner team",
                   "decision latency", "consumer lag", "dead letters", "time to detect",
                   "time open"):
        assert needed in titles, needed


def test_dashboard_queries_use_exported_metrics_and_cover_them() -> None:
    used = {n for _, expr in dashboard_exprs() for n in metric_names(expr)}
    assert not {n for n in used if not known(n)}
    base = {n if n in ALL_METRICS else n.rpartition("_")[0] for n in used}
    # The per-worker reduction gauge is redundant on a dashboard that sums all workers.
    assert ALL_METRICS - base == {"socnoc_noise_reduction_ratio"}
    runtime = {n for _, expr in dashboard_exprs()
               for n in re.findall(r"\b(?:process|python)_[a-z_]+", expr)}
    assert runtime and runtime <= set(RUNTIME_METRIC_NAMES)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = require_binary("/usr/bin/promtool", "promtool")
    rules = [
        {"record": f"socnoc:dashboard_query_{i}:check",
         "expr": expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
         .replace("$__interval", "15s")}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "socnoc.yml")
    assert provider["apiVersion"] == 1
    path = provider["providers"][0]["options"]["path"]
    volumes = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    datasource = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


# -- docker compose -----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load(DEPLOY / "docker-compose.yml")
    return data


def socnoc_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if s.get("image") == IMAGE}


def test_compose_runs_kafka_in_kraft_mode_without_zookeeper() -> None:
    services = compose()["services"]
    assert not [n for n, s in services.items() if "zookeeper" in str(s.get("image", ""))]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_socnoc_services_share_one_image_built_from_the_dockerfile() -> None:
    services = socnoc_services()
    assert {n for n, s in services.items() if s["command"] == ["worker"]} == {
        "socnoc-worker-1", "socnoc-worker-2"}
    assert services["socnoc-gateway"]["command"] == ["gateway"]
    for service in services.values():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        assert service["environment"]["SOCNOC_KAFKA_BOOTSTRAP"] == "kafka:9092"
    ports = [s["environment"]["SOCNOC_WEB_PORT"] for s in services.values()]
    assert len(ports) == len(set(ports)), "each socnoc service needs its own metrics port"


def test_compose_gateway_ports_match_the_code() -> None:
    gateway = socnoc_services()["socnoc-gateway"]
    env = gateway["environment"]
    assert int(env["SOCNOC_GATEWAY_PORT"]) == GATEWAY_PORT
    assert int(env["SOCNOC_SYSLOG_UDP_PORT"]) == int(env["SOCNOC_SYSLOG_TCP_PORT"]) == SYSLOG_PORT
    assert f"{GATEWAY_PORT}:{GATEWAY_PORT}" in gateway["ports"]
    assert f"{SYSLOG_PORT}:{SYSLOG_PORT}/udp" in gateway["ports"]
    assert f"{SYSLOG_PORT}:{SYSLOG_PORT}/tcp" in gateway["ports"]


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> IngestSettings:
    """Every SOCNOC_* variable must be a settings field, and its value must validate."""
    fields = set(IngestSettings.model_fields)
    for key, value in env.items():
        assert key.startswith("SOCNOC_"), key
        assert key.removeprefix("SOCNOC_").lower() in fields, f"unknown setting {key}"
        monkeypatch.setenv(key, str(value))
    return IngestSettings()


def test_compose_socnoc_variables_are_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in socnoc_services().items():
        env = {k: v for k, v in service["environment"].items()}
        if "SOCNOC_GATEWAY_TOKEN" in env:
            assert env["SOCNOC_GATEWAY_TOKEN"].startswith("${SOCNOC_GATEWAY_TOKEN:?"), name
            env["SOCNOC_GATEWAY_TOKEN"] = "x" * 32
        with monkeypatch.context() as m:
            settings_from(env, m)


def kafka_init_topics() -> dict[str, tuple[int, tuple[tuple[str, str], ...]]]:
    script = compose()["services"]["kafka-init"]["command"][0]
    # the helper creates each topic with the partition count its line gives
    assert 'local partitions="$$1"' in script and '--partitions "$$partitions"' in script
    topics = {}
    for line in script.splitlines():
        match = re.fullmatch(r"\s*create (\d+) (\S+)(.*)", line)
        if match:
            configs = tuple(sorted(tuple(c.split("=", 1)) for c in
                                   re.findall(r"--config (\S+)", match.group(3))))
            topics[match.group(2)] = (int(match.group(1)), configs)  # type: ignore[assignment]
    return topics


def test_compose_creates_exactly_the_topics_of_the_code() -> None:
    env = socnoc_services()["socnoc-worker-1"]["environment"]
    settings = settings_from_env({key: str(value) for key, value in env.items()})  # (what the worker builds)
    expected = {s.name: (s.partitions, tuple(sorted(s.config))) for s in topic_specs(settings)}
    assert kafka_init_topics() == expected
    assert TOPICS <= set(expected)
    assert env["SOCNOC_CREATE_TOPICS"] == "false"


# -- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_matches_the_project() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert project["project"]["requires-python"] == ">=3.11"
    assert 'ENTRYPOINT ["socnoc"]' in text and "socnoc" in project["project"]["scripts"]
    assert 'CMD ["worker"]' in text
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f"COPY {package.rstrip('*')} " in text
    assert "-c requirements.lock" in text
    # the compiled core: built in the build stage, found by the image (schemas/native.py)
    assert "scripts/build_native.py --out /opt/socnoc/native" in text
    assert "SOCNOC_NATIVE_DIR=/opt/socnoc/native" in text
    exposed = set(" ".join(re.findall(r"^EXPOSE (.+)$", text, re.M)).split())
    assert {str(WEB_PORT), str(GATEWAY_PORT), f"{SYSLOG_PORT}/tcp", f"{SYSLOG_PORT}/udp"} <= exposed
    assert f"SOCNOC_WEB_PORT={WEB_PORT}" in text
    assert re.search(r"^USER \d+", text, re.M), "the image must not run as root"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# -- Kubernetes ---------------------------------------------------------------------------


def k8s_docs() -> dict[str, list[Any]]:
    return {p.name: load_all(p) for p in sorted(K8S.glob("*.yaml"))}


def by_kind(kind: str) -> dict[str, Any]:
    return {d["metadata"]["name"]: d for docs in k8s_docs().values() for d in docs
            if d["kind"] == kind}


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    assert kustomization["images"] == [{"name": "socnoc", "newTag": VERSION}]


def test_k8s_deployments_use_the_image_ports_and_named_probes() -> None:
    deployments = by_kind("Deployment")
    assert set(deployments) == {"socnoc-worker", "socnoc-gateway"}
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        (container,) = spec["template"]["spec"]["containers"]
        assert container["image"] == IMAGE
        ports = {p["name"]: p for p in container["ports"]}
        assert ports["metrics"]["containerPort"] == WEB_PORT
        for probe in ("readinessProbe", "livenessProbe"):
            handler = container[probe].get("httpGet") or container[probe]["tcpSocket"]
            assert handler["port"] in ports, (name, probe)
        assert spec["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(WEB_PORT)
    worker = deployments["socnoc-worker"]["spec"]["template"]["spec"]["containers"][0]
    gateway = deployments["socnoc-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"] == ["worker"] and gateway["args"] == ["gateway"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/health"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    gw_ports = {p["name"]: p for p in gateway["ports"]}
    assert gw_ports["http"]["containerPort"] == GATEWAY_PORT
    assert gw_ports["syslog-udp"]["containerPort"] == SYSLOG_PORT
    assert gw_ports["syslog-udp"]["protocol"] == "UDP"
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["SOCNOC_GATEWAY_PORT"] == str(GATEWAY_PORT)
    assert "SOCNOC_GATEWAY_TOKEN" in env and env["SOCNOC_GATEWAY_TOKEN"] is None  # a Secret


def test_k8s_services_select_pods_and_named_ports() -> None:
    deployments = by_kind("Deployment")
    for name, service in by_kind("Service").items():
        selector = service["spec"]["selector"]
        matched = [d for d in deployments.values()
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matched, name
        for port in service["spec"]["ports"]:
            for deployment in matched:
                (container,) = deployment["spec"]["template"]["spec"]["containers"]
                named = {p["name"]: p.get("protocol", "TCP") for p in container["ports"]}
                assert port["targetPort"] in named, (name, port)
                assert named[port["targetPort"]] == port.get("protocol", "TCP")


def test_k8s_config_is_valid_settings_and_workers_fit_the_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = by_kind("ConfigMap")["socnoc-env"]["data"]
    settings = settings_from(env, monkeypatch)
    assert settings.web_port == WEB_PORT
    replicas = by_kind("Deployment")["socnoc-worker"]["spec"]["replicas"]
    assert replicas <= settings.partitions


def test_k8s_rules_configmap_is_mounted_and_loads(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rules = by_kind("ConfigMap")["socnoc-rules"]["data"]
    worker = by_kind("Deployment")["socnoc-worker"]["spec"]["template"]["spec"]
    mount = next(m for m in worker["containers"][0]["volumeMounts"] if m["name"] == "rules")
    volume = next(v for v in worker["volumes"] if v["name"] == "rules")
    assert volume["configMap"]["name"] == "socnoc-rules"
    settings = settings_from(by_kind("ConfigMap")["socnoc-env"]["data"], monkeypatch)
    for path in settings.rules:
        assert str(path.parent) == mount["mountPath"]
        local = tmp_path / path.name
        local.write_text(rules[path.name])
        assert load_rules(local)


def test_k8s_prometheus_rules_are_the_shipped_ones() -> None:
    data = by_kind("ConfigMap")["socnoc-prometheus-rules"]["data"]
    assert data["socnoc-rules.yml"] == (PROM / "rules.yml").read_text()


def test_k8s_readme_explains_scaling_to_the_partition_count() -> None:
    text = (K8S / "README.md").read_text()
    assert "partition count" in text and "SOCNOC_PARTITIONS" in text


def test_deploy_readme_documents_every_metric_and_health_alert() -> None:
    text = (DEPLOY / "README.md").read_text()
    documented = set(re.findall(r"^\| `(socnoc_[a-z_]+)` \|", text, re.M))
    assert documented == ALL_METRICS
    top = set(re.findall(r"^\| `(socnoc_[a-z_]+)` \|", (ROOT / "README.md").read_text(), re.M))
    assert top == ALL_METRICS, "the top-level README's metrics table is out of date"
    for group in load(PROM / "rules.yml")["groups"]:
        for rule in group["rules"]:
            assert f"`{rule['alert']}`" in text, rule["alert"]
