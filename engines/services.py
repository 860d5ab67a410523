"""Writes for environments and recorded resource state; each environment change is audited in its transaction."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_slug
from django.db import transaction

from aicdn_project.audit import audit_record
from aicdn_project.errors import Conflict, ValidationFailed
from engines.base import EngineError, ResourceResult
from engines.models import Environment, EnvironmentKind, ResourceState, ResourceStatus
from engines.registry import get_engine_class

_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _validate(*, engine: str, config: Any, secret_refs: Any, kind: str) -> None:
    engine_cls = get_engine_class(engine)
    errors: list[dict[str, str]] = []
    if kind not in EnvironmentKind.values:
        errors.append({"path": "kind", "message": f"must be one of {', '.join(EnvironmentKind.values)}"})
    if not isinstance(config, Mapping):
        errors.append({"path": "config", "message": "must be an object"})
    else:
        errors += [{**e, "path": "config" + e["path"].lstrip("$")} for e in engine_cls.validate_config(config)]
    if not isinstance(secret_refs, Mapping):
        errors.append({"path": "secret_refs", "message": "must map secret keys to environment variable names"})
    else:
        for key, var in secret_refs.items():
            if not isinstance(var, str) or not _ENV_VAR.match(var):
                errors.append({"path": f"secret_refs.{key}", "message": "must be an environment variable name"})
        if isinstance(config, Mapping) and not errors:
            for key in engine_cls.required_secrets(config):
                if key not in secret_refs:
                    errors.append({"path": f"secret_refs.{key}", "message": f"the {engine} engine needs this secret"})
    if errors:
        raise ValidationFailed(f"invalid {engine} environment", details=errors)


def _copy(value: Any) -> Any:
    # Copy mappings only: dict() of a list would raise (a 500) or quietly turn [["k", "v"]] into {"k": "v"};
    # _validate refuses whatever is not a mapping.
    return dict(value) if isinstance(value, Mapping) else value


def _snapshot(env: Environment) -> dict[str, Any]:
    # secret_refs holds variable names only, so it is safe to audit.
    return {
        "name": env.name,
        "kind": env.kind,
        "engine": env.engine,
        "config": env.config,
        "secret_refs": env.secret_refs,
        "description": env.description,
    }


def environment_create(
    *,
    actor: Any,
    name: str,
    engine: str = "simulator",
    kind: str = EnvironmentKind.DEVELOPMENT,
    description: str = "",
    config: Mapping[str, Any] | None = None,
    secret_refs: Mapping[str, str] | None = None,
) -> Environment:
    try:
        validate_slug(name)
    except DjangoValidationError:
        error = {"path": "name", "message": "must be a slug"}
        raise ValidationFailed("invalid environment name", details=[error]) from None
    if len(name) > 63:
        raise ValidationFailed("invalid environment name", details=[{"path": "name", "message": "at most 63 chars"}])
    config = _copy(config if config is not None else {})
    secret_refs = _copy(secret_refs if secret_refs is not None else {})
    _validate(engine=engine, config=config, secret_refs=secret_refs, kind=kind)
    with transaction.atomic():
        if Environment.objects.filter(name=name).exists():
            raise Conflict(f"environment {name!r} already exists", code="duplicate", details={"name": name})
        env = Environment.objects.create(
            name=name, engine=engine, kind=kind, description=description, config=config, secret_refs=secret_refs
        )
        audit_record(
            actor=actor,
            action="environment.created",
            object_type="environment",
            object_id=env.pk,
            object_repr=env.name,
            after=_snapshot(env),
        )
    return env


def environment_update(
    *,
    actor: Any,
    environment: Environment,
    engine: str | None = None,
    kind: str | None = None,
    description: str | None = None,
    config: Mapping[str, Any] | None = None,
    secret_refs: Mapping[str, str] | None = None,
) -> Environment:
    with transaction.atomic():
        env = Environment.objects.select_for_update().get(pk=environment.pk)
        before = _snapshot(env)
        new_engine = engine if engine is not None else env.engine
        new_config = _copy(config) if config is not None else dict(env.config)
        new_refs = _copy(secret_refs) if secret_refs is not None else dict(env.secret_refs)
        new_kind = kind if kind is not None else env.kind
        _validate(engine=new_engine, config=new_config, secret_refs=new_refs, kind=new_kind)
        if new_engine != env.engine and ResourceState.objects.filter(environment=env).exists():
            raise Conflict(
                f"environment {env.name!r} has deployed resources; destroy them before changing its engine",
                details={"engine": env.engine},
            )
        env.engine, env.config, env.secret_refs, env.kind = new_engine, new_config, new_refs, new_kind
        if description is not None:
            env.description = description
        env.save()
        after = _snapshot(env)
        if after != before:
            audit_record(
                actor=actor,
                action="environment.updated",
                object_type="environment",
                object_id=env.pk,
                object_repr=env.name,
                before=before,
                after=after,
            )
    return env


def resource_state_record(
    *,
    environment: Environment,
    resource: Mapping[str, Any],
    status: str,
    deployment_id: str,
    result: ResourceResult | None = None,
    error: EngineError | str | None = None,
) -> ResourceState:
    """Upsert the recorded state of one resource after an engine operation (or while it runs)."""
    if status not in ResourceStatus.values:
        raise ValidationFailed(f"unknown resource status {status!r}")
    existing = ResourceState.objects.filter(environment=environment, name=resource["name"]).first()
    defaults: dict[str, Any] = {
        "type": resource["type"],
        # The recorded spec is what is deployed: a failed or unfinished update keeps the previous one.
        "spec": dict(resource) if existing is None or status == ResourceStatus.READY else existing.spec,
        "status": status,
        "deployment_id": deployment_id,
        "error": str(error.message if isinstance(error, EngineError) else (error or "")),
    }
    if result is not None:
        defaults["outputs"] = result.outputs
        defaults["engine_object_ids"] = result.object_ids
    state, _ = ResourceState.objects.update_or_create(environment=environment, name=resource["name"], defaults=defaults)
    return state


def resource_state_delete(*, environment: Environment, name: str) -> bool:
    deleted, _ = ResourceState.objects.filter(environment=environment, name=name).delete()
    return bool(deleted)
