"""Request metrics, the request id (taken from X-Request-ID when sane, else generated; echoed back and kept for the
audit trail), and the 503 answer for database or Redis outages in views that DRF's exception handler does not
cover."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django_prometheus.middleware import PrometheusAfterMiddleware
from django_prometheus.utils import Time, TimeSince

from aicdn_project.context import origin
from aicdn_project.ratelimit import client_ip  # X-Forwarded-For only behind TRUSTED_PROXIES, as for rate limits

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestMetricsMiddleware(PrometheusAfterMiddleware):
    """django-prometheus' request metrics, the series the dashboards and alerts read, from one layer (first in
    MIDDLEWARE, so the latency covers the whole chain).

    django-prometheus' Before/After pair updated about fifteen series per request through two layers (requests and
    responses totals, body sizes, transports, charsets, AJAX, streaming, template names, a second latency): ~0.4 ms
    of the per-request cost bench/load.py measures. Kept, under its names and labels: requests by method, requests
    by view/transport/method, responses by status/view/method, latency by view/method, exceptions by type and view.
    """

    def process_request(self, request: HttpRequest) -> None:
        request.prometheus_after_middleware_event = Time()  # type: ignore[attr-defined]
        self.label_metric(self.metrics.requests_by_method, request, method=self._method(request)).inc()

    def process_view(self, request: HttpRequest, view_func: Any, *view_args: Any, **view_kwargs: Any) -> None:
        return None  # counted with the response, where the view name is known either way

    def process_template_response(self, request: HttpRequest, response: Any) -> Any:
        return response

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        method, view = self._method(request), self._get_view_name(request)
        metrics = self.metrics
        self.label_metric(
            metrics.requests_by_view_transport_method,
            request,
            view=view,
            transport=self._transport(request),
            method=method,
        ).inc()
        self.label_metric(
            metrics.responses_by_status_view_method, request, status=str(response.status_code), view=view, method=method
        ).inc()
        started = getattr(request, "prometheus_after_middleware_event", None)
        if started is not None:
            self.label_metric(metrics.requests_latency_by_view_method, request, view=view, method=method).observe(
                TimeSince(started)
            )
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        # Counted only: the 500 response it becomes goes through process_response (django-prometheus also timed it
        # here, observing such a request's latency twice).
        self.label_metric(self.metrics.exceptions_by_type, request, type=type(exception).__name__).inc()
        self.label_metric(self.metrics.exceptions_by_view, request, view=self._get_view_name(request)).inc()


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex  # type: ignore[attr-defined]
        channel = "admin" if request.path.startswith("/admin/") else "api"
        with origin(request_id=request.request_id, client_ip=client_ip(request), channel=channel):  # type: ignore[attr-defined]
            response = self.get_response(request)
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        return response


class ServiceUnavailableMiddleware:
    """A database or Redis outage in a non-DRF view (admin pages, /metrics, the chat page) becomes a 503 JSON with
    Retry-After instead of Django's 500 page; DRF views get the same answer from aicdn_project.api."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from aicdn_project.api import outage_body, outage_kind

        kind = outage_kind(exception)
        if kind is None:
            return None
        logger.warning("%s unavailable during %s %s: %s", kind, request.method, request.path, exception)
        response = JsonResponse(outage_body(kind), status=503)
        response["Retry-After"] = "5"
        return response
