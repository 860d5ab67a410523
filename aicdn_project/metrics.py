"""Every AI-CDN Prometheus metric in one module, the scrape-time collectors, and the worker's metrics exporter.

Any app may ``from aicdn_project import metrics`` and call, e.g.::

    metrics.LLM_REQUESTS.labels(model=name, purpose="intent", outcome="ok").inc()
    with metrics.ENGINE_LATENCY.labels(engine="docker", operation="create").time(): ...

Label values must come from small fixed sets (names of engines, tools, states, environments): never ids, user
names or free text, which would create a time series per value.

Processes: every web, worker and beat process that sees ``PROMETHEUS_MULTIPROC_DIR`` (settings default: var/prometheus)
writes its samples there (prometheus_client's multiprocess mode), so the web ``/metrics`` view reports the Celery
workers' deployments too when they share the directory (the embedded mode). Where they do not (one container each),
the worker serves the same registry on ``WORKER_METRICS_PORT`` from its main process (see ``_start_worker_exporter``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery import signals
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

# --- LLM and generation ------------------------------------------------------------------------------------------
LLM_REQUESTS = Counter(
    "aicdn_llm_requests",
    "Requests to the model server. purpose: chat | action | intent | reply | other; outcome: ok | error | timeout.",
    ["model", "purpose", "outcome"],
)
LLM_REQUEST_DURATION = Histogram(
    "aicdn_llm_request_duration_seconds",
    "Wall time of one model request, first byte sent to last byte received.",
    ["model", "purpose"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120),
)
LLM_TIME_TO_FIRST_TOKEN = Histogram(
    "aicdn_llm_time_to_first_token_seconds",
    "Time from sending a streaming request to the first generated token.",
    ["model", "purpose"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10),
)
LLM_TOKENS = Counter(
    "aicdn_llm_tokens",
    "Tokens the model server reported in `usage`. kind: prompt | completion.",
    ["model", "kind"],
)
LLM_TOOL_CALLS = Counter(
    "aicdn_llm_tool_calls",
    "Tool calls the agent executed. tool: the registered tool name; outcome: ok | error | denied | invalid_arguments.",
    ["tool", "outcome"],
)
GENERATION_RESULTS = Counter(
    "aicdn_generation_results",
    "Blueprints generated from conversation, by validation result. result: valid | invalid | error.",
    ["model", "result"],
)

# --- IPRs --------------------------------------------------------------------------------------------------------
# IPRs by state is a gauge computed from the database at scrape time: see IPRStateCollector (aicdn_iprs{state}).
IPR_TRANSITIONS = Counter(
    "aicdn_ipr_transitions",
    "IPR state changes written by the state machine. from_state / to_state: iprs.models.IPRState values.",
    ["from_state", "to_state"],
)
IPR_REVIEWS = Counter(
    "aicdn_ipr_reviews",
    "Review decisions recorded on IPRs (approvals are decision=approve). decision: approve | request_changes | reject.",
    ["decision"],
)

# --- Deployments and engines ------------------------------------------------------------------------------------
DEPLOYMENTS = Counter(
    "aicdn_deployments",
    "Finished deployments. environment: Environment.name; engine: engine kind; result: succeeded | failed | cancelled.",
    ["environment", "engine", "result"],
)
DEPLOYMENT_DURATION = Histogram(
    "aicdn_deployment_duration_seconds",
    "Wall time of one deployment from start to its final state. result: succeeded | failed | cancelled.",
    ["engine", "result"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
RESOURCE_OPERATIONS = Counter(
    "aicdn_resource_operations",
    "Per-resource engine operations. operation: create | read | update | delete | replace; result: ok | error | retry.",
    ["engine", "operation", "result"],
)
ENGINE_LATENCY = Histogram(
    "aicdn_engine_request_duration_seconds",
    "Latency of one engine call. operation: create | read | update | delete | health | capabilities.",
    ["engine", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DRIFT_FINDINGS = Counter(
    "aicdn_drift_findings",
    "Drift found between recorded and real resources. kind: modified | missing | unmanaged.",
    ["environment", "kind"],
)
DRIFT_CHECKS = Counter(
    "aicdn_drift_checks",
    "Drift detection runs. result: clean | drifted | error.",
    ["environment", "result"],
)

# --- Edges: rate limits, websockets, Celery ---------------------------------------------------------------------
RATE_LIMIT_REJECTIONS = Counter(
    "aicdn_rate_limit_rejections",
    "Requests and websocket messages refused by a rate limit. group: settings.RATELIMIT_RATES key; "
    "channel: http | websocket.",
    ["group", "channel"],
)
WEBSOCKET_CONNECTIONS = Gauge(
    "aicdn_websocket_connections",
    "Open websocket connections. consumer: chat | ipr | deployment.",
    ["consumer"],
    multiprocess_mode="livesum",
)
WEBSOCKET_CONNECTIONS_OPENED = Counter(
    "aicdn_websocket_connections_opened",
    "Websocket connections accepted. consumer: chat | ipr | deployment.",
    ["consumer"],
)
CELERY_TASKS = Counter(
    "aicdn_celery_tasks",
    "Celery tasks finished in a worker. task: the task name; outcome: succeeded | failed | retried.",
    ["task", "outcome"],
)
CELERY_TASK_DURATION = Histogram(
    "aicdn_celery_task_duration_seconds",
    "Run time of one Celery task execution.",
    ["task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
)


@contextlib.contextmanager
def websocket_connection(consumer: str) -> Iterator[None]:
    """Count a connection as open for the duration of the block (``connect`` .. ``disconnect``)."""
    WEBSOCKET_CONNECTIONS_OPENED.labels(consumer=consumer).inc()
    gauge = WEBSOCKET_CONNECTIONS.labels(consumer=consumer)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


# --- Scrape-time collectors (web process only: they read the database) ------------------------------------------
class IPRStateCollector(Collector):
    """aicdn_iprs{state}: IPRs per state, counted in the database at scrape time (every state, zeros included)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.apps import apps
        from django.db.models import Count

        model = apps.get_model("iprs", "IPR")
        counts = {state: 0 for state, _ in model._meta.get_field("state").choices}
        for state, n in model.objects.order_by().values_list("state").annotate(n=Count("id")):
            counts[state] = n
        family = GaugeMetricFamily(
            "aicdn_iprs", "IPRs by state, read from the database at scrape time.", labels=["state"]
        )
        for state, n in sorted(counts.items()):
            family.add_metric([state], n)
        yield family


