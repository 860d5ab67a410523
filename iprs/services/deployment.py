"""The deployment side of an IPR: run it through the engines executor, resume a dead worker's run, record outcomes.

The executor (engines/executor.py) knows deployments, not IPRs: this module opens the IPR's deployment when the IPR
starts deploying, claims it for the worker, renews the environment's deploy lock with each lease heartbeat, and
moves the IPR to deployed or failed in the same transaction that records the deployment's outcome.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from aicdn_project.errors import Conflict
from engines import executor
from iprs.models import IPR, EnvironmentLock, IPRState
from iprs.policy import check_can, check_transition, policy_for
from iprs.services.ipr import ipr_get_for_update, ipr_set_state, require_comment
from iprs.services.locks import (
    environment_lock_acquire,
    environment_lock_heartbeat,
    environment_lock_release,
    lock_is_held,
)

logger = logging.getLogger(__name__)
S = IPRState


def _lease() -> int:
    return int(settings.AICDN_DEPLOY_LEASE_SECONDS)


def ipr_mark_deploying(*, ipr_id: int, worker: str = "") -> IPR:
    """queued -> deploying, taking the environment's deploy lock and opening the deployment in the same transaction."""
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        check_transition(ipr, S.DEPLOYING)
        # The lock and the state move together: a second worker finds the IPR no longer queued, or the lock held.
        environment_lock_acquire(environment=ipr.environment, ipr=ipr, holder_name=worker, lease_seconds=_lease())
        if ipr.base_version_id != ipr.environment.deployed_version_id:
            raise Conflict(
                f"IPR #{ipr.pk} was planned against a version that is no longer deployed",
                code="diverged",
                details={"base_version": ipr.base_version_id, "deployed_version": ipr.environment.deployed_version_id},
            )
        actor = ipr.queued_by or "system"
        # We hold the lock now, so any other IPR still "deploying" here lost its lease: its worker is presumed dead.
        orphans = IPR.objects.select_for_update().filter(environment_id=ipr.environment_id, state=S.DEPLOYING)
        for orphan in orphans.exclude(pk=ipr.pk).order_by("pk"):
            reason = f"deploy lease lost (worker presumed dead); IPR #{ipr.pk} took the environment over"
            ipr_set_state(ipr=orphan, to_state=S.FAILED, actor=actor, reason=reason, failure_reason=reason)
            executor.deployment_cancel(ipr_id=orphan.pk, reason=reason)
        # Opened here, not by the worker afterwards: an IPR is never "deploying" without a deployment to resume.
        executor.deployment_open(
            ipr_id=ipr.pk, environment=ipr.environment, target_version=ipr.blueprint_version, plan=ipr.plan
        )
        return ipr_set_state(ipr=ipr, to_state=S.DEPLOYING, actor=actor, reason=worker)


def ipr_mark_deployed(*, ipr_id: int, result: dict[str, Any] | None = None) -> IPR:
    """deploying -> deployed: the environment now runs this version; the previously deployed IPR is superseded."""
    from engines.models import Environment

    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        actor = ipr.queued_by or "system"
        ipr_set_state(ipr=ipr, to_state=S.DEPLOYED, actor=actor, deployment_result=result or {})
        executor.deployment_finish(ipr_id=ipr.pk, succeeded=True, result=result)
        previous = IPR.objects.select_for_update().filter(environment_id=ipr.environment_id, state=S.DEPLOYED)
        for old in previous.exclude(pk=ipr.pk).order_by("pk"):
            ipr_set_state(ipr=old, to_state=S.SUPERSEDED, actor=actor, reason=f"superseded by IPR #{ipr.pk}")
        Environment.objects.filter(pk=ipr.environment_id).update(deployed_version=ipr.blueprint_version_id)
        ipr.environment.deployed_version_id = ipr.blueprint_version_id
        environment_lock_release(environment=ipr.environment, actor=actor, ipr=ipr, reason="deployed")
        return ipr


def ipr_mark_failed(*, ipr_id: int, reason: str, result: dict[str, Any] | None = None) -> IPR:
    """queued or deploying -> failed (with the partial result), releasing the deploy lock if this IPR holds it."""
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        actor = ipr.queued_by or "system"
        fields: dict[str, Any] = {"failure_reason": reason}
        if result is not None:
            fields["deployment_result"] = result
        ipr_set_state(ipr=ipr, to_state=S.FAILED, actor=actor, reason=reason[:2000], **fields)
        executor.deployment_finish(ipr_id=ipr.pk, succeeded=False, error=reason, result=result)
        environment_lock_release(environment=ipr.environment, actor=actor, ipr=ipr, reason="failed")
        return ipr


