"""Request id (taken from X-Request-ID when sane, else generated; echoed back and kept for the audit trail), and the
503 answer for database or Redis outages in views that DRF's exception handler does not cover."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from aicdn_project.context import origin
from aicdn_project.ratelimit import client_ip  # X-Forwarded-For only behind TRUSTED_PROXIES, as for rate limits

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


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
