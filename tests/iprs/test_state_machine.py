"""The whole transition table: every (from, to) pair, and every action in every state through the services."""

from __future__ import annotations

import itertools

import pytest
from django.db import transaction

from aicdn_project.errors import Conflict
from aicdn_project.models import AuditEvent
from iprs import services
from iprs.models import IPR, IPRState
from iprs.policy import ACTION_STATES, TRANSITIONS
from tests.iprs.conftest import PUBLIC_DB, WEB, set_state

S = IPRState
ALL_STATES = list(S.values)
EXPECTED_TABLE = {
    "draft": {"open", "closed"},
    "open": {"approved", "rejected", "closed"},
    "approved": {"queued", "open", "rejected", "closed"},
    "queued": {"deploying", "failed"},
    "deploying": {"deployed", "failed"},
    "deployed": {"superseded"},
    "failed": set(),
    "rejected": set(),
    "closed": set(),
    "superseded": set(),
}


def test_the_table_is_the_documented_one():
    assert {k: set(v) for k, v in TRANSITIONS.items()} == EXPECTED_TABLE
    assert set(TRANSITIONS) == set(ALL_STATES)


@pytest.mark.parametrize(("from_state", "to_state"), list(itertools.product(ALL_STATES, ALL_STATES)))
def test_every_pair(from_state, to_state, open_ipr, users):
    ipr = set_state(open_ipr(), from_state)
    events_before = AuditEvent.objects.count()
    if to_state in EXPECTED_TABLE[from_state]:
        with transaction.atomic():
            services.ipr_set_state(ipr=ipr, to_state=to_state, actor=users["admin"])
        ipr.refresh_from_db()
        assert ipr.state == to_state
        event = AuditEvent.objects.order_by("-seq").first()
        assert AuditEvent.objects.count() == events_before + 1
        assert (event.action, event.before, event.after["state"]) == (
            f"ipr.{to_state}",
            {"state": from_state},
            to_state,
        )
    else:
        with pytest.raises(Conflict) as err, transaction.atomic():
            services.ipr_set_state(ipr=ipr, to_state=to_state, actor=users["admin"])
        assert err.value.status_code == 409
        assert err.value.details["current_state"] == from_state
        assert err.value.details["allowed_next_states"] == sorted(EXPECTED_TABLE[from_state])
        assert from_state in err.value.message
        ipr.refresh_from_db()
        assert ipr.state == from_state
        assert AuditEvent.objects.count() == events_before


@pytest.mark.django_db(transaction=True)
def test_the_writer_refuses_to_run_outside_a_transaction(open_ipr, users):
    ipr = open_ipr()
    with pytest.raises(RuntimeError):
        services.ipr_set_state(ipr=ipr, to_state=S.CLOSED, actor=users["admin"])
    ipr.refresh_from_db()
    assert ipr.state == S.OPEN


def test_a_stale_in_memory_copy_cannot_move_the_row(open_ipr, users):
    ipr = open_ipr()
    stale = IPR.objects.get(pk=ipr.pk)
    set_state(ipr, S.REJECTED)
    with pytest.raises(Conflict) as err, transaction.atomic():
        services.ipr_set_state(ipr=stale, to_state=S.CLOSED, actor=users["admin"])
    assert err.value.code == "concurrent_change"
    ipr.refresh_from_db()
    assert ipr.state == S.REJECTED


# --- every user-facing action in every state ---------------------------------------------------------------------


