"""The approval policy under the lock: counts, blocking findings and overrides, cost, divergence, provenance."""

from __future__ import annotations

from decimal import Decimal

import pytest

from aicdn_project.errors import Conflict, PermissionDenied, ValidationFailed
from aicdn_project.models import AuditEvent
from iprs import services
from iprs.models import IPR, FindingOverride, IPRState
from tests.iprs.conftest import BIG_WEB, PUBLIC_DB, WEB

S = IPRState


def _deploy(ipr, users):
    services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="test")
    return services.ipr_mark_deployed(ipr_id=ipr.pk, result={"resources": 1})


def test_open_snapshots_plan_cost_and_findings(open_ipr, env):
    ipr = open_ipr(WEB, PUBLIC_DB)
    assert ipr.state == S.OPEN
    assert ipr.base_version is None
    assert ipr.plan["summary"] == "2 to add, 0 to change, 0 to destroy"
    assert [a["action"] for a in ipr.plan["actions"]] == ["create", "create"]
    assert ipr.cost["estimate"]["monthly_total"] == ipr.cost["delta"]["new_total"] > 0
    assert ipr.cost["delta"]["old_total"] == 0
    assert "AICDN-SEC-006" in {f["rule_id"] for f in ipr.findings["findings"]}
    created = AuditEvent.objects.get(object_type="ipr", object_id=str(ipr.pk), action="ipr.created")
    assert created.after["plan"] == ipr.plan["summary"]
    assert AuditEvent.objects.filter(object_type="ipr", object_id=str(ipr.pk), action="ipr.open").exists()


def test_draft_is_not_reviewable_until_submitted(open_ipr, users):
    ipr = open_ipr(draft=True)
    assert ipr.state == S.DRAFT
    with pytest.raises(Conflict):
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    services.ipr_submit(actor=users["author"], ipr_id=ipr.pk)
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.APPROVED


def test_required_approvals_count_distinct_current_reviewers(open_ipr, users, env):
    services.approval_policy_set(actor=users["admin"], environment=env, required_approvals=2)
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.OPEN
    services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.APPROVED
    transitions = AuditEvent.objects.filter(object_type="ipr", object_id=str(ipr.pk), action="ipr.approved")
    assert transitions.count() == 1
    assert transitions.get().actor.username == users["reviewer2"].username


def test_changes_requested_hold_the_ipr_until_that_reviewer_approves(open_ipr, users):
    ipr = open_ipr()
    services.ipr_request_changes(reviewer=users["reviewer"], ipr_id=ipr.pk, comment="use 3 nodes")
    services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.OPEN
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.APPROVED
    services.ipr_request_changes(reviewer=users["reviewer3"], ipr_id=ipr.pk, comment="wait")
    assert IPR.objects.get(pk=ipr.pk).state == S.OPEN


@pytest.mark.parametrize("action", ["request_changes", "reject"])
def test_request_changes_and_reject_need_a_comment(action, open_ipr, users):
    ipr = open_ipr()
    call = services.ipr_request_changes if action == "request_changes" else services.ipr_reject
    with pytest.raises(ValidationFailed) as err:
        call(reviewer=users["reviewer"], ipr_id=ipr.pk, comment="   ")
    assert err.value.code == "comment_required"
    assert IPR.objects.get(pk=ipr.pk).state == S.OPEN


def test_blocking_findings_need_an_admin_override_with_a_justification(open_ipr, users, make_version):
    ipr = open_ipr(WEB, PUBLIC_DB)
    with pytest.raises(Conflict) as err:
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert err.value.code == "blocking_findings"
    assert "AICDN-SEC-006" in err.value.details["findings"]
    with pytest.raises(ValidationFailed):
        services.ipr_override(admin=users["admin"], ipr_id=ipr.pk, justification="")
    with pytest.raises(PermissionDenied):
        services.ipr_override(admin=users["operator"], ipr_id=ipr.pk, justification="trust me")
    services.ipr_override(admin=users["admin"], ipr_id=ipr.pk, justification="db sits behind a VPN gateway")
    event = AuditEvent.objects.filter(object_type="ipr", object_id=str(ipr.pk), action="ipr.override").get()
    assert event.after["justification"] == "db sits behind a VPN gateway"
    assert "AICDN-SEC-006" in event.after["findings"]
    with pytest.raises(Conflict) as err:
        services.ipr_override(admin=users["admin"], ipr_id=ipr.pk, justification="again")
    assert err.value.code == "already_overridden"
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.APPROVED
    # A new version makes the override stale along with the approvals.
    services.ipr_update_version(
        actor=users["author"], ipr_id=ipr.pk, blueprint_version=make_version({**WEB, "count": 1}, PUBLIC_DB)
    )
    assert IPR.objects.get(pk=ipr.pk).state == S.OPEN
    with pytest.raises(Conflict) as err:
        services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)
    assert err.value.code == "blocking_findings"
    assert FindingOverride.objects.filter(ipr=ipr).count() == 1


def test_override_without_blocking_findings_is_refused(open_ipr, users):
    ipr = open_ipr()
    with pytest.raises(Conflict) as err:
        services.ipr_override(admin=users["admin"], ipr_id=ipr.pk, justification="nothing")
    assert err.value.code == "nothing_to_override"


