"""Reads for environments, recorded resource state, and the engine an environment deploys through."""

from __future__ import annotations

import os
from typing import Any

from aicdn_project.errors import NotFound, ServiceUnavailable
from engines.base import Engine, EngineContext
from engines.models import Environment, ResourceState
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
