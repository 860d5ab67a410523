"""Bench-only settings: the project's settings without authentication, rate limiting and metrics.

bench/load.py serves the same views from a second daphne with these settings to measure what those layers add per
request. Removed: Prometheus before/after, sessions and authentication middleware (and the messages middleware,
whose storage needs the session), the rate limiter, and DRF's authentication classes. Everything else is unchanged.
"""

from aicdn_project.settings import *  # noqa: F403

_REMOVED = {
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "aicdn_project.ratelimit.RateLimitMiddleware",
}
MIDDLEWARE = [m for m in MIDDLEWARE if m not in _REMOVED]  # noqa: F405
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
}
