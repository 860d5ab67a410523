"""The IPR rules as pure checks: the transition table, who may do what, and how the approval policy is evaluated.

Services call these under the row lock before they write; selectors call the same functions to decide which
buttons to show, so the console and the API can never disagree about what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from aicdn_project import roles
from aicdn_project.errors import Conflict, PermissionDenied, ValidationFailed
from iprs.models import IPR, ApprovalPolicy, FindingOverride, IPRKind, IPRState, Review, ReviewDecision

S = IPRState

# The whole state machine: from-state -> the states it may move to. Nothing else may change an IPR's state.
# approved -> open happens when approvals go stale (new version, re-plan onto a moved base, changes requested).
TRANSITIONS: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.OPEN, S.CLOSED}),
    S.OPEN: frozenset({S.APPROVED, S.REJECTED, S.CLOSED}),
    S.APPROVED: frozenset({S.QUEUED, S.OPEN, S.REJECTED, S.CLOSED}),
    S.QUEUED: frozenset({S.DEPLOYING, S.FAILED}),
    S.DEPLOYING: frozenset({S.DEPLOYED, S.FAILED}),
    S.DEPLOYED: frozenset({S.SUPERSEDED}),
    S.FAILED: frozenset(),
    S.REJECTED: frozenset(),
    S.CLOSED: frozenset(),
    S.SUPERSEDED: frozenset(),
}

# The states in which each user-facing action may be attempted at all.
ACTION_STATES: dict[str, frozenset[str]] = {
    "submit": frozenset({S.DRAFT}),
    "approve": frozenset({S.OPEN, S.APPROVED}),
    "request_changes": frozenset({S.OPEN, S.APPROVED}),
    "reject": frozenset({S.OPEN, S.APPROVED}),
    "close": frozenset({S.DRAFT, S.OPEN, S.APPROVED}),
    "deploy": frozenset({S.APPROVED}),
    "replan": frozenset({S.DRAFT, S.OPEN, S.APPROVED}),
    "update_version": frozenset({S.DRAFT, S.OPEN, S.APPROVED}),
    "override": frozenset({S.DRAFT, S.OPEN, S.APPROVED}),
    "abort": frozenset({S.QUEUED, S.DEPLOYING}),
}
ACTIONS = tuple(ACTION_STATES)
ACTIVE_DEPLOY_STATES = (S.QUEUED, S.DEPLOYING)


def _allowed_next(state: str) -> list[str]:
    return sorted(TRANSITIONS.get(state, frozenset()))


def check_transition(ipr: IPR, to_state: str) -> None:
    """Raise Conflict (409) naming the current state and the allowed next ones if the move is not in the table."""
    if to_state not in TRANSITIONS.get(ipr.state, frozenset()):
        allowed = _allowed_next(ipr.state)
        raise Conflict(
            f"IPR #{ipr.pk} is {ipr.state}; it cannot become {to_state}. "
            f"Allowed next states: {', '.join(allowed) if allowed else 'none (final state)'}.",
            code="invalid_transition",
            details={"current_state": ipr.state, "requested_state": to_state, "allowed_next_states": allowed},
        )


def check_action_state(ipr: IPR, action: str) -> None:
    if ipr.state not in ACTION_STATES[action]:
        allowed = _allowed_next(ipr.state)
        raise Conflict(
            f"cannot {action.replace('_', ' ')} IPR #{ipr.pk}: it is {ipr.state} "
            f"(needs {' or '.join(sorted(ACTION_STATES[action]))}). "
            f"Allowed next states: {', '.join(allowed) if allowed else 'none (final state)'}.",
            code="invalid_transition",
            details={
                "current_state": ipr.state,
                "action": action,
                "action_allowed_in": sorted(ACTION_STATES[action]),
                "allowed_next_states": allowed,
            },
        )


def policy_for(environment: Any) -> ApprovalPolicy:
    """The environment's policy row, or an unsaved one holding the defaults."""
    policy = ApprovalPolicy.objects.filter(environment_id=environment.pk).first()
    return policy if policy is not None else ApprovalPolicy(environment=environment)


def _analysis() -> Any:
    # blueprints.analysis is imported where used: policy checks must not pull the analysis stack in at start-up.
    from blueprints import analysis

    return analysis


