"""Analysis on stored versions, for a requesting user: cost, audit with suppressions, plan, optimisation, templates."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from aicdn_project import roles
from aicdn_project.audit import audit_record
from aicdn_project.errors import Conflict, PermissionDenied, ValidationFailed
from blueprints import selectors
from blueprints import services as blueprint_services
from blueprints.analysis import cost, plan, security, templates, topology
from blueprints.analysis.optimize import optimize as optimize_document
from blueprints.analysis.plan import DeployedResource
from blueprints.models import Blueprint, BlueprintVersion, PriceBook, SecuritySuppression

MIN_JUSTIFICATION = 10
_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")


def _invalid(path: str, message: str, code: str = "validation_failed") -> ValidationFailed:
    return ValidationFailed(
        f"{path.removeprefix('$.')}: {message}", code=code, details={"errors": [{"path": path, "message": message}]}
    )


def _version_ref(version: BlueprintVersion) -> dict[str, Any]:
    return {
        "id": version.pk,
        "blueprint_id": version.blueprint_id,
        "blueprint": version.blueprint.name,
        "number": version.number,
        "commit_id": version.commit_id,
    }


# --- price book ----------------------------------------------------------------------------------------------------
def active_price_book() -> dict[str, Any]:
    """The admin's active price book if there is one, else the AICDN_PRICE_BOOK_PATH file or the shipped YAML."""
    return cost.resolve_price_book(None)


def price_book_save(*, user: Any, price_book: PriceBook) -> PriceBook:
    """Validate and save an edited price book; activating it deactivates the previous one (audited)."""
    if not roles.is_admin(user):
        raise PermissionDenied("only admins may change price books", code="not_admin")
    cost.check_price_book(price_book.data)
    with transaction.atomic():
        if price_book.is_active:
            PriceBook.objects.select_for_update().filter(is_active=True).exclude(pk=price_book.pk).update(
                is_active=False
            )
        created = price_book.pk is None
        price_book.updated_by = user
        price_book.save()
        audit_record(
            actor=user,
            action="pricebook.created" if created else "pricebook.changed",
            object_type="pricebook",
            object_id=price_book.pk,
            object_repr=str(price_book),
            after={"version": price_book.data.get("version"), "active": price_book.is_active},
        )
    return price_book


# --- cost ----------------------------------------------------------------------------------------------------------
def version_cost(*, user: Any, ref: str | int) -> dict[str, Any]:
    version = selectors.version_get(user=user, ref=ref)
    return {"version": _version_ref(version), **cost.estimate_cost(version.document, active_price_book())}


def version_cost_delta(*, user: Any, to_ref: str | int, from_ref: str | int | None = None) -> dict[str, Any]:
    """Cost difference between two versions; without `from_ref`, against the parent (or nothing for a first one)."""
    new = selectors.version_get(user=user, ref=to_ref)
    old = selectors.version_get(user=user, ref=from_ref) if from_ref is not None and from_ref != "" else new.parent
    result = cost.cost_delta(old.document if old else None, new.document, active_price_book())
    return {"from": _version_ref(old) if old else None, "to": _version_ref(new), **result}


# --- security ------------------------------------------------------------------------------------------------------
def _suppression_dict(sup: SecuritySuppression) -> dict[str, Any]:
    return {
        "id": sup.pk,
        "rule_id": sup.rule_id,
        "resource": sup.resource or None,
        "path": sup.path or None,
        "justification": sup.justification,
        "created_by": sup.created_by.get_username(),
        "created_at": sup.created_at.isoformat(),
    }


def suppression_list(*, user: Any, blueprint_id: int) -> list[dict[str, Any]]:
    blueprint = selectors.blueprint_get(user=user, blueprint_id=blueprint_id)
    rows = SecuritySuppression.objects.filter(blueprint=blueprint).select_related("created_by")
    return [_suppression_dict(sup) for sup in rows]


def _audit(version: BlueprintVersion) -> dict[str, Any]:
    suppressions = [
        {"rule_id": s.rule_id, "resource": s.resource, "path": s.path, "justification": s.justification}
        for s in SecuritySuppression.objects.filter(blueprint_id=version.blueprint_id)
    ]
    return {"version": _version_ref(version), **security.audit_document(version.document, suppressions)}


def version_security_audit(*, user: Any, ref: str | int) -> dict[str, Any]:
    """The audit of one version with the blueprint's recorded suppressions applied."""
    return _audit(selectors.version_get(user=user, ref=ref))


def _head(user: Any, blueprint_id: int) -> tuple[Blueprint, BlueprintVersion]:
    blueprint = selectors.blueprint_get(user=user, blueprint_id=blueprint_id)
    if blueprint.head is None:
        raise Conflict(f"blueprint {blueprint_id} has no version yet", code="no_version")
    return blueprint, blueprint.head


