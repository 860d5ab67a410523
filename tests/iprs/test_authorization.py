"""Role x action: who may do what to an IPR, every deny case included (self-approval, stale approvals)."""

from __future__ import annotations

import itertools

import pytest

from aicdn_project import roles
from aicdn_project.errors import Conflict, PermissionDenied
from iprs import services
from iprs.models import IPR, IPRState, Review
from tests.iprs.conftest import PUBLIC_DB, WEB, UserFactory, set_state

S = IPRState
ROLES = ("author", "requester", "reviewer", "operator", "admin", "nobody")
# action -> the state it is tried in, and the roles that may perform it.
MATRIX = {
    "submit": (S.DRAFT, {"author", "admin"}),
    "approve": (S.OPEN, {"reviewer", "admin"}),
    "request_changes": (S.OPEN, {"reviewer", "admin"}),
    "reject": (S.OPEN, {"reviewer", "admin"}),
    "close": (S.OPEN, {"author", "admin"}),
    "deploy": (S.APPROVED, {"operator", "admin"}),
    "replan": (S.OPEN, {"author", "operator", "admin"}),
    "update_version": (S.OPEN, {"author", "admin"}),
    "override": (S.OPEN, {"admin"}),
    "abort": (S.QUEUED, {"admin"}),
}


def _call(action, user, ipr, make_version):
    if action == "submit":
        return services.ipr_submit(actor=user, ipr_id=ipr.pk)
    if action == "approve":
        return services.ipr_approve(reviewer=user, ipr_id=ipr.pk)
    if action == "request_changes":
        return services.ipr_request_changes(reviewer=user, ipr_id=ipr.pk, comment="please shrink")
    if action == "reject":
        return services.ipr_reject(reviewer=user, ipr_id=ipr.pk, comment="no")
    if action == "close":
        return services.ipr_close(actor=user, ipr_id=ipr.pk)
    if action == "deploy":
        return services.ipr_deploy(actor=user, ipr_id=ipr.pk)
    if action == "replan":
        return services.ipr_replan(actor=user, ipr_id=ipr.pk)
    if action == "update_version":
        return services.ipr_update_version(
            actor=user, ipr_id=ipr.pk, blueprint_version=make_version({**WEB, "count": 4})
        )
    if action == "override":
        return services.ipr_override(admin=user, ipr_id=ipr.pk, justification="port is firewalled upstream")
    if action == "abort":
        return services.ipr_abort(admin=user, ipr_id=ipr.pk, reason="worker host lost")
    raise AssertionError(action)


@pytest.mark.parametrize(("action", "role"), list(itertools.product(MATRIX, ROLES)))
def test_role_action_matrix(action, role, users, open_ipr, make_version, enqueued):
    state, allowed = MATRIX[action]
    ipr = open_ipr(WEB, PUBLIC_DB) if action == "override" else open_ipr()
    if state == S.APPROVED:
        services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)
    ipr = set_state(ipr, state)
    reviews_before = Review.objects.filter(ipr=ipr).count()
    if role in allowed:
        _call(action, users[role], ipr, make_version)
    else:
        with pytest.raises(PermissionDenied) as err:
            _call(action, users[role], ipr, make_version)
        assert err.value.status_code == 403
        ipr.refresh_from_db()
        assert ipr.state == state
        assert Review.objects.filter(ipr=ipr).count() == reviews_before
        assert enqueued == []


@pytest.mark.parametrize("decision", ["approve", "request_changes", "reject"])
def test_the_author_never_reviews_their_own_ipr_even_as_a_reviewer(decision, users, open_ipr):
    both = UserFactory(username="rebecca", roles=[roles.REQUESTERS, roles.REVIEWERS])
    ipr = open_ipr(author=both)
    call = {
        "approve": lambda: services.ipr_approve(reviewer=both, ipr_id=ipr.pk),
        "request_changes": lambda: services.ipr_request_changes(reviewer=both, ipr_id=ipr.pk, comment="x"),
        "reject": lambda: services.ipr_reject(reviewer=both, ipr_id=ipr.pk, comment="x"),
    }[decision]
    with pytest.raises(PermissionDenied) as err:
        call()
    assert err.value.code == "self_review"
    assert not Review.objects.filter(ipr=ipr).exists()


def test_an_admin_author_cannot_approve_their_own_ipr(users, open_ipr):
    ipr = open_ipr(author=users["admin"])
    with pytest.raises(PermissionDenied) as err:
        services.ipr_approve(reviewer=users["admin"], ipr_id=ipr.pk)
    assert err.value.code == "self_review"
    ipr.refresh_from_db()
    assert ipr.state == S.OPEN


