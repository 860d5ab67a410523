"""Request metrics, the request id (taken from X-Request-ID when sane, else generated; echoed back and kept for the
audit trail), and the 503 answer for database or Redis outages in views that DRF's exception handler does not
cover."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.functional import SimpleLazyObject, empty
from django_prometheus.middleware import PrometheusAfterMiddleware
from django_prometheus.utils import Time, TimeSince

from aicdn_project.context import origin
from aicdn_project.ratelimit import client_ip  # X-Forwarded-For only behind TRUSTED_PROXIES, as for rate limits

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestMetricsMiddleware:
    """django-prometheus' request metrics, the series the dashboards and alerts read, from one plain layer (first in
    MIDDLEWARE, so the latency covers the whole chain).

    Kept, under django-prometheus' names and labels (its `Metrics` registers them): requests by method, requests by
    view/transport/method, responses by status/view/method, latency by view/method, exceptions by type and by view.
    Its Before/After pair updated about fifteen series per request through two layers (request and response totals,
    body sizes, transports, charsets, AJAX, streaming, template names, a second latency): ~0.4 ms of the per-request
    cost bench/load.py measures.

    A plain middleware rather than a subclass of django-prometheus' MiddlewareMixin one: under ASGI Django calls every
    `process_view` and `process_template_response` hook through its own sync_to_async thread switch (they run in
    the async part of the handler, between the middleware chain and the view), so the two inherited hooks cost two
    thread switches per request even doing nothing. Only `process_exception` remains, called when a view raises.

    Each labelled child is looked up once per process and then kept (prometheus_client's `labels()` validates and
    sorts its arguments on every call: about half of this layer's own time). The label values are bounded (methods,
    statuses, route names, transports), and the table is emptied if it ever grows past CHILDREN_MAX.
    """

    CHILDREN_MAX = 10_000
    _children: dict[tuple[Any, ...], Any] = {}

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # django-prometheus' own naming of methods, transports and views, from its middleware (never in the chain).
        self._names = PrometheusAfterMiddleware(get_response)
        self.metrics = self._names.metrics

    def _child(self, metric: Any, **labels: str) -> Any:
        key = (id(metric), *labels.values())
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= self.CHILDREN_MAX:
                self._children.clear()
            child = self._children[key] = metric.labels(**labels)
        return child

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = Time()
        names, metrics = self._names, self.metrics
        method = names._method(request)
        self._child(metrics.requests_by_method, method=method).inc()
        response = self.get_response(request)
        view = names._get_view_name(request)
        transport = names._transport(request)
        self._child(metrics.requests_by_view_transport_method, view=view, transport=transport, method=method).inc()
        status = str(response.status_code)
        self._child(metrics.responses_by_status_view_method, status=status, view=view, method=method).inc()
        self._child(metrics.requests_latency_by_view_method, view=view, method=method).observe(TimeSince(started))
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        # Counted only: the 500 response it becomes comes back through __call__ (django-prometheus also timed it
        # here, observing such a request's latency twice).
        view = self._names._get_view_name(request)
        self._child(self.metrics.exceptions_by_type, type=type(exception).__name__).inc()
        self._child(self.metrics.exceptions_by_view, view=view).inc()


class LazyMessageMiddleware(MessageMiddleware):
    """Django's MessageMiddleware, building a request's message storage (a cookie and a session storage) only when
    something adds or reads a message: API requests never do, admin pages do as before."""

    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(lambda: default_storage(request))  # type: ignore[attr-defined]

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        messages = getattr(request, "_messages", None)
        if isinstance(messages, SimpleLazyObject) and messages._wrapped is empty:
            return response  # never used: nothing to store
        return super().process_response(request, response)  # type: ignore[no-any-return]


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