def security_audit(*, user: Any, blueprint_id: int) -> dict[str, Any]:
    """The seed's `security_audit(blueprint_id)`: the audit of the blueprint's head version."""
    return _audit(_head(user, blueprint_id)[1])


def suppression_create(
    *,
    user: Any,
    blueprint_id: int,
    rule_id: str,
    justification: str,
    resource: str | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    """Accept a finding on a blueprint (owner or admin), with a justification; recorded in the audit trail."""
    blueprint = selectors.blueprint_get(user=user, blueprint_id=blueprint_id)
    if not (blueprint.owner_id == user.pk or roles.is_admin(user)):
        raise PermissionDenied("only the blueprint's owner or an admin may suppress findings", code="not_owner")
    rule_id = (rule_id or "").strip().upper() if isinstance(rule_id, str) else ""
    if rule_id not in security.RULES_BY_ID:
        raise _invalid("$.rule_id", f"unknown rule {rule_id!r}; rules are AICDN-SEC-001..{security.RULES[-1].id[-3:]}")
    justification = justification.strip() if isinstance(justification, str) else ""
    if len(justification) < MIN_JUSTIFICATION:
        raise _invalid("$.justification", f"a justification of at least {MIN_JUSTIFICATION} characters is required")
    resource = resource or ""
    if resource and not _NAME_RE.match(resource):
        raise _invalid("$.resource", f"{resource!r} is not a resource name")
    path = path or ""
    if path and not (path.startswith("$.resources[") and len(path) <= 255):
        raise _invalid("$.path", "must be a finding path such as $.resources[0].specs.exposure")
    with transaction.atomic():
        try:
            with transaction.atomic():
                sup = SecuritySuppression.objects.create(
                    blueprint=blueprint,
                    rule_id=rule_id,
                    resource=resource,
                    path=path,
                    justification=justification,
                    created_by=user,
                )
        except IntegrityError as exc:
            raise Conflict(
                f"{rule_id} is already suppressed for this scope on blueprint {blueprint_id}",
                code="suppression_exists",
                details={"rule_id": rule_id, "resource": resource or None, "path": path or None},
            ) from exc
        audit_record(
            actor=user,
            action="blueprint.finding_suppressed",
            object_type="blueprint",
            object_id=blueprint.pk,
            object_repr=f"{blueprint.name}: {rule_id}",
            after={"rule_id": rule_id, "resource": resource, "path": path, "justification": justification},
        )
    return _suppression_dict(sup)


# --- plan and topology ----------------------------------------------------------------------------------------------
def version_plan(
    *, user: Any, ref: str | int, deployed: Mapping[str, DeployedResource] | None = None
) -> dict[str, Any]:
    """Plan from the recorded deployed state (nothing, until an environment is given) to this version."""
    version = selectors.version_get(user=user, ref=ref)
    return {"version": _version_ref(version), **plan.compute_plan(version.document, deployed or {})}


def version_topology_svg(*, user: Any, ref: str | int) -> str:
    return topology.render_svg(selectors.version_get(user=user, ref=ref).document)


# --- optimisation ---------------------------------------------------------------------------------------------------
def optimize_costs(*, user: Any, blueprint_id: int, target_reduction: float, save: bool = False) -> dict[str, Any]:
    """Recommendations for the head version; with save=True the optimised document becomes a new version."""
    blueprint, head = _head(user, blueprint_id)
    result = optimize_document(head.document, target_reduction, active_price_book())
    result = {"blueprint_id": blueprint.pk, "base_version": _version_ref(head), **result, "version": None}
    if save:
        if not result["recommendations"]:
            raise Conflict("nothing to save: no recommendation applies to this blueprint", code="nothing_to_optimize")
        kinds = sorted({rec["kind"] for rec in result["recommendations"]})
        version, _created = blueprint_services.blueprint_version_create(
            blueprint_id=blueprint.pk,
            author=user,
            document=result["optimized_document"],
            message=f"cost optimisation ({', '.join(kinds)}): -{result['reduction']:.1%} per month",
        )
        result["version"] = _version_ref(version)
    return result


# --- templates ------------------------------------------------------------------------------------------------------
def template_customize(
    *, user: Any, template_id: str, parameters: dict[str, Any] | None, save: bool = False, name: str | None = None
) -> dict[str, Any]:
    """Render a template; with save=True it becomes a new blueprint owned by the user."""
    document = templates.render_template(template_id, parameters)
    if name is not None:
        if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > 63:
            raise _invalid("$.name", f"{name!r} is not a valid blueprint name (lowercase letters, digits, dashes)")
        document["name"] = name
    result: dict[str, Any] = {
        "template": template_id,
        "parameters": templates.resolve_parameters(template_id, parameters),
        "document": document,
        "monthly_cost": cost.estimate_cost(document, active_price_book())["monthly_total"],
        "version": None,
    }
    if save:
        version = blueprint_services.blueprint_create(
            owner=user, document=document, message=f"from template {template_id}"
        )
        result["version"] = _version_ref(version)
    return result
