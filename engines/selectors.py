"""Reads for environments, recorded resource state, the engine an environment deploys through, deployments, drift."""

from __future__ import annotations

import os
from typing import Any

from django.db.models import QuerySet

from aicdn_project.errors import NotFound, ServiceUnavailable
from engines.base import Engine, EngineContext
from engines.models import Deployment, DeploymentStatus, DriftReport, Environment, ResourceOperation, ResourceState
from engines.registry import get_engine_class


def environment_get(*, name: str) -> Environment:
    try:
        return Environment.objects.get(name=name)
    except Environment.DoesNotExist:
        raise NotFound(f"environment {name!r} does not exist", details={"environment": name}) from None


def environment_list() -> list[Environment]:
    return list(Environment.objects.select_related("deployed_version").order_by("name"))


def environment_secrets(environment: Environment) -> dict[str, str]:
    """Resolve `secret_refs` ({key: ENV_VAR}) from the process environment; a missing variable is an error."""
    resolved: dict[str, str] = {}
    missing = []
    for key, var in (environment.secret_refs or {}).items():
        value = os.environ.get(var)
        if value is None:
            missing.append(var)
        else:
            resolved[key] = value
    if missing:
        raise ServiceUnavailable(
            f"environment {environment.name!r} needs secrets from unset environment variables: {', '.join(missing)}",
            code="secret_missing",
            details={"environment": environment.name, "variables": missing},
        )
    return resolved


def engine_context(environment: Environment, *, deployment_id: str = "") -> EngineContext:
    return EngineContext(
        environment=environment.name,
        deployment_id=deployment_id,
        config=dict(environment.config or {}),
        secrets=environment_secrets(environment),
    )


def environment_engine(environment: Environment, *, deployment_id: str = "") -> tuple[Engine, EngineContext]:
    """The engine instance and operation context an executor uses for `environment`."""
    ctx = engine_context(environment, deployment_id=deployment_id)
    return get_engine_class(environment.engine).for_context(ctx), ctx


def resource_state_list(*, environment: Environment) -> list[ResourceState]:
    return list(ResourceState.objects.filter(environment=environment).order_by("name"))


def deployed_state(environment: Environment) -> dict[str, dict[str, Any]]:
    """Resource name -> {"name", "type", "spec", "status", "outputs"}: what the plan diffs a blueprint against."""
    return {
        state.name: {
            "name": state.name,
            "type": state.type,
            "spec": state.spec,
            "status": state.status,
            "outputs": state.outputs,
        }
        for state in resource_state_list(environment=environment)
    }


# --- deployments and drift (the executor and drift detection write them) -----------------------------------------


def deployment_for_ipr(*, ipr_id: int) -> Deployment | None:
    return Deployment.objects.select_related("environment", "target_version").filter(ipr_id=ipr_id).first()


def deployment_get(*, deployment_id: int) -> Deployment:
    deployment = (
        Deployment.objects.select_related("environment", "target_version")
        .prefetch_related("operations")
        .filter(pk=deployment_id)
        .first()
    )
    if deployment is None:
        raise NotFound(f"deployment {deployment_id} not found", details={"deployment": deployment_id})
    return deployment


def deployment_list(
    *, ipr_id: int | None = None, environment: str | None = None, status: str | None = None
) -> QuerySet[Deployment]:
    qs = Deployment.objects.select_related("environment", "target_version").order_by("-created_at", "-id")
    if ipr_id is not None:
        qs = qs.filter(ipr_id=ipr_id)
    if environment:
        qs = qs.filter(environment__name=environment)
    if status:
        qs = qs.filter(status__in=[s for s in status.split(",") if s])
    return qs


def deployment_progress(*, ipr_id: int) -> dict[str, Any] | None:
    """What the IPR API, the review page and `ai-cdn deploy --wait` show: the run and each resource's status."""
    deployment = Deployment.objects.filter(ipr_id=ipr_id).first()
    if deployment is None:
        return None
    operations = ResourceOperation.objects.filter(deployment=deployment).order_by("position")
    return {
        "id": deployment.pk,
        "status": deployment.status,
        "attempt": deployment.attempt,
        "started_at": deployment.started_at,
        "finished_at": deployment.finished_at,
        "error": deployment.error,
        "resources": [
            {
                "name": op.resource,
                "type": op.type,
                "action": op.action,
                "status": op.status,
                "attempts": op.attempts,
                "error": op.error,
                "duration_ms": op.duration_ms,
            }
            for op in operations
        ],
    }


def deployment_running_in(environment: Environment) -> Deployment | None:
    return Deployment.objects.filter(environment=environment, status=DeploymentStatus.RUNNING).first()


def drift_report_latest(*, environment: Environment) -> DriftReport | None:
    return DriftReport.objects.filter(environment=environment).order_by("-checked_at", "-id").first()


def drift_report_list(*, environment: Environment, limit: int = 10) -> list[DriftReport]:
    return list(DriftReport.objects.filter(environment=environment).order_by("-checked_at", "-id")[:limit])