def ipr_abort(*, admin: Any, ipr_id: int, reason: str) -> IPR:
    """An admin gives up on a queued or deploying IPR (a stuck run): failed, deployment cancelled, lock freed."""
    reason = require_comment(reason, "abort a deployment")
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        check_can(admin, ipr, "abort", policy_for(ipr.environment))
        message = f"aborted by {admin.get_username()}: {reason}"
        ipr_set_state(ipr=ipr, to_state=S.FAILED, actor=admin, reason=message, failure_reason=message)
        # A worker still running it loses its lease at the next heartbeat and stops scheduling.
        executor.deployment_cancel(ipr_id=ipr.pk, reason=message)
        environment_lock_release(environment=ipr.environment, actor=admin, ipr=ipr, reason="aborted")
        return ipr


def ipr_run_deployment(*, ipr_id: int, worker: str = "") -> IPR:
    """Called by the deploy task: start a queued IPR, or resume a deploying one whose worker died, and record the
    outcome. A duplicate message, or a run another worker holds, returns the IPR untouched."""
    ipr = IPR.objects.get(pk=ipr_id)
    if ipr.state == S.QUEUED:
        try:
            ipr = ipr_mark_deploying(ipr_id=ipr_id, worker=worker)
        except Conflict as exc:
            if exc.code == "diverged":  # what it was planned against is gone: applying it would be a blind change
                return ipr_mark_failed(ipr_id=ipr_id, reason=exc.message)
            if exc.code not in ("invalid_transition", "concurrent_change"):
                raise  # environment_locked: the task retries later
            ipr = IPR.objects.get(pk=ipr_id)  # another worker started it first
    if ipr.state != S.DEPLOYING:
        return ipr
    deployment = executor.deployment_open(
        ipr_id=ipr.pk, environment=ipr.environment, target_version=ipr.blueprint_version, plan=ipr.plan
    )
    claimed = executor.deployment_claim(deployment_id=deployment.pk, owner=worker)
    if claimed is None:
        # A live worker holds it (or it is finished). If that worker dies, its lease runs out and
        # iprs.resume_stalled_deployments enqueues this IPR again.
        return ipr
    environment = ipr.environment
    if claimed.attempt > 1:
        logger.warning("resuming the deployment of IPR %s (attempt %s) as %s", ipr.pk, claimed.attempt, worker)
        try:
            # Re-entrant for this IPR; the dead worker's expired lease on the environment is taken back.
            environment_lock_acquire(environment=environment, ipr=ipr, holder_name=worker, lease_seconds=_lease())
        except Conflict:
            executor.deployment_release(deployment_id=deployment.pk, owner=worker)
            raise

    def heartbeat() -> None:
        environment_lock_heartbeat(environment=environment, ipr=ipr, lease_seconds=_lease())

    try:
        outcome = executor.deployment_execute(deployment_id=deployment.pk, owner=worker, heartbeat=heartbeat)
    except executor.LeaseLost as exc:
        logger.warning("IPR %s: %s; the new holder records the outcome", ipr.pk, exc)
        return IPR.objects.get(pk=ipr_id)
    except Exception as exc:
        logger.exception("deployment of IPR %s failed", ipr_id)
        return ipr_mark_failed(ipr_id=ipr_id, reason=f"{type(exc).__name__}: {exc}")
    try:
        if outcome.succeeded:
            return ipr_mark_deployed(ipr_id=ipr_id, result=outcome.result)
        return ipr_mark_failed(ipr_id=ipr_id, reason=outcome.error, result=outcome.result)
    except Conflict as exc:
        if exc.code not in ("invalid_transition", "concurrent_change"):
            raise
        # A worker that took over after our lease ran out recorded the same outcome first.
        return IPR.objects.get(pk=ipr_id)


def deployments_resume_stalled() -> list[int]:
    """Beat: enqueue the deploy task again for every IPR whose worker died: deploying with an expired deployment
    lease, or queued for a whole lease while nothing holds its environment (the worker was killed after taking the
    message and before starting; with acks_late the broker only redelivers it after its visibility timeout).
    A duplicate message is harmless: only one worker can start the IPR or claim its deployment."""
    from iprs.tasks import deploy_ipr

    deploying = IPR.objects.filter(pk__in=executor.deployments_stalled(), state=S.DEPLOYING)
    ipr_ids = set(deploying.values_list("pk", flat=True))
    now = timezone.now()
    waiting = IPR.objects.filter(state=S.QUEUED, queued_at__lt=now - timedelta(seconds=_lease()))
    held = {
        lock.environment_id
        for lock in EnvironmentLock.objects.filter(environment_id__in=waiting.values("environment_id"))
        if lock_is_held(lock, now=now)
    }
    # An IPR waiting for a live holder's lock has its own retrying task; it is not lost.
    ipr_ids |= {pk for pk, env_id in waiting.values_list("pk", "environment_id") if env_id not in held}
    for ipr_id in sorted(ipr_ids):
        deploy_ipr.delay(ipr_id)
    return sorted(ipr_ids)
