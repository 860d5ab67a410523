"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in every app."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aicdn_project.settings")

app = Celery("aicdn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Seconds a worker thread waits for a pooled database connection, unless DB_POOL_TIMEOUT says otherwise.
WORKER_POOL_TIMEOUT = 10.0


@worker_init.connect
def _patient_pool(**_: Any) -> None:
    """Workers wait longer for a pooled connection than web requests (0.5 s, to answer outages fast): a deployment's
    slot threads all take theirs as it starts, while the pool opens connections a few at a time, and a busy machine
    must not fail an operation for that."""
    from django.conf import settings

    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if isinstance(pool, dict) and "DB_POOL_TIMEOUT" not in os.environ:
        pool["timeout"] = WORKER_POOL_TIMEOUT