def _run(action, ipr, users, make_version):
    """Perform `action` as a user who may, with valid input; returns the service's result."""
    u = users
    if action == "submit":
        return services.ipr_submit(actor=u["author"], ipr_id=ipr.pk)
    if action == "approve":
        return services.ipr_approve(reviewer=u["reviewer"], ipr_id=ipr.pk)
    if action == "request_changes":
        return services.ipr_request_changes(reviewer=u["reviewer"], ipr_id=ipr.pk, comment="split the tier")
    if action == "reject":
        return services.ipr_reject(reviewer=u["reviewer"], ipr_id=ipr.pk, comment="not needed")
    if action == "close":
        return services.ipr_close(actor=u["author"], ipr_id=ipr.pk)
    if action == "deploy":
        return services.ipr_deploy(actor=u["operator"], ipr_id=ipr.pk)
    if action == "replan":
        return services.ipr_replan(actor=u["author"], ipr_id=ipr.pk)
    if action == "update_version":
        return services.ipr_update_version(
            actor=u["author"], ipr_id=ipr.pk, blueprint_version=make_version({**WEB, "count": 3})
        )
    if action == "override":
        return services.ipr_override(admin=u["admin"], ipr_id=ipr.pk, justification="accepted for the demo")
    if action == "abort":
        return services.ipr_abort(admin=u["admin"], ipr_id=ipr.pk, reason="no executor in this environment")
    raise AssertionError(action)


# (action, from state) -> state afterwards, when performed by a permitted user with the policy satisfied.
EXPECTED_AFTER = {
    ("submit", "draft"): "open",
    ("approve", "open"): "approved",
    ("approve", "approved"): "approved",
    ("request_changes", "open"): "open",
    ("request_changes", "approved"): "open",
    ("reject", "open"): "rejected",
    ("reject", "approved"): "rejected",
    ("close", "draft"): "closed",
    ("close", "open"): "closed",
    ("close", "approved"): "closed",
    ("deploy", "approved"): "queued",
    ("replan", "draft"): "draft",
    ("replan", "open"): "open",
    ("replan", "approved"): "approved",
    ("update_version", "draft"): "draft",
    ("update_version", "open"): "open",
    ("update_version", "approved"): "open",
    ("override", "draft"): "draft",
    ("override", "open"): "open",
    ("override", "approved"): "approved",
    ("abort", "queued"): "failed",
    ("abort", "deploying"): "failed",
}


@pytest.mark.parametrize(("action", "state"), list(itertools.product(ACTION_STATES, ALL_STATES)))
def test_every_action_in_every_state(action, state, open_ipr, users, make_version, enqueued):
    ipr = open_ipr(WEB, PUBLIC_DB) if action == "override" else open_ipr()
    if state == S.APPROVED and action != "override":
        services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)  # a real, current approval
    ipr = set_state(ipr, state)
    expected = EXPECTED_AFTER.get((action, state))
    if expected is None:
        with pytest.raises(Conflict) as err:
            _run(action, ipr, users, make_version)
        assert err.value.code == "invalid_transition"
        assert err.value.details["current_state"] == state
        assert err.value.details["allowed_next_states"] == sorted(EXPECTED_TABLE[state])
        ipr.refresh_from_db()
        assert ipr.state == state
    else:
        _run(action, ipr, users, make_version)
        ipr.refresh_from_db()
        assert ipr.state == expected


EXECUTOR_OPS = {
    "mark_deploying": ({S.QUEUED}, S.DEPLOYING),
    "mark_deployed": ({S.DEPLOYING}, S.DEPLOYED),
    "mark_failed": ({S.QUEUED, S.DEPLOYING}, S.FAILED),
}


@pytest.mark.parametrize(("op", "state"), list(itertools.product(EXECUTOR_OPS, ALL_STATES)))
def test_executor_reports_in_every_state(op, state, open_ipr):
    ipr = set_state(open_ipr(), state)
    allowed_from, after = EXECUTOR_OPS[op]
    call = {
        "mark_deploying": lambda: services.ipr_mark_deploying(ipr_id=ipr.pk, worker="w1"),
        "mark_deployed": lambda: services.ipr_mark_deployed(ipr_id=ipr.pk, result={"ok": True}),
        "mark_failed": lambda: services.ipr_mark_failed(ipr_id=ipr.pk, reason="engine down"),
    }[op]
    if state in allowed_from:
        assert call().state == after
    else:
        with pytest.raises(Conflict) as err:
            call()
        assert err.value.details["current_state"] == state
    ipr.refresh_from_db()
    assert ipr.state == (after if state in allowed_from else state)
