"""Environment and approval-policy writes for the API and admin: admins only, audited.

Environment rows belong to engines (engines.services validates engine config and secret references and audits);
the admin-only rule for changing them lives here, with the approval policy it goes with.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from aicdn_project import roles
from aicdn_project.audit import audit_record
from aicdn_project.errors import PermissionDenied, ValidationFailed
from engines import services as engine_services
from engines.models import Environment, EnvironmentKind
from iprs import policy as rules
from iprs.models import ApprovalPolicy

_POLICY_FIELDS = (
    "required_approvals",
    "reviewer_group",
    "blocking_severity",
    "cost_increase_threshold",
    "emergency_rollback_allowed",
)


def _require_admin(actor: Any, what: str) -> None:
    if not roles.is_admin(actor):
        raise PermissionDenied(f"only admins may {what}", code="not_admin")


def _policy_view(policy: ApprovalPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in _POLICY_FIELDS}


def environment_create(
    *,
    actor: Any,
    name: str,
    engine: str = "simulator",
    kind: str = EnvironmentKind.DEVELOPMENT,
    description: str = "",
    config: Mapping[str, Any] | None = None,
    secret_refs: Mapping[str, str] | None = None,
    policy: Mapping[str, Any] | None = None,
) -> Environment:
    """Admins create environments (engines validates engine config and secret references), with their policy."""
    _require_admin(actor, "create environments")
    with transaction.atomic():
        env = engine_services.environment_create(
            actor=actor,
            name=name,
            engine=engine,
            kind=kind,
            description=description,
            config=config,
            secret_refs=secret_refs,
        )
        if policy:
            approval_policy_set(actor=actor, environment=env, **policy)
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
    policy: Mapping[str, Any] | None = None,
) -> Environment:
    """Admins change an environment's engine, kind, description, config, secret references or policy."""
    _require_admin(actor, "change environments")
    with transaction.atomic():
        env = engine_services.environment_update(
            actor=actor,
            environment=environment,
            engine=engine,
            kind=kind,
            description=description,
            config=config,
            secret_refs=secret_refs,
        )
        if policy:
            approval_policy_set(actor=actor, environment=env, **policy)
    return env


def _clean_policy(changes: dict[str, Any]) -> dict[str, Any]:
    errors: list[dict[str, str]] = []
    data = dict(changes)
    if "required_approvals" in data:
        value = data["required_approvals"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 20:
            errors.append({"path": "required_approvals", "message": "must be an integer from 1 to 20"})
    if "reviewer_group" in data:
        from django.contrib.auth.models import Group

        if not Group.objects.filter(name=data["reviewer_group"]).exists():
            errors.append({"path": "reviewer_group", "message": f"no group named {data['reviewer_group']!r}"})
    if "blocking_severity" in data and data["blocking_severity"] not in rules.severities():
        errors.append({"path": "blocking_severity", "message": f"one of {', '.join(rules.severities())}"})
    if "cost_increase_threshold" in data and data["cost_increase_threshold"] is not None:
        try:
            amount = Decimal(str(data["cost_increase_threshold"]))
        except InvalidOperation:
            amount = Decimal(-1)
        if not amount.is_finite() or not 0 <= amount < 10**9:
            errors.append({"path": "cost_increase_threshold", "message": "USD per month, from 0 to 999,999,999"})
        else:
            data["cost_increase_threshold"] = amount.quantize(Decimal("0.01"))
    if "emergency_rollback_allowed" in data and not isinstance(data["emergency_rollback_allowed"], bool):
        errors.append({"path": "emergency_rollback_allowed", "message": "must be true or false"})
    if errors:
        raise ValidationFailed(
            f"policy is invalid: {errors[0]['path']}: {errors[0]['message']}", details={"errors": errors}
        )
    return data


def approval_policy_set(*, actor: Any, environment: Environment, **changes: Any) -> ApprovalPolicy:
    """Change an environment's approval policy (created with defaults on first change); audited."""
    _require_admin(actor, "change approval policies")
    unknown = sorted(set(changes) - set(_POLICY_FIELDS))
    if unknown:
        raise ValidationFailed(f"unknown policy field(s): {', '.join(unknown)}", code="unknown_field")
    data = _clean_policy(changes)
    with transaction.atomic():
        ApprovalPolicy.objects.get_or_create(environment=environment)
        policy = ApprovalPolicy.objects.select_for_update().get(environment=environment)
        before = _policy_view(policy)
        for key, value in data.items():
            setattr(policy, key, value)
        policy.save()
        after = _policy_view(policy)
        if after != before:
            audit_record(
                actor=actor,
                action="environment.policy_changed",
                object_type="environment",
                object_id=environment.pk,
                object_repr=environment.name,
                before=before,
                after=after,
            )
    return policy
