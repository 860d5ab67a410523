"""IPR writes: open, review, override, re-plan, deploy, and the one function that changes an IPR's state."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from aicdn_project.audit import audit_record
from aicdn_project.errors import Conflict, NotFound, ValidationFailed
from aicdn_project.realtime import publish
from blueprints.models import BlueprintVersion
from iprs import policy as rules
from iprs.models import IPR, FindingOverride, IPRKind, IPROrigin, IPRState, Review, ReviewDecision
from iprs.services.locks import lock_is_held, lock_row_for_update
from iprs.services.snapshots import compute_snapshots

S = IPRState

# The timestamp each state stamps when entered.
_STAMPS: dict[str, str] = {
    S.OPEN: "opened_at",
    S.APPROVED: "approved_at",
    S.QUEUED: "queued_at",
    S.DEPLOYING: "deploy_started_at",
    S.DEPLOYED: "finished_at",
    S.FAILED: "finished_at",
    S.REJECTED: "finished_at",
    S.CLOSED: "finished_at",
}


def _ipr_repr(ipr: IPR) -> str:
    return f"IPR #{ipr.pk}: {ipr.title}"


def ipr_set_state(*, ipr: IPR, to_state: str, actor: Any, reason: str = "", **fields: Any) -> IPR:
    """The only writer of IPR.state. Callers hold the row lock (select_for_update) inside transaction.atomic."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ipr_set_state must run inside transaction.atomic with the IPR row locked")
    rules.check_transition(ipr, to_state)
    from_state = ipr.state
    now = timezone.now()
    changes: dict[str, Any] = {"state": to_state, "updated_at": now, **fields}
    if to_state in _STAMPS:
        changes[_STAMPS[to_state]] = now
    # Conditional update as a second guard: if the row moved since it was read, nothing is written.
    if IPR.objects.filter(pk=ipr.pk, state=from_state).update(**changes) != 1:
        raise Conflict(f"IPR #{ipr.pk} changed state concurrently; reload it", code="concurrent_change")
    for name, value in changes.items():
        setattr(ipr, name, value)
    after: dict[str, Any] = {"state": to_state}
    if reason:
        after["reason"] = reason
    audit_record(
        actor=actor,
        action=f"ipr.{to_state}",
        object_type="ipr",
        object_id=ipr.pk,
        object_repr=_ipr_repr(ipr),
        before={"state": from_state},
        after=after,
    )
    # Sent after commit to the chat page, the admin and the CLI following this IPR.
    publish(
        f"ipr-{ipr.pk}",
        {"type": "ipr.state", "ipr": ipr.pk, "from": from_state, "to": to_state, "at": now.isoformat()},
    )
    return ipr


def ipr_get_for_update(ipr_id: int) -> IPR:
    # of=("self",): PostgreSQL refuses FOR UPDATE on the nullable side of the outer joins select_related makes.
    ipr = (
        IPR.objects.select_for_update(of=("self",))
        .select_related("environment", "blueprint_version", "base_version", "author")
        .filter(pk=ipr_id)
        .first()
    )
    if ipr is None:
        raise NotFound(f"IPR {ipr_id} not found", details={"ipr_id": ipr_id})
    return ipr


def _reconcile_state(environment: Any) -> dict[str, Any]:
    """The recorded state as the latest drift report corrects it: what a reconcile IPR plans against."""
    from engines.drift import reconcile_baseline
    from engines.models import DriftStatus
    from engines.selectors import drift_report_latest

    report = drift_report_latest(environment=environment)
    if report is None or report.status == DriftStatus.ERROR:
        raise ValidationFailed(
            f"{environment.name} has no usable drift report; run a drift check first",
            code="drift_not_checked",
            details={"environment": environment.name},
        )
    return reconcile_baseline(environment=environment, report=report)


def _snapshot_fields(
    *, user: Any, version: BlueprintVersion, environment: Any, kind: str = IPRKind.NORMAL
) -> dict[str, Any]:
    from engines.models import Environment

    # Read the deployed version from the row, never from a caller's possibly stale instance.
    environment.deployed_version_id = (
        Environment.objects.filter(pk=environment.pk).values_list("deployed_version", flat=True).get()
    )
    base = BlueprintVersion.objects.filter(pk=environment.deployed_version_id).first()
    state = _reconcile_state(environment) if kind == IPRKind.RECONCILE else None
    snap = compute_snapshots(user=user, version=version, base_version=base, environment=environment, state=state)
    return {"base_version": base, "planned_at": timezone.now(), **snap}