def test_blocking_severity_is_configurable(open_ipr, users, env):
    services.approval_policy_set(actor=users["admin"], environment=env, blocking_severity="critical")
    ipr = open_ipr(WEB, PUBLIC_DB)  # only "high" and "low" findings
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.APPROVED
    with pytest.raises(ValidationFailed):
        services.approval_policy_set(actor=users["admin"], environment=env, blocking_severity="catastrophic")


def test_a_cost_increase_above_the_threshold_needs_one_more_approval(open_ipr, users, env):
    ipr = open_ipr(BIG_WEB)
    assert Decimal(str(ipr.cost["delta"]["delta"])) > Decimal("100")
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.OPEN
    services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.APPROVED


def test_the_cost_rule_follows_the_configured_threshold(open_ipr, users, env):
    services.approval_policy_set(actor=users["admin"], environment=env, cost_increase_threshold="10000")
    ipr = open_ipr(BIG_WEB)
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    assert IPR.objects.get(pk=ipr.pk).state == S.APPROVED
    with pytest.raises(ValidationFailed):
        services.approval_policy_set(actor=users["admin"], environment=env, cost_increase_threshold="-5")


def test_a_diverged_ipr_must_be_replanned_before_approval_or_deploy(open_ipr, users, env, enqueued):
    first = open_ipr()
    second = open_ipr({**WEB, "count": 3}, title="bigger")
    third = open_ipr({**WEB, "count": 1}, title="smaller")
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=first.pk)
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=third.pk)
    _deploy(first, users)
    env.refresh_from_db()
    assert env.deployed_version_id == first.blueprint_version_id
    with pytest.raises(Conflict) as err:
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=second.pk)
    assert err.value.code == "diverged"
    with pytest.raises(Conflict) as err:
        services.ipr_deploy(actor=users["operator"], ipr_id=third.pk)
    assert err.value.code == "diverged"
    services.ipr_replan(actor=users["author"], ipr_id=second.pk)
    second.refresh_from_db()
    assert second.base_version_id == first.blueprint_version_id
    # The cost delta is now measured from what is deployed, not from nothing.
    assert second.cost["delta"]["old_total"] == first.cost["estimate"]["monthly_total"] > 0
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=second.pk)
    assert IPR.objects.get(pk=second.pk).state == S.APPROVED
    # Re-planning an approved IPR onto a moved base makes its approval stale.
    services.ipr_replan(actor=users["operator"], ipr_id=third.pk)
    assert IPR.objects.get(pk=third.pk).state == S.OPEN


def test_deploy_supersedes_the_previous_deployment(open_ipr, users, env, enqueued):
    first = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=first.pk)
    _deploy(first, users)
    second = open_ipr({**WEB, "count": 3})
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=second.pk)
    _deploy(second, users)
    assert IPR.objects.get(pk=first.pk).state == S.SUPERSEDED
    assert IPR.objects.get(pk=second.pk).state == S.DEPLOYED
    env.refresh_from_db()
    assert env.deployed_version_id == second.blueprint_version_id
    superseded = AuditEvent.objects.get(object_type="ipr", object_id=str(first.pk), action="ipr.superseded")
    assert superseded.after["reason"] == f"superseded by IPR #{second.pk}"


def test_one_ipr_at_a_time_per_environment(open_ipr, users, enqueued):
    first, second = open_ipr(), open_ipr({**WEB, "count": 3})
    for ipr in (first, second):
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    services.ipr_deploy(actor=users["operator"], ipr_id=first.pk)
    with pytest.raises(Conflict) as err:
        services.ipr_deploy(actor=users["operator"], ipr_id=second.pk)
    assert err.value.code == "environment_busy"
    assert err.value.details == {"ipr": first.pk, "state": "queued"}
    assert IPR.objects.get(pk=second.pk).state == S.APPROVED


def test_chat_born_iprs_record_their_ai_provenance(open_ipr, users):
    provenance = {
        "model": "qwen2.5-coder-1.5b-instruct",
        "intent": {"web_servers": 2},
        "tool_calls": [{"name": "create_blueprint", "arguments": {"name": "shop"}}],
    }
    with pytest.raises(ValidationFailed):
        open_ipr(origin="chat")
    ipr = open_ipr(origin="chat", conversation_id=42, ai_provenance=provenance)
    assert (ipr.conversation_id, ipr.ai_provenance) == ("42", provenance)
    created = AuditEvent.objects.get(object_type="ipr", object_id=str(ipr.pk), action="ipr.created")
    assert created.after["ai_provenance"] == provenance
    assert created.after["origin"] == "chat"


def test_rollback_targets_a_version_that_was_deployed_here(open_ipr, users, env, make_version):
    never = make_version({**WEB, "count": 7})
    with pytest.raises(ValidationFailed) as err:
        services.ipr_open(
            author=users["author"], blueprint_version=never, environment=env, title="back", kind="rollback"
        )
    assert err.value.code == "rollback_target_unknown"


def test_policy_changes_are_audited_with_before_and_after(users, env):
    services.approval_policy_set(actor=users["admin"], environment=env, required_approvals=3, reviewer_group="admins")
    event = AuditEvent.objects.filter(action="environment.policy_changed").get()
    assert event.before["required_approvals"] == 1
    assert (event.after["required_approvals"], event.after["reviewer_group"]) == (3, "admins")
    with pytest.raises(ValidationFailed):
        services.approval_policy_set(actor=users["admin"], environment=env, reviewer_group="no-such-group")
    with pytest.raises(ValidationFailed):
        services.approval_policy_set(actor=users["admin"], environment=env, required_approvals=0)
