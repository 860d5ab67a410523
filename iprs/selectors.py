"""IPR, audit and environment reads, scoped to what a user may see, and the review console's context."""

from __future__ import annotations

import base64
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from aicdn_project import roles
from aicdn_project.errors import NotFound
from aicdn_project.models import AuditEvent
from iprs import policy as rules
from iprs.models import IPR, ApprovalPolicy, EnvironmentLock, IPRState, Review
from iprs.services.locks import lock_is_held
from iprs.summary import plain_summary

# Reviewers, operators and admins see every IPR (they review and deploy what others propose); requesters their own.
_READ_ALL = (roles.REVIEWERS, roles.OPERATORS, roles.ADMINS)
_SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")


def ipr_base_queryset() -> QuerySet[IPR]:
    return IPR.objects.select_related(
        "environment", "blueprint_version__blueprint", "base_version", "author", "queued_by"
    )


def ipr_visible(*, user: Any) -> QuerySet[IPR]:
    qs = ipr_base_queryset()
    return qs if roles.has_role(user, *_READ_ALL) else qs.filter(author=user)


def ipr_awaiting_review(*, user: Any) -> QuerySet[IPR]:
    """Open IPRs this user may review and has not yet reviewed as they stand (version and base)."""
    qs = ipr_visible(user=user).filter(state=IPRState.OPEN).exclude(author=user)
    if not roles.is_admin(user):
        groups = roles.roles_of(user)
        with_policy = ApprovalPolicy.objects.filter(reviewer_group__in=groups).values("environment_id")
        environments = Q(environment_id__in=with_policy)
        if "reviewers" in groups:  # an environment without a policy row uses the default reviewer group
            environments |= ~Q(environment_id__in=ApprovalPolicy.objects.values("environment_id"))
        qs = qs.filter(environments)
    reviewed = Review.objects.filter(
        ipr=OuterRef("pk"),
        reviewer=user,
        version=OuterRef("blueprint_version"),
        base_version=OuterRef("base_version"),
    )
    # base_version may be NULL (nothing deployed yet): a NULL-safe comparison for that case.
    reviewed_on_empty = Review.objects.filter(
        ipr=OuterRef("pk"), reviewer=user, version=OuterRef("blueprint_version"), base_version__isnull=True
    )
    return qs.exclude(Exists(reviewed)).exclude(Q(base_version__isnull=True) & Exists(reviewed_on_empty))


def ipr_list(
    *,
    user: Any,
    state: str | None = None,
    environment: str | None = None,
    author: str | None = None,
    kind: str | None = None,
    awaiting_review: bool = False,
    search: str | None = None,
) -> QuerySet[IPR]:
    qs = ipr_awaiting_review(user=user) if awaiting_review else ipr_visible(user=user)
    if state:
        qs = qs.filter(state__in=[s for s in state.split(",") if s])
    if environment:
        qs = qs.filter(environment__name=environment)
    if author:
        qs = qs.filter(author__username=author)
    if kind:
        qs = qs.filter(kind=kind)
    if search:
        qs = qs.filter(
            Q(title__icontains=search)
            | Q(description__icontains=search)
            | Q(blueprint_version__commit_id__startswith=search.lower())
        )
    return qs.order_by("-created_at", "-id")


def ipr_get(*, user: Any, ipr_id: int) -> IPR:
    ipr = ipr_visible(user=user).prefetch_related("reviews__reviewer", "overrides__admin").filter(pk=ipr_id).first()
    if ipr is None:
        raise NotFound(f"IPR {ipr_id} not found", details={"ipr_id": ipr_id})
    return ipr


def ipr_audit_trail(*, ipr: IPR) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(object_type="ipr", object_id=str(ipr.pk)).order_by("seq")