def _snapshot_summary(ipr: IPR) -> dict[str, Any]:
    return {
        "version": ipr.blueprint_version_id,
        "base_version": ipr.base_version_id,
        "plan": (ipr.plan or {}).get("summary", ""),
        "cost_delta": (ipr.cost or {}).get("delta", {}).get("delta"),
        "max_severity": (ipr.findings or {}).get("max_severity"),
    }


def require_comment(comment: str, action: str) -> str:
    comment = (comment or "").strip()
    if not comment:
        raise ValidationFailed(f"a comment is required to {action}", code="comment_required")
    return comment


def ipr_open(
    *,
    author: Any,
    blueprint_version: BlueprintVersion,
    environment: Any,
    title: str,
    description: str = "",
    kind: str = IPRKind.NORMAL,
    origin: str = IPROrigin.API,
    conversation_id: str | int | None = None,
    ai_provenance: dict[str, Any] | None = None,
    emergency: bool = False,
    draft: bool = False,
) -> IPR:
    """Open an IPR (or a draft) changing `environment` to `blueprint_version`, with plan, cost and findings."""
    from blueprints.selectors import version_list

    title = (title or "").strip()
    if not title:
        raise ValidationFailed("an IPR needs a title", code="title_required")
    if kind not in IPRKind.values:
        raise ValidationFailed(f"unknown IPR kind {kind!r}", code="invalid_kind", details={"kinds": IPRKind.values})
    if origin not in IPROrigin.values:
        raise ValidationFailed(f"unknown origin {origin!r}", code="invalid_origin")
    policy = rules.policy_for(environment)
    rules.check_can_open(author, emergency=emergency, kind=kind, policy=policy)
    if not version_list(user=author).filter(pk=blueprint_version.pk).exists():
        raise NotFound(f"blueprint version {blueprint_version.pk} not found", details={"ref": blueprint_version.pk})
    if (
        kind == IPRKind.ROLLBACK
        and not IPR.objects.filter(
            environment=environment,
            blueprint_version=blueprint_version,
            state__in=(S.DEPLOYED, S.SUPERSEDED),
        ).exists()
    ):
        raise ValidationFailed(
            f"version {blueprint_version.commit_id} was never deployed to {environment.name}; "
            "a rollback must return to a version that was",
            code="rollback_target_unknown",
        )
    if kind == IPRKind.RECONCILE and blueprint_version.pk != environment.deployed_version_id:
        raise ValidationFailed(
            "a reconcile IPR re-applies the deployed version; give that version", code="reconcile_not_deployed"
        )
    if origin == IPROrigin.CHAT and not ai_provenance:
        raise ValidationFailed(
            "an IPR born in a chat records its AI provenance (model, intent, tool calls)", code="provenance_required"
        )
    snapshot = _snapshot_fields(user=author, version=blueprint_version, environment=environment, kind=kind)
    with transaction.atomic():
        ipr = IPR.objects.create(
            title=title[:200],
            description=description or "",
            kind=kind,
            blueprint_version=blueprint_version,
            environment=environment,
            author=author,
            origin=origin,
            conversation_id=str(conversation_id) if conversation_id is not None else None,
            ai_provenance=ai_provenance,
            emergency=emergency,
            state=S.DRAFT,
            **snapshot,
        )
        audit_record(
            actor=author,
            action="ipr.created",
            object_type="ipr",
            object_id=ipr.pk,
            object_repr=_ipr_repr(ipr),
            after={
                "environment": environment.name,
                "kind": kind,
                "origin": origin,
                "emergency": emergency,
                "conversation_id": ipr.conversation_id,
                "ai_provenance": ai_provenance,
                **_snapshot_summary(ipr),
            },
        )
        if not draft:
            ipr_set_state(ipr=ipr, to_state=S.OPEN, actor=author)
    return ipr


def ipr_open_rollback(
    *,
    author: Any,
    environment: Any,
    version: BlueprintVersion,
    emergency: bool = False,
    title: str = "",
    description: str = "",
    origin: str = IPROrigin.API,
) -> IPR:
    """Open a rollback IPR taking `environment` from its recorded state back to `version`, which must have been
    deployed there. Reviewed like any IPR; an emergency one (operators, where the policy allows it) needs one
    approval, and the flag is in its audited creation event."""
    title = (title or "").strip() or (
        f"Roll {environment.name} back to {version.blueprint.name} {version.commit_id}"
        + (" (emergency)" if emergency else "")
    )
    return ipr_open(
        author=author,
        blueprint_version=version,
        environment=environment,
        title=title,
        description=description,
        kind=IPRKind.ROLLBACK,
        origin=origin,
        emergency=emergency,
    )


