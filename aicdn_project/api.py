"""API plumbing shared by every app: the exception handler, the JSON and YAML body parsers, outage classification."""

from __future__ import annotations

import io
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from kombu.exceptions import OperationalError as BrokerError
from rest_framework import exceptions, parsers, status
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from aicdn_project.errors import ApplicationError, PayloadTooLarge

# No API body needs more: a blueprint document is about 7 levels deep, and YAML sources are limited to 32.
MAX_JSON_DEPTH = 64


def _check_body(data: Any) -> None:
    """Walk the parsed body without recursion (it may be deep): refuse deep nesting and keys or strings with NUL."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise exceptions.ParseError("JSON body contains a NUL character (\\u0000), which cannot be stored.")
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise exceptions.ParseError(f"JSON body nests deeper than {MAX_JSON_DEPTH} levels.")
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
                pending.extend((value, depth + 1) for value in item.values())
            else:
                pending.extend((value, depth + 1) for value in item)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with the limits Django applies to form bodies but DRF does not apply to JSON.

    A body larger than DATA_UPLOAD_MAX_MEMORY_SIZE is refused before it is read whole (413); nesting deeper than the
    decoder's recursion limit is a 400, not a RecursionError (500), and so is anything deeper than MAX_JSON_DEPTH
    (free-form JSON fields such as an environment's config or an IPR's AI provenance would store it); NUL characters
    are refused because PostgreSQL text and jsonb cannot store them (a 500 at INSERT time otherwise).
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1 if limit is not None else -1)
        if limit is not None and len(raw) > limit:
            raise PayloadTooLarge(f"JSON body is larger than the {limit} byte limit.", details={"limit_bytes": limit})
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON body nests too deeply.") from None
        _check_body(data)
        return data


class YAMLTextParser(BaseParser):
    """Passes a YAML body through as text ({"source": ...}); parsing it safely is the blueprints service's job."""

    media_type = "application/yaml"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> dict:
        limit = settings.BLUEPRINT_MAX_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise exceptions.ParseError(f"YAML body is larger than the {limit} byte limit.")
        try:
            return {"source": raw.decode("utf-8")}
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"YAML body is not valid UTF-8 (byte {exc.start}).") from exc


class YAMLAltParser(YAMLTextParser):
    media_type = "text/yaml"


class XYAMLParser(YAMLTextParser):
    media_type = "application/x-yaml"


OUTAGE_MESSAGES = {
    "database": "The database is unavailable; retry shortly.",
    "redis": "Redis (cache and message broker) is unavailable; retry shortly.",
}


def outage_kind(exc: BaseException) -> str | None:
    """ "database" or "redis" when `exc` is a connection-level failure of that service, else None."""
    if isinstance(exc, OperationalError | InterfaceError):
        return "database"
    # redis-py's ConnectionError/TimeoutError (cache, rate-limit stats) and kombu's OperationalError (a Celery
    # publish that gave up reaching the broker).
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | BrokerError):
        return "redis"
    return None


def outage_body(kind: str) -> dict[str, Any]:
    return {"error": "service_unavailable", "message": OUTAGE_MESSAGES[kind], "details": {"service": kind}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"error": "payload_too_large", "message": "Request body exceeds the size limit.", "details": {}},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, UnicodeDecodeError):
        return Response(
            {"error": "parse_error", "message": "Request body is not valid UTF-8.", "details": {}},
            status=status.HTTP_400_BAD_REQUEST,
        )
    kind = outage_kind(exc)
    if kind is not None:
        # Connection-level failures (database or Redis down) become a clean 503, never a 500 with a traceback.
        return Response(outage_body(kind), status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"})
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        detail = response.data
        message = detail.get("detail") if isinstance(detail, dict) and "detail" in detail else None
        if message is None:
            message = "Invalid input." if isinstance(exc, exceptions.ValidationError) else str(exc.detail)
            details: Any = detail
        else:
            details = {}
        codes = exc.get_codes()
        response.data = {
            "error": codes if isinstance(codes, str) else exc.default_code,
            "message": str(message),
            "details": details,
        }
    return response