def ipr_diff(*, ipr: IPR) -> dict[str, Any]:
    """What the IPR changes relative to the deployed version it was planned against (empty if nothing was)."""
    from blueprints import diff

    old = ipr.base_version.document if ipr.base_version is not None else {"resources": []}
    base_label = f"deployed@{ipr.base_version.commit_id}" if ipr.base_version is not None else "(nothing deployed)"
    return {
        "structured": diff.structured_diff(old, ipr.blueprint_version.document),
        "unified": diff.unified_yaml_diff(
            old,
            ipr.blueprint_version.document,
            old_label=base_label,
            new_label=f"{ipr.blueprint_version.blueprint.name}@{ipr.blueprint_version.commit_id}",
        ),
    }


def findings_by_severity(ipr: IPR) -> list[tuple[str, list[dict[str, Any]]]]:
    findings = (ipr.findings or {}).get("findings", [])
    groups = [(sev, [f for f in findings if f.get("severity") == sev]) for sev in _SEVERITY_ORDER]
    other = [f for f in findings if f.get("severity") not in _SEVERITY_ORDER]
    return [(sev, items) for sev, items in groups if items] + ([("other", other)] if other else [])


def topology_data_uri(ipr: IPR) -> str:
    """The topology SVG as a data: URI, shown through <img> so nothing inside it can run in the console."""
    from blueprints.analysis import render_svg

    svg = render_svg(ipr.blueprint_version.document)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def ipr_console(*, user: Any, ipr: IPR) -> dict[str, Any]:
    """Everything the review page shows, computed once."""
    policy = rules.policy_for(ipr.environment)
    status = rules.approval_status(ipr, policy)
    diff = ipr_diff(ipr=ipr)
    findings = (ipr.findings or {}).get("findings", [])
    reviews = list(ipr.reviews.select_related("reviewer", "version").order_by("created_at", "id"))
    for review in reviews:
        review.stale = not rules.is_current(ipr, review)
    return {
        "policy": policy,
        "status": status,
        "allowed": rules.allowed_actions(user, ipr, policy),
        "diff": diff,
        "summary": plain_summary(diff["structured"], (ipr.cost or {}).get("delta", {}), findings),
        "findings_by_severity": findings_by_severity(ipr),
        "topology": topology_data_uri(ipr),
        "reviews": reviews,
        "overrides": list(ipr.overrides.select_related("admin")),
        "timeline": list(ipr_audit_trail(ipr=ipr)),
        "lock": environment_lock_get(environment=ipr.environment),
    }


def environment_lock_get(*, environment: Any) -> EnvironmentLock | None:
    """The environment's lock if someone holds it now (an expired lease counts as free)."""
    lock = EnvironmentLock.objects.select_related("holder_ipr", "holder_user").filter(environment=environment).first()
    return lock if lock is not None and lock_is_held(lock) else None


def audit_list(
    *,
    user: Any,
    object_type: str | None = None,
    object_id: str | None = None,
    action: str | None = None,
    actor: str | None = None,
) -> QuerySet[AuditEvent]:
    """Reviewers, operators and admins read the whole trail; everyone else the events they caused."""
    qs = AuditEvent.objects.all()
    if not roles.has_role(user, *_READ_ALL):
        qs = qs.filter(actor=user)
    if object_type:
        qs = qs.filter(object_type=object_type)
    if object_id:
        qs = qs.filter(object_id=str(object_id))
    if action:
        qs = qs.filter(action__startswith=action) if action.endswith(".") else qs.filter(action=action)
    if actor:
        qs = qs.filter(actor_name=actor)
    return qs.order_by("-seq")


def environment_plan(*, user: Any, environment: Any, version: Any) -> dict[str, Any]:
    """What opening an IPR for `version` on `environment` would show: the plan against the recorded deployed state,
    the cost and its delta against the deployed version, and the findings; nothing is written."""
    from iprs.services.snapshots import compute_snapshots

    base = environment.deployed_version
    snapshots = compute_snapshots(user=user, version=version, base_version=base, environment=environment)
    return {
        "environment": environment.name,
        "version": {"id": version.pk, "commit_id": version.commit_id},
        "base_version": {"id": base.pk, "commit_id": base.commit_id} if base is not None else None,
        **snapshots,
    }