def ipr_open_reconcile(*, author: Any, environment: Any, title: str = "", origin: str = IPROrigin.API) -> IPR:
    """Open a reconcile IPR from the environment's latest drift report: re-apply the deployed version, creating what
    is missing, replacing what changed and deleting labelled objects no resource accounts for."""
    from engines.drift import drift_report_link_reconcile, drift_summary
    from engines.models import DriftStatus
    from engines.selectors import drift_report_latest

    report = drift_report_latest(environment=environment)
    if report is None:
        raise ValidationFailed(
            f"{environment.name} has not been checked for drift yet", code="drift_not_checked", details={}
        )
    if report.status != DriftStatus.DRIFTED:
        raise Conflict(
            f"the latest drift check of {environment.name} found nothing to reconcile ({report.status})",
            code="no_drift",
            details={"report": report.pk, "status": report.status},
        )
    version = BlueprintVersion.objects.select_related("blueprint").filter(pk=environment.deployed_version_id).first()
    if version is None:
        raise Conflict(f"nothing is deployed to {environment.name}", code="nothing_deployed", details={})
    ipr = ipr_open(
        author=author,
        blueprint_version=version,
        environment=environment,
        title=(title or "").strip()
        or f"Reconcile {environment.name} with {version.blueprint.name} {version.commit_id}",
        description=f"Drift report {report.pk} ({report.checked_at:%Y-%m-%d %H:%M:%S} UTC): {drift_summary(report)}",
        kind=IPRKind.RECONCILE,
        origin=origin,
    )
    drift_report_link_reconcile(report=report, ipr_id=ipr.pk)
    return ipr


def ipr_submit(*, actor: Any, ipr_id: int) -> IPR:
    """draft -> open."""
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        rules.check_can(actor, ipr, "submit", rules.policy_for(ipr.environment))
        return ipr_set_state(ipr=ipr, to_state=S.OPEN, actor=actor)


def _review(*, ipr: IPR, reviewer: Any, decision: str, comment: str) -> Review:
    review = Review.objects.create(
        ipr=ipr,
        reviewer=reviewer,
        decision=decision,
        comment=comment,
        version=ipr.blueprint_version,
        base_version=ipr.base_version,
    )
    audit_record(
        actor=reviewer,
        action=f"ipr.review.{decision}",
        object_type="ipr",
        object_id=ipr.pk,
        object_repr=_ipr_repr(ipr),
        after={"review": review.pk, "decision": decision, "comment": comment, "version": ipr.blueprint_version_id},
    )
    return review


def ipr_approve(*, reviewer: Any, ipr_id: int, comment: str = "") -> IPR:
    """Record an approval; the IPR becomes approved once the environment's policy is satisfied."""
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        policy = rules.policy_for(ipr.environment)
        rules.check_can(reviewer, ipr, "approve", policy)
        _review(ipr=ipr, reviewer=reviewer, decision=ReviewDecision.APPROVE, comment=(comment or "").strip())
        status = rules.approval_status(ipr, policy)
        if ipr.state == S.OPEN and status.satisfied:
            ipr_set_state(
                ipr=ipr,
                to_state=S.APPROVED,
                actor=reviewer,
                reason=f"{len(status.approvals)} of {status.required} approvals",
            )
        return ipr


def ipr_request_changes(*, reviewer: Any, ipr_id: int, comment: str) -> IPR:
    """Record a request for changes; an approved IPR goes back to open until that reviewer approves."""
    comment = require_comment(comment, "request changes")
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        rules.check_can(reviewer, ipr, "request_changes", rules.policy_for(ipr.environment))
        _review(ipr=ipr, reviewer=reviewer, decision=ReviewDecision.REQUEST_CHANGES, comment=comment)
        if ipr.state == S.APPROVED:
            ipr_set_state(ipr=ipr, to_state=S.OPEN, actor=reviewer, reason="changes requested")
        return ipr


def ipr_reject(*, reviewer: Any, ipr_id: int, comment: str) -> IPR:
    comment = require_comment(comment, "reject")
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        rules.check_can(reviewer, ipr, "reject", rules.policy_for(ipr.environment))
        _review(ipr=ipr, reviewer=reviewer, decision=ReviewDecision.REJECT, comment=comment)
        return ipr_set_state(ipr=ipr, to_state=S.REJECTED, actor=reviewer, reason=comment)


def ipr_close(*, actor: Any, ipr_id: int, comment: str = "") -> IPR:
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        rules.check_can(actor, ipr, "close", rules.policy_for(ipr.environment))
        return ipr_set_state(ipr=ipr, to_state=S.CLOSED, actor=actor, reason=(comment or "").strip())


