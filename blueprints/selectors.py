"""Reads of blueprints and versions, scoped to what a user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from aicdn_project import roles
from aicdn_project.errors import NotFound, ValidationFailed
from blueprints.models import Blueprint, BlueprintVersion

# Reviewers, operators and admins read every blueprint (they review what others propose); requesters their own.
_READ_ALL = (roles.REVIEWERS, roles.OPERATORS, roles.ADMINS)


def blueprint_list(*, user: Any) -> QuerySet[Blueprint]:
    qs = Blueprint.objects.select_related("owner", "head")
    return qs if roles.has_role(user, *_READ_ALL) else qs.filter(owner=user)


def blueprint_get(*, user: Any, blueprint_id: int) -> Blueprint:
    blueprint = blueprint_list(user=user).filter(pk=blueprint_id).first()
    if blueprint is None:
        raise NotFound(f"blueprint {blueprint_id} not found", details={"blueprint_id": blueprint_id})
    return blueprint


def version_list(*, user: Any, blueprint_id: int | None = None) -> QuerySet[BlueprintVersion]:
    qs = BlueprintVersion.objects.select_related("blueprint", "author", "parent").order_by("-created_at", "-id")
    if not roles.has_role(user, *_READ_ALL):
        qs = qs.filter(blueprint__owner=user)
    if blueprint_id is not None:
        qs = qs.filter(blueprint_id=blueprint_id)
    return qs


def version_get(*, user: Any, ref: str | int, blueprint_id: int | None = None) -> BlueprintVersion:
    """A version by numeric id, or by commit id (12 hex) / full sha256; ambiguous commit ids are refused."""
    qs = version_list(user=user, blueprint_id=blueprint_id)
    ref_str = str(ref).strip().lower()
    if ref_str.isdigit() and len(ref_str) < 12:
        found = list(qs.filter(pk=int(ref_str))[:1])
    elif 4 <= len(ref_str) <= 64 and all(c in "0123456789abcdef" for c in ref_str):
        lookup = Q(sha256=ref_str) if len(ref_str) == 64 else Q(sha256__startswith=ref_str)
        found = list(qs.filter(lookup)[:2])
        if len(found) > 1:
            raise ValidationFailed(
                f"commit id {ref_str!r} is ambiguous; give more digits or the blueprint",
                code="ambiguous_commit",
                details={"ref": ref_str},
            )
    else:
        raise ValidationFailed(f"{ref!r} is neither a version id nor a commit id (4-64 hex digits)", code="invalid_ref")
    if not found:
        raise NotFound(f"blueprint version {ref!r} not found", details={"ref": str(ref)})
    return found[0]
