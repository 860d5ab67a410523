"""Celery tasks of the engines app: drift detection (beat fans out one check per environment). Thin: ids in."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="engines.drift_check_all")
def drift_check_all() -> list[int]:
    """Beat: enqueue one drift check per environment; returns the environment ids."""
    from engines.models import Environment

    ids = list(Environment.objects.order_by("pk").values_list("pk", flat=True))
    for environment_id in ids:
        drift_check_environment.delay(environment_id)
    return ids


@shared_task(bind=True, name="engines.drift_check", acks_late=True)
def drift_check_environment(self: Any, environment_id: int) -> str:
    """Check one environment; returns the report status, or "skipped" while a deployment runs there."""
    from aicdn_project.context import origin
    from aicdn_project.errors import Conflict
    from engines.drift import drift_check
    from engines.models import Environment

    environment = Environment.objects.filter(pk=environment_id).first()
    if environment is None:
        return "gone"
    with origin(channel="worker", request_id=str(self.request.id or "")[:64]):
        try:
            return drift_check(environment=environment).status
        except Conflict as exc:
            logger.info("drift check of %s skipped: %s", environment.name, exc.message)
            return "skipped"