def ipr_override(*, admin: Any, ipr_id: int, justification: str) -> FindingOverride:
    """An admin lets this version's blocking findings through, with a justification; audited."""
    justification = require_comment(justification, "override blocking findings (justification)")
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        policy = rules.policy_for(ipr.environment)
        rules.check_can(admin, ipr, "override", policy)
        blocking = rules.approval_status(ipr, policy).blocking_findings
        override = FindingOverride.objects.create(
            ipr=ipr,
            admin=admin,
            justification=justification,
            version=ipr.blueprint_version,
            base_version=ipr.base_version,
            findings=blocking,
        )
        audit_record(
            actor=admin,
            action="ipr.override",
            object_type="ipr",
            object_id=ipr.pk,
            object_repr=_ipr_repr(ipr),
            after={
                "override": override.pk,
                "justification": justification,
                "version": ipr.blueprint_version_id,
                "findings": [f.get("rule_id") for f in blocking],
                "blocking_severity": policy.blocking_severity,
            },
        )
    return override


def _resnapshot(*, ipr: IPR, actor: Any, version: BlueprintVersion, action: str) -> IPR:
    before = _snapshot_summary(ipr)
    snapshot = _snapshot_fields(user=actor, version=version, environment=ipr.environment, kind=ipr.kind)
    IPR.objects.filter(pk=ipr.pk).update(blueprint_version=version, updated_at=timezone.now(), **snapshot)
    ipr.blueprint_version = version
    for name, value in snapshot.items():
        setattr(ipr, name, value)
    audit_record(
        actor=actor,
        action=action,
        object_type="ipr",
        object_id=ipr.pk,
        object_repr=_ipr_repr(ipr),
        before=before,
        after=_snapshot_summary(ipr),
    )
    # Reviews were given on the old (version, base): they are now stale, so an approved IPR is open again.
    if ipr.state == S.APPROVED and (
        before["version"] != ipr.blueprint_version_id or before["base_version"] != ipr.base_version_id
    ):
        ipr_set_state(ipr=ipr, to_state=S.OPEN, actor=actor, reason="approvals went stale")
    return ipr


def ipr_update_version(*, actor: Any, ipr_id: int, blueprint_version: BlueprintVersion) -> IPR:
    """Point the IPR at another version of the same blueprint; re-plans and makes earlier reviews stale."""
    from blueprints.selectors import version_list

    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        rules.check_can(actor, ipr, "update_version", rules.policy_for(ipr.environment))
        if blueprint_version.blueprint_id != ipr.blueprint_version.blueprint_id:
            raise ValidationFailed(
                "the new version must belong to the same blueprint", code="other_blueprint", details={}
            )
        if not version_list(user=actor).filter(pk=blueprint_version.pk).exists():
            raise NotFound(f"blueprint version {blueprint_version.pk} not found")
        if blueprint_version.pk == ipr.blueprint_version_id:
            raise Conflict(f"IPR #{ipr.pk} already targets that version", code="same_version")
        return _resnapshot(ipr=ipr, actor=actor, version=blueprint_version, action="ipr.version_updated")


def ipr_replan(*, actor: Any, ipr_id: int) -> IPR:
    """Recompute plan, cost and findings against what is deployed now; the base moves to the deployed version."""
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        rules.check_can(actor, ipr, "replan", rules.policy_for(ipr.environment))
        return _resnapshot(ipr=ipr, actor=actor, version=ipr.blueprint_version, action="ipr.replanned")


def ipr_deploy(*, actor: Any, ipr_id: int) -> IPR:
    """approved -> queued, then (after commit) hand it to the deploy task. One IPR per environment at a time."""
    with transaction.atomic():
        ipr = ipr_get_for_update(ipr_id)
        policy = rules.policy_for(ipr.environment)
        rules.check_can(actor, ipr, "deploy", policy)
        # The environment's lock row serialises deploy requests for different IPRs of one environment.
        lock = lock_row_for_update(ipr.environment)
        active = IPR.objects.filter(environment_id=ipr.environment_id, state__in=rules.ACTIVE_DEPLOY_STATES)
        for other_pk, other_state in active.exclude(pk=ipr.pk).values_list("pk", "state"):
            # A deploying IPR whose lease ran out (or was released by an admin) is presumed dead: not busy.
            if other_state == S.QUEUED or (lock.holder_ipr_id == other_pk and lock_is_held(lock)):
                raise Conflict(
                    f"IPR #{other_pk} is already {other_state} for {ipr.environment.name}; wait for it to finish",
                    code="environment_busy",
                    details={"ipr": other_pk, "state": other_state},
                )
        ipr_set_state(ipr=ipr, to_state=S.QUEUED, actor=actor, queued_by=actor)
        ipr_pk = ipr.pk

        def enqueue() -> None:
            from iprs.tasks import deploy_ipr

            deploy_ipr.delay(ipr_pk)

        transaction.on_commit(enqueue)
        return ipr
