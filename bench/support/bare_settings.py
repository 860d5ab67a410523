"""Bench-only settings: the project's settings without authentication, rate limiting and metrics.

bench/load.py serves the same views from a second daphne with these settings to measure what those layers add per
request. Removed: the request metrics, sessions and authentication middleware (and the messages middleware,
whose storage needs the session), the rate limiter, and DRF's authentication classes. Everything else is unchanged.

The rate limiter is replaced by a pass-through that, like it, is the last and sync-only layer: that position decides
whether Django runs the chain synchronously in one thread or layer by layer in async mode under ASGI (see
aicdn_project.ratelimit.RateLimitMiddleware), and bare must run the remaining layers the same way as the project or
the difference would measure thread switches, not the removed layers.
"""

from collections.abc import Callable

from aicdn_project.settings import *  # noqa: F403

_REMOVED = {
    "aicdn_project.middleware.RequestMetricsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "aicdn_project.middleware.LazyMessageMiddleware",
}
_RATELIMIT = "aicdn_project.ratelimit.RateLimitMiddleware"


class SyncPassThrough:
    """Does nothing, synchronously: stands in for the rate limiter's place in the chain."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: object) -> object:
        return self.get_response(request)


MIDDLEWARE = [
    "bench.support.bare_settings.SyncPassThrough" if m == _RATELIMIT else m
    for m in MIDDLEWARE  # noqa: F405
    if m not in _REMOVED
]
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
}