def severity_blocks(severity: str, threshold: str) -> bool:
    return bool(_analysis().severity_at_least(severity, threshold))


def severities() -> tuple[str, ...]:
    return tuple(_analysis().SEVERITIES)


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def cost_increase(ipr: IPR) -> Decimal:
    return _money((ipr.cost or {}).get("delta", {}).get("delta"))


@dataclass
class ApprovalStatus:
    """Where an IPR stands against its environment's policy."""

    required: int
    approvals: list[Review] = field(default_factory=list)
    changes_requested: list[Review] = field(default_factory=list)
    stale: list[Review] = field(default_factory=list)
    blocking_findings: list[dict[str, Any]] = field(default_factory=list)
    override: FindingOverride | None = None
    diverged: bool = False
    cost_increase: Decimal = Decimal(0)
    extra_approval_for_cost: bool = False

    @property
    def blocked_by_findings(self) -> bool:
        return bool(self.blocking_findings) and self.override is None

    @property
    def satisfied(self) -> bool:
        return (
            len(self.approvals) >= self.required
            and not self.changes_requested
            and not self.blocked_by_findings
            and not self.diverged
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "approvals": [r.reviewer.get_username() for r in self.approvals],
            "changes_requested_by": [r.reviewer.get_username() for r in self.changes_requested],
            "stale_reviews": len(self.stale),
            "blocking_findings": len(self.blocking_findings),
            "overridden": self.override is not None,
            "diverged": self.diverged,
            "cost_increase": str(self.cost_increase),
            "extra_approval_for_cost": self.extra_approval_for_cost,
            "satisfied": self.satisfied,
        }


def is_current(ipr: IPR, obj: Review | FindingOverride) -> bool:
    """A review or override counts only for the version and base it was given on."""
    return obj.version_id == ipr.blueprint_version_id and obj.base_version_id == ipr.base_version_id


def approval_status(ipr: IPR, policy: ApprovalPolicy) -> ApprovalStatus:
    required = policy.required_approvals
    increase = cost_increase(ipr)
    extra = policy.cost_increase_threshold is not None and increase > policy.cost_increase_threshold
    emergency = ipr.kind == IPRKind.ROLLBACK and ipr.emergency and policy.emergency_rollback_allowed
    if emergency:
        required = 1  # an allowed emergency rollback needs one reviewer, whatever the cost or the usual count
    elif extra:
        required += 1
    status = ApprovalStatus(required=required, cost_increase=increase, extra_approval_for_cost=extra and not emergency)
    latest: dict[int, Review] = {}
    for review in ipr.reviews.select_related("reviewer").order_by("created_at", "id"):
        if is_current(ipr, review):
            latest[review.reviewer_id] = review
        else:
            status.stale.append(review)
    for review in latest.values():
        if review.reviewer_id == ipr.author_id:
            continue  # never counted, even if an older rule or a direct DB write let one in
        if review.decision == ReviewDecision.APPROVE:
            status.approvals.append(review)
        elif review.decision == ReviewDecision.REQUEST_CHANGES:
            status.changes_requested.append(review)
    threshold = policy.blocking_severity
    status.blocking_findings = [
        f for f in (ipr.findings or {}).get("findings", []) if severity_blocks(f.get("severity", ""), threshold)
    ]
    if status.blocking_findings:
        status.override = next((o for o in ipr.overrides.order_by("-id") if is_current(ipr, o)), None)
    status.diverged = ipr.base_version_id != ipr.environment.deployed_version_id
    return status


# --- who may do what ----------------------------------------------------------------------------------------------


def check_can_open(user: Any, *, emergency: bool, kind: str, policy: ApprovalPolicy) -> None:
    if not roles.has_role(user, roles.REQUESTERS, roles.OPERATORS):
        raise PermissionDenied("only requesters, operators and admins may open IPRs", code="not_requester")
    if emergency:
        if kind != IPRKind.ROLLBACK:
            raise ValidationFailed("only rollbacks can be emergencies", code="emergency_not_rollback")
        if not roles.has_role(user, roles.OPERATORS):
            raise PermissionDenied("only operators and admins may open an emergency rollback", code="not_operator")
        if not policy.emergency_rollback_allowed:
            raise PermissionDenied(
                "this environment's policy does not allow emergency rollbacks", code="emergency_not_allowed"
            )


