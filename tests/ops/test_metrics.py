"""Metrics: the AI-CDN families, scrape-time gauges from the database, multiprocess aggregation, /metrics access."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from django.core.cache import cache
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from aicdn_project import metrics
from aicdn_project.audit import audit_record
from aicdn_project.celery import app as celery_app
from blueprints import services as blueprint_services
from engines.models import Environment
from iprs.models import IPR
from tests.conftest import SEED_BLUEPRINT, make_user

# Every metric family the lead's list promises, as exposed (counters with their _total suffix stripped by the parser).
PROMISED = {
    "aicdn_llm_requests",
    "aicdn_llm_request_duration_seconds",
    "aicdn_llm_time_to_first_token_seconds",
    "aicdn_llm_tokens",
    "aicdn_llm_tool_calls",
    "aicdn_generation_results",
    "aicdn_iprs",
    "aicdn_ipr_transitions",
    "aicdn_ipr_reviews",
    "aicdn_deployments",
    "aicdn_deployment_duration_seconds",
    "aicdn_resource_operations",
    "aicdn_engine_request_duration_seconds",
    "aicdn_drift_findings",
    "aicdn_drift_checks",
    "aicdn_rate_limit_rejections",
    "aicdn_websocket_connections",
    "aicdn_websocket_connections_opened",
    "aicdn_celery_tasks",
    "aicdn_celery_task_duration_seconds",
    "aicdn_audit_chain_ok",
    "aicdn_audit_chain_events",
    "aicdn_audit_chain_verified_timestamp_seconds",
}


def scrape(client: APIClient | None = None, **extra) -> dict[str, dict]:
    response = (client or APIClient()).get("/metrics", **extra)
    assert response.status_code == 200, response.content[:300]
    families: dict[str, dict] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families


def value(families: dict, family: str, sample: str, **labels) -> float | None:
    return families.get(family, {}).get((sample, tuple(sorted(labels.items()))))


@pytest.fixture
def fresh_audit_cache():
    cache.delete(metrics.AUDIT_CACHE_KEY)
    yield
    cache.delete(metrics.AUDIT_CACHE_KEY)


def test_every_promised_family_is_exposed(db, fresh_audit_cache):
    label = f"t{uuid.uuid4().hex[:6]}"
    metrics.LLM_REQUESTS.labels(model=label, purpose="intent", outcome="ok").inc()
    metrics.LLM_REQUEST_DURATION.labels(model=label, purpose="intent").observe(1.2)
    metrics.LLM_TIME_TO_FIRST_TOKEN.labels(model=label, purpose="reply").observe(0.2)
    metrics.LLM_TOKENS.labels(model=label, kind="completion").inc(44)
    metrics.LLM_TOOL_CALLS.labels(tool="validate_blueprint", outcome="ok").inc()
    metrics.GENERATION_RESULTS.labels(model=label, result="valid").inc()
    metrics.IPR_TRANSITIONS.labels(from_state="open", to_state="approved").inc()
    metrics.IPR_REVIEWS.labels(decision="approve").inc()
    metrics.DEPLOYMENTS.labels(environment=label, engine="simulator", result="succeeded").inc()
    metrics.DEPLOYMENT_DURATION.labels(engine="simulator", result="succeeded").observe(42)
    metrics.RESOURCE_OPERATIONS.labels(engine="simulator", operation="create", result="ok").inc()
    metrics.ENGINE_LATENCY.labels(engine="simulator", operation="create").observe(0.03)
    metrics.DRIFT_FINDINGS.labels(environment=label, kind="modified").inc(2)
    metrics.DRIFT_CHECKS.labels(environment=label, result="drifted").inc()
    metrics.RATE_LIMIT_REJECTIONS.labels(group="api", channel="http").inc(0)
    metrics.CELERY_TASKS.labels(task="t", outcome="succeeded").inc(0)
    metrics.CELERY_TASK_DURATION.labels(task="t").observe(0.1)
    with metrics.websocket_connection("chat"):
        inside = scrape()
    after = scrape()
    assert set(inside) >= PROMISED, sorted(PROMISED - set(inside))
    assert value(inside, "aicdn_llm_tokens", "aicdn_llm_tokens_total", model=label, kind="completion") == 44
    assert value(inside, "aicdn_drift_findings", "aicdn_drift_findings_total", environment=label, kind="modified") == 2
    # The live gauge goes up inside the block and back down after it.
    open_inside = value(inside, "aicdn_websocket_connections", "aicdn_websocket_connections", consumer="chat")
    open_after = value(after, "aicdn_websocket_connections", "aicdn_websocket_connections", consumer="chat")
    assert open_inside == open_after + 1
    assert len([n for n in inside if n.startswith("aicdn_")]) >= 15
    assert "django_http_requests_total_by_method" in inside  # django-prometheus's own, through the same view


def _ipr(user, env, version, state):
    return IPR.objects.create(title=state, blueprint_version=version, environment=env, author=user, state=state)


def test_ipr_gauge_is_read_from_the_database_at_scrape_time(db, fresh_audit_cache):
    user = make_user("owner", "requesters")
    version = blueprint_services.blueprint_create(owner=user, source=SEED_BLUEPRINT)
    env = Environment.objects.create(name="metrics-env")
    for state in ("open", "open", "deployed"):
        _ipr(user, env, version, state)
    families = scrape()
    assert value(families, "aicdn_iprs", "aicdn_iprs", state="open") == 2
    assert value(families, "aicdn_iprs", "aicdn_iprs", state="deployed") == 1
    assert value(families, "aicdn_iprs", "aicdn_iprs", state="rejected") == 0  # every state, zeros included
    _ipr(user, env, version, "rejected")
    assert value(scrape(), "aicdn_iprs", "aicdn_iprs", state="rejected") == 1
    assert value(families, "aicdn_metrics_collector_up", "aicdn_metrics_collector_up", collector="iprs") == 1


def test_audit_chain_status_turns_zero_when_a_row_is_edited(db, fresh_audit_cache):
    user = make_user("auditor", "requesters")
    blueprint_services.blueprint_create(owner=user, source=SEED_BLUEPRINT)
    audit_record(actor=user, action="test.event", object_type="test", object_id=1)
    families = scrape()
    assert value(families, "aicdn_audit_chain_ok", "aicdn_audit_chain_ok") == 1
    events = value(families, "aicdn_audit_chain_events", "aicdn_audit_chain_events")
    assert events >= 2
    with connection.cursor() as cursor:  # tamper below the ORM, as an attacker with database access would
        cursor.execute("UPDATE aicdn_auditevent SET action = 'forged' WHERE seq = 1")
    # Cached for about a minute: the same answer until the cache entry goes.
    assert value(scrape(), "aicdn_audit_chain_ok", "aicdn_audit_chain_ok") == 1
    cache.delete(metrics.AUDIT_CACHE_KEY)
    assert value(scrape(), "aicdn_audit_chain_ok", "aicdn_audit_chain_ok") == 0


def test_samples_from_other_processes_are_aggregated(db, fresh_audit_cache):
    env_label = f"mp-{uuid.uuid4().hex[:8]}"
    script = (
        "import django; django.setup();"
        "from aicdn_project import metrics;"
        f"metrics.DEPLOYMENTS.labels(environment='{env_label}', engine='docker', result='failed').inc(3)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aicdn_project.test_settings"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    families = scrape()
    sample = value(
        families,
        "aicdn_deployments",
        "aicdn_deployments_total",
        environment=env_label,
        engine="docker",
        result="failed",
    )
    assert sample == 3
    assert metrics.multiprocess_active()


def test_dead_processes_live_gauges_are_reaped(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = proc.pid
    (tmp_path / f"gauge_livesum_{dead}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead}.db").write_bytes(b"")
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    assert metrics.reap_dead_processes() == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead}.db", f"gauge_livesum_{os.getpid()}.db"]
    )


def test_celery_task_metrics_come_from_task_signals():
    @celery_app.task(name="tests.ops.add")
    def add(x: int, y: int) -> int:
        return x + y

    @celery_app.task(name="tests.ops.boom")
    def boom() -> None:
        raise ValueError("boom")

    before_ok = metrics.CELERY_TASKS.labels(task="tests.ops.add", outcome="succeeded")._value.get()
    before_failed = metrics.CELERY_TASKS.labels(task="tests.ops.boom", outcome="failed")._value.get()
    assert add.apply(args=(2, 3)).get() == 5
    boom.apply()
    assert metrics.CELERY_TASKS.labels(task="tests.ops.add", outcome="succeeded")._value.get() == before_ok + 1
    assert metrics.CELERY_TASKS.labels(task="tests.ops.boom", outcome="failed")._value.get() == before_failed + 1


def _worker_accumulate_count(url: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            if sample.name == "aicdn_celery_tasks_total" and sample.labels == {
                "task": "celery.accumulate",
                "outcome": "succeeded",
            }:
                return sample.value
    return 0.0


def test_worker_runs_tasks_and_serves_their_metrics(celery_worker):
    url = celery_worker["metrics_url"]
    before = _worker_accumulate_count(url)
    celery_app.send_task("celery.accumulate", args=(1, 2))
    deadline = time.monotonic() + 30
    while _worker_accumulate_count(url) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _worker_accumulate_count(url) == before + 1  # counted in the worker, by the signal CELERY_IMPORTS wired
    names = {family.name for family in text_string_to_metric_families(httpx.get(url, timeout=5).text)}
    assert "aicdn_iprs" not in names  # the database gauges are the web process's job only


# --- access control -------------------------------------------------------------------------------------------------
def test_metrics_refuses_addresses_outside_the_allowed_networks(db, settings):
    assert APIClient(REMOTE_ADDR="203.0.113.5").get("/metrics").status_code == 403
    settings.METRICS_ALLOWED_NETWORKS = ["203.0.113.0/24"]
    assert APIClient(REMOTE_ADDR="203.0.113.5").get("/metrics").status_code == 200
    assert APIClient(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403


def test_metrics_token_is_required_when_set(db, settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    client = APIClient(REMOTE_ADDR="127.0.0.1")
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Token s3cret-metrics-token").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token").status_code == 200


def test_a_proxy_in_front_does_not_open_metrics(db, settings):
    # An undeclared proxy on loopback forwarding someone else's request: refused although the peer is loopback.
    client = APIClient(REMOTE_ADDR="127.0.0.1")
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 403
    # A declared proxy: the forwarded client address is what the allow-list judges.
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 403
    settings.METRICS_ALLOWED_NETWORKS = ["198.51.100.0/24"]
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 200


def test_settings_refuse_metrics_open_to_the_world_without_a_token():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "aicdn_project.settings",
        "METRICS_ALLOWED_NETWORKS": "0.0.0.0/0",
        "METRICS_TOKEN": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "METRICS_TOKEN" in result.stderr
    env["METRICS_TOKEN"] = "x" * 32
    assert subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env).returncode == 0


def test_request_metrics_add_no_hooks_that_cost_a_thread_switch(db):
    """Under ASGI Django calls each middleware's process_view and process_template_response through its own
    sync_to_async switch: the metrics layer has neither, and still labels requests by view and status."""
    from django.core.handlers.asgi import ASGIHandler
    from django.urls import resolve
    from prometheus_client import REGISTRY

    from aicdn_project.middleware import RequestMetricsMiddleware

    assert not hasattr(RequestMetricsMiddleware, "process_view")
    assert not hasattr(RequestMetricsMiddleware, "process_template_response")
    assert ASGIHandler()._template_response_middleware == []  # no layer has one
    labels = {"status": "401", "view": resolve("/api/v1/templates").view_name, "method": "GET"}
    before = REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels) or 0.0
    assert APIClient().get("/api/v1/templates").status_code == 401
    after = REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels)
    assert after == before + 1


def test_api_requests_build_no_message_storage(db):
    from django.utils.functional import empty

    response = APIClient().get("/api/v1/templates")
    assert response.wsgi_request._messages._wrapped is empty
