"""Monitoring endpoints: liveness, detailed health of every dependency, rate-limit statistics, and /metrics."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aicdn_project import metrics, ratelimit

logger = logging.getLogger(__name__)

OK, DOWN = "ok", "down"


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No authentication, no dependencies touched."""
    return JsonResponse({"status": "ok"})


# --- Detailed health ------------------------------------------------------------------------------------------------
def _timed(check: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    """Run one check; any exception is that dependency being down, never the endpoint failing."""
    started = time.perf_counter()
    try:
        extra = check() or {}
        result: dict[str, Any] = {"status": OK, **extra}
    except Exception as exc:  # every failure mode of a dependency (refused, timeout, bad answer) is "down"
        result = {"status": DOWN, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def check_redis() -> dict[str, Any]:
    client = ratelimit.redis_client()
    if not client.ping():
        raise ConnectionError("PING was not answered with PONG")
    return {}


def check_celery() -> dict[str, Any]:
    from aicdn_project.celery import app

    replies = app.control.inspect(timeout=min(settings.HEALTH_CHECK_TIMEOUT, 1.0)).ping() or {}
    workers = sorted(replies)
    if not workers:
        raise ConnectionError("no Celery worker answered ping")
    return {"workers": workers}


def model_server_url() -> str:
    """The model server's /health: LLM_BASE_URL without its /v1 suffix, or the local server ./run starts."""
    base = settings.LLM_BASE_URL.rstrip("/") or f"http://127.0.0.1:{settings.LLM_LOCAL_PORT}"
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + "/health"


def check_model_server() -> dict[str, Any]:
    url = model_server_url()
    headers = {"Authorization": f"Bearer {settings.LLM_API_KEY}"} if settings.LLM_API_KEY else {}
    response = httpx.get(url, timeout=settings.HEALTH_CHECK_TIMEOUT, headers=headers)
    if response.status_code != 200:
        raise ConnectionError(f"GET {url} answered {response.status_code}")
    return {"url": url, "model": settings.LLM_MODEL}


def check_engines() -> dict[str, dict[str, Any]]:
    """Each environment's engine health, via the engine registry (in the request thread: engines may read the DB)."""
    from engines import selectors

    results: dict[str, dict[str, Any]] = {}
    for environment in selectors.environment_list():

        def probe(env: Any = environment) -> dict[str, Any]:
            engine, _ = selectors.environment_engine(env)
            with metrics.ENGINE_LATENCY.labels(engine=env.engine, operation="health").time():
                report = engine.health()
            if not report.ok:
                raise ConnectionError(report.detail)
            return {"detail": report.detail}

        result = _timed(probe)
        result["engine"] = environment.engine
        results[environment.name] = result
    return results


class HealthDetailedView(APIView):
    """Database, Redis, Celery workers, model server and each environment's engine: status and latency each.

    Always 200 with an overall `status` of `ok` or `degraded`: a dependency being down is reported, not raised.
    """

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        # Network-only checks run in threads (their timeouts overlap); database-backed ones in this thread, whose
        # connection the request already holds.
        with ThreadPoolExecutor(max_workers=3) as pool:
            pending = {
                "redis": pool.submit(_timed, check_redis),
                "celery": pool.submit(_timed, check_celery),
                "model_server": pool.submit(_timed, check_model_server),
            }
            checks: dict[str, Any] = {"database": _timed(check_database)}
            try:
                engines = check_engines()
            except Exception as exc:  # the registry or the environments table itself failing
                engines = {"_registry": {"status": DOWN, "error": f"{type(exc).__name__}: {exc}"[:300]}}
            for name, future in pending.items():
                checks[name] = future.result()
        checks["engines"] = engines
        flat = [checks[k] for k in ("database", "redis", "celery", "model_server")] + list(engines.values())
        overall = OK if all(c["status"] == OK for c in flat) else "degraded"
        return Response({"status": overall, "checks": checks, "time": time.time()})


# --- Rate limits ------------------------------------------------------------------------------------------------------
class RateLimitStatsView(APIView):
    """Rejections by group, endpoint and channel since the counters started, plus the configured limits."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        stats = ratelimit.rejection_stats()
        return Response(
            {
                "enabled": settings.RATELIMIT_ENABLE,
                "limits": ratelimit.configured_limits(),
                "trusted_proxies": settings.TRUSTED_PROXIES,
                **stats,
            }
        )


# --- /metrics -------------------------------------------------------------------------------------------------------
def metrics_access(request: HttpRequest) -> tuple[bool, int, str]:
    """(allowed, status, reason): the client must be in METRICS_ALLOWED_NETWORKS and hold METRICS_TOKEN when set."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded and not ratelimit.ip_in_networks(remote, settings.TRUSTED_PROXIES):
        # Proxied through something not declared in TRUSTED_PROXIES: the real client is unknown, and the proxy's
        # own (often loopback) address must not open the endpoint to whoever is behind it.
        return False, 403, "request came through a proxy that is not in TRUSTED_PROXIES"
    client = ratelimit.client_ip(request)
    if not ratelimit.ip_in_networks(client, settings.METRICS_ALLOWED_NETWORKS):
        return False, 403, "client address is not in METRICS_ALLOWED_NETWORKS"
    if settings.METRICS_TOKEN:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), settings.METRICS_TOKEN):
            return False, 401, "a valid bearer token is required"
    return True, 200, ""


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition: every process's samples (multiprocess mode) plus the database-backed gauges."""
    allowed, status, reason = metrics_access(request)
    if not allowed:
        response = JsonResponse({"error": "forbidden", "message": reason, "details": {}}, status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    from prometheus_client import CONTENT_TYPE_LATEST

    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
