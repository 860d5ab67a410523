"""The deployment side of an IPR: the executor hook the deploy task calls, and the outcomes the executor reports.

engines may not import iprs, so the executor is handed a `DeploymentJob` (data plus a heartbeat callback) and
returns its result or raises; this module turns that into state transitions. Until an executor is registered a
queued IPR simply stays queued: nothing pretends to have deployed it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from aicdn_project.errors import Conflict
from iprs.models import IPR, IPRState
from iprs.policy import check_can, check_transition, policy_for
from iprs.services.ipr import ipr_get_for_update, ipr_set_state, require_comment
from iprs.services.locks import environment_lock_acquire, environment_lock_heartbeat, environment_lock_release

logger = logging.getLogger(__name__)
S = IPRState


@dataclass(frozen=True)
class DeploymentJob:
    """What an executor needs to apply one IPR: ids, the target document, the plan, and a lease heartbeat."""

    ipr_id: int
    environment_id: int
    environment_name: str
    engine: str
    target_document: dict[str, Any]
    plan: dict[str, Any]
    heartbeat: Callable[[], None] = field(repr=False)


DeploymentExecutor = Callable[[DeploymentJob], dict[str, Any]]
_executor: DeploymentExecutor | None = None


def deployment_executor_register(executor: DeploymentExecutor | None) -> None:
    """Install the function that applies a plan (the engines executor, wired by the project); None removes it."""
    global _executor
    _executor = executor


def deployment_executor_registered() -> bool:
    return _executor is not None


def ipr_mark_deploying(*, ipr_id: int, worker: str = "") -> IPR:
    """queued -> deploying, taking the environment's deploy lock in the same transaction."""
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        check_transition(ipr, S.DEPLOYING)
        # The lock and the state move together: a second worker finds the IPR no longer queued, or the lock held.
        environment_lock_acquire(environment=ipr.environment, ipr=ipr, holder_name=worker)
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
        return ipr_set_state(ipr=ipr, to_state=S.DEPLOYING, actor=actor, reason=worker)


def ipr_mark_deployed(*, ipr_id: int, result: dict[str, Any] | None = None) -> IPR:
    """deploying -> deployed: the environment now runs this version; the previously deployed IPR is superseded."""
    from engines.models import Environment

    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        actor = ipr.queued_by or "system"
        ipr_set_state(ipr=ipr, to_state=S.DEPLOYED, actor=actor, deployment_result=result or {})
        previous = IPR.objects.select_for_update().filter(environment_id=ipr.environment_id, state=S.DEPLOYED)
        for old in previous.exclude(pk=ipr.pk).order_by("pk"):
            ipr_set_state(ipr=old, to_state=S.SUPERSEDED, actor=actor, reason=f"superseded by IPR #{ipr.pk}")
        Environment.objects.filter(pk=ipr.environment_id).update(deployed_version=ipr.blueprint_version_id)
        ipr.environment.deployed_version_id = ipr.blueprint_version_id
        environment_lock_release(environment=ipr.environment, actor=actor, ipr=ipr, reason="deployed")
        return ipr


def ipr_mark_failed(*, ipr_id: int, reason: str) -> IPR:
    """queued or deploying -> failed, releasing the deploy lock if this IPR holds it."""
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        actor = ipr.queued_by or "system"
        ipr_set_state(ipr=ipr, to_state=S.FAILED, actor=actor, reason=reason[:2000], failure_reason=reason)
        environment_lock_release(environment=ipr.environment, actor=actor, ipr=ipr, reason="failed")
        return ipr


def ipr_abort(*, admin: Any, ipr_id: int, reason: str) -> IPR:
    """An admin gives up on a queued or deploying IPR (no executor, a stuck run): failed, lock freed; audited."""
    reason = require_comment(reason, "abort a deployment")
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        check_can(admin, ipr, "abort", policy_for(ipr.environment))
        message = f"aborted by {admin.get_username()}: {reason}"
        ipr_set_state(ipr=ipr, to_state=S.FAILED, actor=admin, reason=message, failure_reason=message)
        environment_lock_release(environment=ipr.environment, actor=admin, ipr=ipr, reason="aborted")
        return ipr


def ipr_run_deployment(*, ipr_id: int, worker: str = "") -> IPR:
    """Called by the deploy task: run a queued IPR through the registered executor and record the outcome."""
    executor = _executor
    if executor is None:
        logger.warning("no deployment executor is registered; IPR %s stays queued until one runs it", ipr_id)
        return IPR.objects.get(pk=ipr_id)
    try:
        ipr = ipr_mark_deploying(ipr_id=ipr_id, worker=worker)
    except Conflict as exc:
        if exc.code == "diverged":  # what it was planned against is gone: applying it would be a blind change
            return ipr_mark_failed(ipr_id=ipr_id, reason=exc.message)
        raise
    environment = ipr.environment

    def heartbeat() -> None:
        environment_lock_heartbeat(environment=environment, ipr=ipr)

    job = DeploymentJob(
        ipr_id=ipr.pk,
        environment_id=environment.pk,
        environment_name=environment.name,
        engine=environment.engine,
        target_document=ipr.blueprint_version.document,
        plan=ipr.plan,
        heartbeat=heartbeat,
    )
    try:
        result = executor(job)
    except Exception as exc:
        logger.exception("deployment of IPR %s failed", ipr_id)
        return ipr_mark_failed(ipr_id=ipr_id, reason=f"{type(exc).__name__}: {exc}")
    return ipr_mark_deployed(ipr_id=ipr_id, result=result)
