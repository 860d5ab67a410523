"""API plumbing shared by every app: the exception handler and the YAML body parser."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from aicdn_project.errors import ApplicationError


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
    if isinstance(exc, OperationalError | InterfaceError):
        # Connection-level failures (database down) become a clean 503, never a 500 with a traceback.
        return Response(
            {"error": "service_unavailable", "message": "The database is unavailable; retry shortly.", "details": {}},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
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