AUDIT_CACHE_KEY = "metrics:audit-chain"


def audit_chain_report() -> dict[str, Any]:
    """audit_verify() result, cached in the shared cache so scrapes from any process verify at most once a window."""
    from django.conf import settings
    from django.core.cache import cache

    from aicdn_project.audit import audit_verify

    cached = cache.get(AUDIT_CACHE_KEY)
    if cached is not None:
        return cached
    report = audit_verify()
    result = {"ok": report.ok, "checked": report.checked, "broken_at": report.broken_at, "verified_at": time.time()}
    cache.set(AUDIT_CACHE_KEY, result, settings.AUDIT_METRICS_CACHE_SECONDS)
    return result


class AuditChainCollector(Collector):
    """aicdn_audit_chain_ok / _events / _verified_timestamp_seconds from audit_verify (cached about a minute)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = audit_chain_report()
        yield GaugeMetricFamily(
            "aicdn_audit_chain_ok",
            "1 when the audit hash chain verifies end to end, 0 when a link is broken.",
            value=1 if report["ok"] else 0,
        )
        yield GaugeMetricFamily(
            "aicdn_audit_chain_events", "Audit events verified in the last check.", value=report["checked"]
        )
        yield GaugeMetricFamily(
            "aicdn_audit_chain_verified_timestamp_seconds",
            "Unix time of the last audit chain verification.",
            value=report["verified_at"],
        )


class DatabaseCollectors(Collector):
    """Runs the database collectors; one failing (table missing, database down) costs its samples, not the scrape."""

    def __init__(self, sources: list[tuple[str, Collector]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "aicdn_metrics_collector_up", "1 when a scrape-time collector succeeded.", labels=["collector"]
        )
        for name, source in self.sources:
            try:
                families = list(source.collect())
            except Exception:  # any one source failing must not fail the scrape; it is logged and exported as 0
                logger.warning("metrics collector %s failed", name, exc_info=True)
                up.add_metric([name], 0)
                continue
            yield from families
            up.add_metric([name], 1)
        yield up


def database_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollectors([("iprs", IPRStateCollector()), ("audit_chain", AuditChainCollector())]))
    return registry


# --- Multiprocess mode -------------------------------------------------------------------------------------------
def multiprocess_dir() -> Path | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(path) if path else None


def multiprocess_active() -> bool:
    """True when this process writes its samples to the shared directory (the env var was set before import)."""
    return multiprocess_dir() is not None and values.ValueClass is not values.MutexValue


def process_registry() -> CollectorRegistry:
    """Every process's samples (multiprocess mode) or this process's (single process)."""
    if not multiprocess_active():
        return REGISTRY
    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir()))
    return registry


def exposition(*, include_database: bool = True) -> bytes:
    """The full text exposition served at /metrics."""
    body = generate_latest(process_registry())
    if include_database:
        body += generate_latest(database_registry())
    return body


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_processes() -> list[int]:
    """Drop the live-gauge files of processes that died without saying so (kill -9, a crash, a host restart).

    Counter and histogram files of dead processes stay: removing them would make totals go backwards.
    """
    path = multiprocess_dir()
    if path is None or not path.is_dir():
        return []
    reaped = []
    for entry in path.iterdir():
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            pid = int(match.group(1))
            multiprocess.mark_process_dead(pid, str(path))
            reaped.append(pid)
    return reaped


def _mark_self_dead() -> None:
    path = multiprocess_dir()
    if path is not None and path.is_dir():
        multiprocess.mark_process_dead(os.getpid(), str(path))


if multiprocess_dir() is not None:
    if not multiprocess_active():
        logger.warning(
            "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported: this process's metrics are "
            "served only by its own registry"
        )
    multiprocess_dir().mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    reap_dead_processes()
    atexit.register(_mark_self_dead)


# --- Celery worker: task metrics and the exporter ---------------------------------------------------------------
_task_started: dict[str, float] = {}


@signals.task_prerun.connect(weak=False)
def _task_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _task_started[task_id] = time.monotonic()


@signals.task_postrun.connect(weak=False)
def _task_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _task_started.pop(task_id or "", None)
    name = getattr(task, "name", "unknown")
    if started is not None:
        CELERY_TASK_DURATION.labels(task=name).observe(time.monotonic() - started)
    outcome = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}.get(state or "")
    if outcome:
        CELERY_TASKS.labels(task=name, outcome=outcome).inc()


@signals.worker_process_shutdown.connect(weak=False)
def _worker_child_exit(**_: Any) -> None:
    _mark_self_dead()


_exporter: Any = None


@signals.worker_ready.connect(weak=False)
def _start_worker_exporter(**_: Any) -> None:
    """In the worker's main process: serve every process's samples on WORKER_METRICS_PORT (0 = off)."""
    global _exporter
    from django.conf import settings

    port = settings.WORKER_METRICS_PORT
    if not port or _exporter is not None:
        return
    from prometheus_client import start_http_server

    _exporter = start_http_server(port, addr=settings.WORKER_METRICS_ADDR, registry=process_registry())
    logger.info("worker metrics on http://%s:%s/metrics", settings.WORKER_METRICS_ADDR, port)
