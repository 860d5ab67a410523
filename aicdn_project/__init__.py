"""AI-CDN project package: settings, URLs, ASGI routing and the Celery app."""

from aicdn_project.celery import app as celery_app

__all__ = ("celery_app",)
