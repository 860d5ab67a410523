"""The one domain error family: every app raises these; interfaces map them to 4xx responses or messages."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A domain error with a human message, a machine-readable code and structured details."""

    status_code = 400
    default_code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details if details is not None else {}

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


class ValidationFailed(ApplicationError):
    """Input is well-formed enough to read but breaks the rules; details lists every error with its JSON path."""

    status_code = 400
    default_code = "validation_failed"


class NotFound(ApplicationError):
    status_code = 404
    default_code = "not_found"


class PermissionDenied(ApplicationError):
    status_code = 403
    default_code = "permission_denied"


class Conflict(ApplicationError):
    """The request is valid but the object's current state forbids it (a forbidden transition, a held lock)."""

    status_code = 409
    default_code = "conflict"


class PayloadTooLarge(ApplicationError):
    status_code = 413
    default_code = "payload_too_large"


class ServiceUnavailable(ApplicationError):
    status_code = 503
    default_code = "service_unavailable"