def test_a_reviewer_outside_the_environments_reviewer_group_is_refused(users, env, open_ipr):
    services.approval_policy_set(actor=users["admin"], environment=env, reviewer_group="operators")
    ipr = open_ipr()
    with pytest.raises(PermissionDenied) as err:
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert err.value.code == "not_reviewer"
    services.ipr_approve(reviewer=users["operator"], ipr_id=ipr.pk)
    ipr.refresh_from_db()
    assert ipr.state == S.APPROVED


def test_a_stale_approval_does_not_count_and_deploy_is_refused(users, open_ipr, make_version, enqueued):
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    ipr.refresh_from_db()
    assert ipr.state == S.APPROVED
    services.ipr_update_version(
        actor=users["author"], ipr_id=ipr.pk, blueprint_version=make_version({**WEB, "count": 3})
    )
    ipr.refresh_from_db()
    assert ipr.state == S.OPEN  # the approval went stale with the version
    assert Review.objects.get(ipr=ipr).is_stale
    with pytest.raises(Conflict) as err:
        services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
    assert err.value.code == "invalid_transition"
    assert enqueued == []
    # The same reviewer approving again (the new version) counts.
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    ipr.refresh_from_db()
    assert ipr.state == S.APPROVED


def test_approving_the_same_version_twice_is_refused(users, open_ipr, env):
    services.approval_policy_set(actor=users["admin"], environment=env, required_approvals=2)
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    with pytest.raises(Conflict) as err:
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert err.value.code == "already_approved"
    ipr.refresh_from_db()
    assert ipr.state == S.OPEN  # one reviewer cannot make up the two approvals alone


def test_a_policy_tightened_after_approval_blocks_deploy(users, open_ipr, env, enqueued):
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    services.approval_policy_set(actor=users["admin"], environment=env, required_approvals=2)
    with pytest.raises(Conflict) as err:
        services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
    assert err.value.code == "policy_not_satisfied"
    assert IPR.objects.get(pk=ipr.pk).state == S.APPROVED
    assert enqueued == []


@pytest.mark.parametrize("role", ["author", "reviewer", "operator", "requester", "nobody"])
def test_only_admins_change_policies_and_release_locks(role, users, env):
    with pytest.raises(PermissionDenied):
        services.approval_policy_set(actor=users[role], environment=env, required_approvals=3)
    with pytest.raises(PermissionDenied):
        services.environment_lock_release(environment=env, actor=users[role])
    with pytest.raises(PermissionDenied):
        services.environment_create(actor=users[role], name="prod")


@pytest.mark.parametrize("role", ["reviewer", "nobody"])
def test_reviewers_and_role_less_users_cannot_open_iprs(role, users, make_version, env):
    with pytest.raises(PermissionDenied):
        services.ipr_open(author=users[role], blueprint_version=make_version(WEB), environment=env, title="x")


def test_a_requester_cannot_open_an_ipr_from_someone_elses_version(users, make_version, env):
    from aicdn_project.errors import NotFound

    version = make_version(WEB)  # owned by the author
    with pytest.raises(NotFound):
        services.ipr_open(author=users["requester"], blueprint_version=version, environment=env, title="x")


def test_emergency_rollbacks_need_an_operator_and_a_policy_that_allows_them(users, env, open_ipr, enqueued):
    from aicdn_project.errors import ValidationFailed

    first = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=first.pk)
    services.ipr_deploy(actor=users["operator"], ipr_id=first.pk)
    services.ipr_mark_deploying(ipr_id=first.pk)
    services.ipr_mark_deployed(ipr_id=first.pk)
    second = open_ipr({**WEB, "count": 3})
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=second.pk)
    services.ipr_deploy(actor=users["operator"], ipr_id=second.pk)
    services.ipr_mark_deploying(ipr_id=second.pk)
    services.ipr_mark_deployed(ipr_id=second.pk)
    target = first.blueprint_version

    def rollback(user, emergency=True):
        return services.ipr_open(
            author=user, blueprint_version=target, environment=env, title="back", kind="rollback", emergency=emergency
        )

    with pytest.raises(PermissionDenied) as err:
        rollback(users["operator"])
    assert err.value.code == "emergency_not_allowed"
    services.approval_policy_set(
        actor=users["admin"], environment=env, emergency_rollback_allowed=True, required_approvals=3
    )
    with pytest.raises(PermissionDenied) as err:
        rollback(users["author"])
    assert err.value.code == "not_operator"
    with pytest.raises(ValidationFailed):
        services.ipr_open(
            author=users["operator"], blueprint_version=target, environment=env, title="x", emergency=True
        )
    ipr = rollback(users["operator"])
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)  # one approval suffices for an emergency
    ipr.refresh_from_db()
    assert ipr.state == S.APPROVED
    normal = rollback(users["operator"], emergency=False)
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=normal.pk)
    normal.refresh_from_db()
    assert normal.state == S.OPEN  # a non-emergency rollback needs the usual three
