"""Celery tasks of the IPR flow: thin, ids in, a service does the work."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import shared_task


@shared_task(bind=True, name="iprs.deploy_ipr", acks_late=True, max_retries=20)
def deploy_ipr(self: Any, ipr_id: int) -> str:
    """Run a queued IPR through the engines executor, or resume a deploying one whose worker died; returns the IPR's
    state afterwards. Duplicate deliveries are harmless: only one worker can claim the deployment."""
    from aicdn_project.context import origin
    from aicdn_project.errors import Conflict
    from iprs.services import ipr_run_deployment

    # Host, process and task id: the lease owner, unique even when a redelivered message reaches the same host.
    worker = f"{socket.gethostname()}:{os.getpid()}:{self.request.id or 'local'}"
    with origin(channel="worker", request_id=str(self.request.id or "")[:64]):
        try:
            return ipr_run_deployment(ipr_id=ipr_id, worker=worker).state
        except Conflict as exc:
            if exc.code == "environment_locked":  # another run holds the environment: try again once it is free
                raise self.retry(exc=exc, countdown=30) from exc
            raise


@shared_task(name="iprs.resume_stalled_deployments")
def resume_stalled_deployments() -> list[int]:
    """Beat: re-enqueue deploy_ipr for every IPR whose deployment's worker died (its lease expired)."""
    from aicdn_project.context import origin
    from iprs.services import deployments_resume_stalled

    with origin(channel="worker"):
        return deployments_resume_stalled()
