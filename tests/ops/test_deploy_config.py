"""docker-compose.yml, the Dockerfile, Prometheus and Grafana config: parsed and cross-checked (no Docker here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from aicdn_project import metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
REQUIRED = {"postgres", "redis", "vllm", "web", "worker", "beat", "prometheus", "grafana"}
APP_SERVICES = ("web", "worker", "beat", "migrate")


def test_every_service_is_there_and_long_running_ones_have_health_checks():
    assert set(SERVICES) >= REQUIRED
    for name in REQUIRED:
        check = SERVICES[name].get("healthcheck")
        assert check and check["test"], f"{name} has no health check"
    for name, service in SERVICES.items():
        for dep in service.get("depends_on", {}):
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"


def test_images_are_pinned_and_build_contexts_exist():
    for name, service in SERVICES.items():
        if "build" in service:
            context = ROOT / service["build"]["context"]
            assert context.is_dir() and (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
            continue
        image = service["image"]
        assert re.fullmatch(r"[a-z0-9./_-]+:[A-Za-z0-9._-]+", image), f"{name}: {image!r} is not repo:tag"
        assert not image.endswith(":latest"), f"{name} pulls an unpinned image"
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert ":" in base and not base.endswith(":latest")
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M), "the image must not run as root"
    assert "-r requirements.txt" in dockerfile
    for line in (ROOT / ".dockerignore").read_text().split():
        assert line != "requirements.txt"
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()


def test_bind_mounted_files_exist():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"


def test_vllm_serves_the_seed_model_with_tool_calling_on_a_gpu():
    vllm = SERVICES["vllm"]
    command = vllm["command"]
    assert command[command.index("--model") + 1] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "--enable-auto-tool-choice" in command
    assert command[command.index("--tool-call-parser") + 1] == "hermes"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    served = command[command.index("--served-model-name") + 1]
    assert SERVICES["web"]["environment"]["LLM_MODEL"] == served
    assert SERVICES["web"]["environment"]["LLM_BASE_URL"] == "http://vllm:8000/v1"


def _settings_variables() -> set[str]:
    source = (ROOT / "aicdn_project" / "settings.py").read_text()
    return set(re.findall(r"env(?:\.\w+)?\(\s*\"([A-Z0-9_]+)\"", source)) | {"PROMETHEUS_MULTIPROC_DIR"}


def test_app_services_share_settings_the_code_actually_reads():
    known = _settings_variables()
    for name in APP_SERVICES:
        environment = SERVICES[name]["environment"]
        unknown = set(environment) - known
        assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"
        assert (
            environment["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in environment["DATABASE_URL"]
        )
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["DEBUG"] == "false"
    assert SERVICES["worker"]["environment"]["WORKER_METRICS_PORT"] == "9808"
    assert "WORKER_METRICS_PORT" not in SERVICES["web"]["environment"]


def test_secrets_are_required_and_every_variable_is_documented():
    text = (ROOT / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "METRICS_TOKEN", "GRAFANA_ADMIN_PASSWORD"} <= required
    docs = (ROOT / "docs" / "deployment.md").read_text()
    undocumented = sorted(v for v in referenced if f"`{v}`" not in docs)
    assert not undocumented, f"docs/deployment.md does not describe {undocumented}"


def test_published_ports():
    assert SERVICES["web"]["ports"] == ["${AICDN_HTTP_PORT:-8000}:8000"]
    for name in ("prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in SERVICES[name]["ports"]), f"{name} must bind to loopback"
    for name in ("postgres", "redis", "vllm", "worker"):
        assert "ports" not in SERVICES[name], f"{name} must stay on the compose network"


def test_prometheus_scrapes_the_services_compose_runs():
    config = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["aicdn-web"]["static_configs"][0]["targets"] == ["web:8000"]
    assert jobs["aicdn-web"]["metrics_path"] == "/metrics"
    credentials = jobs["aicdn-web"]["authorization"]["credentials_file"]
    assert credentials == "/run/secrets/metrics_token" and "metrics_token" in SERVICES["prometheus"]["secrets"]
    assert COMPOSE["secrets"]["metrics_token"]["environment"] == "METRICS_TOKEN"
    port = SERVICES["worker"]["environment"]["WORKER_METRICS_PORT"]
    assert jobs["aicdn-worker"]["static_configs"][0]["targets"] == [f"worker:{port}"]
    mounted = [v for v in SERVICES["prometheus"]["volumes"] if v.startswith("./config/prometheus.yml:")]
    assert mounted == ["./config/prometheus.yml:/etc/prometheus/prometheus.yml:ro"]


def _exposed_families() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        describe = getattr(value, "describe", None)
        if callable(describe) and hasattr(value, "_name"):
            names.update(family.name for family in describe())
    names.update({"aicdn_iprs", "aicdn_audit_chain_ok", "aicdn_audit_chain_events"})
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((ROOT / "config" / "grafana" / "dashboards" / "ai-cdn.json").read_text())


def test_grafana_is_provisioned_with_the_prometheus_datasource_and_the_dashboard(dashboard):
    datasource = yaml.safe_load(
        (ROOT / "config" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "config" / "grafana" / "provisioning" / "dashboards" / "ai-cdn.yml").read_text())[
        "providers"
    ][0]
    assert "./config/grafana/dashboards:" + provider["options"]["path"] + ":ro" in SERVICES["grafana"]["volumes"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == datasource["uid"] for p in panels)


def test_dashboard_queries_only_metrics_that_exist_and_shows_every_ai_cdn_family(dashboard):
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b(aicdn_[a-z0-9_]+)", expr):
            used.add(re.sub(r"_(total|bucket|sum|count)$", "", name))
    exposed = _exposed_families()
    assert used <= exposed, f"dashboard queries unknown metrics: {sorted(used - exposed)}"
    shown_everywhere = {n for n in exposed if not n.endswith("_opened")} - {"aicdn_metrics_collector_up"}
    assert shown_everywhere <= used, f"families without a panel: {sorted(shown_everywhere - used)}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