def _check_author_or_admin(user: Any, ipr: IPR, action: str) -> None:
    if ipr.author_id != user.pk and not roles.is_admin(user):
        raise PermissionDenied(f"only the author or an admin may {action} IPR #{ipr.pk}", code="not_author")


def _check_reviewer(user: Any, ipr: IPR, policy: ApprovalPolicy, action: str) -> None:
    if not roles.has_role(user, policy.reviewer_group):
        raise PermissionDenied(
            f"only members of {policy.reviewer_group!r} may {action.replace('_', ' ')} IPRs for {ipr.environment.name}",
            code="not_reviewer",
            details={"reviewer_group": policy.reviewer_group},
        )
    if ipr.author_id == user.pk:
        raise PermissionDenied("the author never reviews their own IPR", code="self_review")


def check_can(user: Any, ipr: IPR, action: str, policy: ApprovalPolicy, status: ApprovalStatus | None = None) -> None:
    """Raise the error the service would raise for this user and action, state first, then role, then policy."""
    check_action_state(ipr, action)
    if action in ("submit", "update_version"):
        _check_author_or_admin(user, ipr, action.replace("_", " "))
    elif action == "close":
        _check_author_or_admin(user, ipr, "close")
    elif action in ("approve", "request_changes", "reject"):
        _check_reviewer(user, ipr, policy, action)
        if action == "approve":
            status = status or approval_status(ipr, policy)
            if status.diverged:
                raise Conflict(
                    f"IPR #{ipr.pk} was planned against a version that is no longer deployed; re-plan it first",
                    code="diverged",
                    details={"base_version": ipr.base_version_id, "deployed_version": _deployed_id(ipr)},
                )
            if status.blocked_by_findings:
                raise Conflict(
                    f"{len(status.blocking_findings)} finding(s) at or above {policy.blocking_severity!r} block "
                    "approval; an admin must record an override with a justification",
                    code="blocking_findings",
                    details={"findings": [f.get("rule_id") for f in status.blocking_findings]},
                )
            if any(r.reviewer_id == user.pk for r in status.approvals):
                raise Conflict("you already approved this version of the IPR", code="already_approved")
    elif action == "deploy":
        if not roles.has_role(user, roles.OPERATORS):
            raise PermissionDenied("only operators and admins may deploy", code="not_operator")
        status = status or approval_status(ipr, policy)
        if status.diverged:
            raise Conflict(
                f"IPR #{ipr.pk} was planned against a version that is no longer deployed; re-plan it first",
                code="diverged",
                details={"base_version": ipr.base_version_id, "deployed_version": _deployed_id(ipr)},
            )
        if not status.satisfied:
            raise Conflict(
                f"IPR #{ipr.pk} no longer satisfies its approval policy: {len(status.approvals)} of "
                f"{status.required} approvals",
                code="policy_not_satisfied",
                details=status.as_dict(),
            )
    elif action == "replan":
        if ipr.author_id != user.pk and not roles.has_role(user, roles.OPERATORS):
            raise PermissionDenied("only the author, operators and admins may re-plan", code="not_author")
    elif action == "abort" and not roles.is_admin(user):
        raise PermissionDenied("only admins may abort a queued or running deployment", code="not_admin")
    elif action == "override":
        if not roles.is_admin(user):
            raise PermissionDenied("only admins may override blocking findings", code="not_admin")
        status = status or approval_status(ipr, policy)
        if not status.blocking_findings:
            raise Conflict(f"IPR #{ipr.pk} has no blocking findings to override", code="nothing_to_override")
        if status.override is not None:
            raise Conflict(f"IPR #{ipr.pk} already has an override for this version", code="already_overridden")


def _deployed_id(ipr: IPR) -> int | None:
    return ipr.environment.deployed_version_id


def allowed_actions(user: Any, ipr: IPR, policy: ApprovalPolicy) -> dict[str, str | None]:
    """action -> None when allowed, else the refusal message the service would give."""
    status = approval_status(ipr, policy) if ipr.state in (S.DRAFT, S.OPEN, S.APPROVED) else None
    result: dict[str, str | None] = {}
    for action in ACTIONS:
        try:
            check_can(user, ipr, action, policy, status)
        except (Conflict, PermissionDenied, ValidationFailed) as exc:
            result[action] = exc.message
        else:
            result[action] = None
    return result
