"""The review console through the admin views (Django test client, logged in), forbidden actions included."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from aicdn_project.models import AuditEvent
from iprs import services
from iprs.models import IPR, ApprovalPolicy, FindingOverride, IPRState
from tests.iprs.conftest import PUBLIC_DB, WEB

S = IPRState


@pytest.fixture
def login():
    def make(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


def page(ipr: IPR) -> str:
    return reverse("admin:iprs_ipr_change", args=[ipr.pk])


def post(client: Client, ipr: IPR, action: str, comment: str = "") -> list[str]:
    response = client.post(page(ipr), {"action": action, "comment": comment}, follow=True)
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)] or [str(m) for m in response.context["messages"]]


def test_the_list_filters_and_searches(login, users, open_ipr, env):
    mine = open_ipr(title="web tier for shop")
    other = open_ipr(title="bigger cache", author=users["requester"])
    client = login(users["reviewer"])
    url = reverse("admin:iprs_ipr_changelist")
    body = client.get(url).content.decode()
    assert "web tier for shop" in body and "bigger cache" in body
    assert "awaiting my review" in body
    assert "bigger cache" not in client.get(url, {"q": "web tier"}).content.decode()
    assert "web tier for shop" in client.get(url, {"state__exact": "open"}).content.decode()
    assert "web tier for shop" not in client.get(url, {"state__exact": "approved"}).content.decode()
    assert "web tier for shop" in client.get(url, {"environment__id__exact": env.pk}).content.decode()
    assert "bigger cache" not in client.get(url, {"author__id__exact": users["author"].pk}).content.decode()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=mine.pk)
    awaiting = client.get(url, {"awaiting": "me"}).content.decode()
    assert "bigger cache" in awaiting and "web tier for shop" not in awaiting
    # A requester sees only their own IPRs.
    own = login(users["author"]).get(url).content.decode()
    assert "web tier for shop" in own and "bigger cache" not in own
    assert login(users["author"]).get(page(other)).status_code == 302  # redirected: "does not exist"


def test_the_review_page_shows_everything_a_reviewer_needs(login, users, open_ipr):
    ipr = open_ipr(WEB, PUBLIC_DB)
    response = login(users["reviewer"]).get(page(ipr))
    assert response.status_code == 200
    body = response.content.decode()
    assert ipr.plan["summary"] in body  # plan summary
    assert 'class="sdiff-added"' in body and "+ db" in body  # structured diff, coloured by class
    assert 'class="ydiff-add"' in body  # YAML diff
    assert "review.css" in body
    assert str(ipr.cost["estimate"]["monthly_total"]) in body  # cost
    assert 'class="sev sev-high"' in body and "AICDN-SEC-006" in body  # findings by severity
    assert 'src="data:image/svg+xml;base64,' in body  # topology
    assert "Adds 2 resources: web (compute) and db (database)." in body  # plain-language summary
    assert "Monthly cost rises by" in body
    assert "Top risks: high: Management or data port open to the internet (db)" in body
    assert "ipr.created" in body and "ipr.open" in body  # audit timeline
    assert "block approval" in body


def test_buttons_follow_what_each_user_may_do(login, users, open_ipr, enqueued):
    ipr = open_ipr()
    reviewer = login(users["reviewer"]).get(page(ipr)).content.decode()
    assert 'name="_approve"' in reviewer and 'name="_reject"' in reviewer and 'name="_request_changes"' in reviewer
    assert 'name="_deploy"' not in reviewer and 'name="_override"' not in reviewer
    author = login(users["author"]).get(page(ipr)).content.decode()
    assert 'name="_approve"' not in author and 'name="_close"' in author
    assert "the author never reviews" not in author  # the author is simply not a reviewer
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    operator = login(users["operator"]).get(page(ipr)).content.decode()
    assert 'name="_deploy"' in operator and 'name="_approve"' not in operator
    requester = login(users["requester"])
    assert requester.get(page(ipr)).status_code == 302  # not theirs: not visible at all


def test_approve_through_the_console(login, users, open_ipr):
    ipr = open_ipr()
    messages = post(login(users["reviewer"]), ipr, "approve", "looks right")
    assert messages == ["Approval recorded."]
    ipr.refresh_from_db()
    assert ipr.state == S.APPROVED
    event = AuditEvent.objects.get(object_type="ipr", object_id=str(ipr.pk), action="ipr.review.approve")
    assert (event.channel, event.after["comment"]) == ("admin", "looks right")


def test_forbidden_console_actions_are_refused_with_a_message(login, users, open_ipr, enqueued):
    ipr = open_ipr()
    assert post(login(users["author"]), ipr, "approve") == [
        f"Refused: only members of 'reviewers' may approve IPRs for {ipr.environment.name}"
    ]
    refused = post(login(users["reviewer"]), ipr, "reject", "")
    assert refused == ["Refused: a comment is required to reject"]
    refused = post(login(users["reviewer"]), ipr, "request_changes", "  ")
    assert refused == ["Refused: a comment is required to request changes"]
    refused = post(login(users["reviewer"]), ipr, "deploy")
    assert refused[0].startswith("Refused: cannot deploy IPR")
    refused = post(login(users["operator"]), ipr, "override", "because")
    assert refused == ["Refused: only admins may override blocking findings"]
    refused = post(login(users["operator"]), ipr, "release_lock")
    assert refused == ["Refused: only admins may release another holder's deploy lock"]
    assert post(login(users["reviewer"]), ipr, "drop_tables") == ["Unknown action 'drop_tables'."]
    ipr.refresh_from_db()
    assert ipr.state == S.OPEN
    assert enqueued == []
    assert not ipr.reviews.exists()


def test_reject_and_request_changes_with_comments(login, users, open_ipr):
    first, second = open_ipr(), open_ipr(title="second")
    assert post(login(users["reviewer"]), first, "request_changes", "use two zones") == ["Changes requested."]
    assert post(login(users["reviewer"]), second, "reject", "duplicate of #1") == ["IPR rejected."]
    assert IPR.objects.get(pk=first.pk).state == S.OPEN
    assert IPR.objects.get(pk=second.pk).state == S.REJECTED


def test_operator_deploys_and_admin_releases_the_lock(login, users, open_ipr, enqueued, env):
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    with_callbacks = login(users["operator"])
    assert post(with_callbacks, ipr, "deploy") == ["Deployment queued."]
    assert IPR.objects.get(pk=ipr.pk).state == S.QUEUED
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="w-7")
    admin_page = login(users["admin"]).get(page(ipr)).content.decode()
    assert "held by IPR #" in admin_page and "w-7" in admin_page
    assert 'name="_release_lock"' in admin_page
    assert 'name="_release_lock"' not in login(users["operator"]).get(page(ipr)).content.decode()
    assert post(login(users["admin"]), ipr, "release_lock", "worker gone") == ["Deploy lock released."]
    assert AuditEvent.objects.filter(action="environment.lock_released", actor__username="ada").exists()


def test_admin_override_through_the_console(login, users, open_ipr):
    ipr = open_ipr(WEB, PUBLIC_DB)
    admin_body = login(users["admin"]).get(page(ipr)).content.decode()
    assert 'name="_override"' in admin_body
    assert 'name="_approve"' not in login(users["reviewer"]).get(page(ipr)).content.decode()  # blocked
    assert post(login(users["admin"]), ipr, "override", "") == [
        "Refused: a comment is required to override blocking findings (justification)"
    ]
    assert post(login(users["admin"]), ipr, "override", "VPN only") == ["Override recorded."]
    assert FindingOverride.objects.get(ipr=ipr).justification == "VPN only"
    assert 'name="_approve"' in login(users["reviewer"]).get(page(ipr)).content.decode()


def test_the_audit_trail_is_read_only_in_the_admin(login, users, open_ipr):
    ipr = open_ipr()
    event = AuditEvent.objects.filter(object_type="ipr", object_id=str(ipr.pk)).first()
    client = login(users["admin"])
    assert client.get(reverse("admin:aicdn_auditevent_changelist")).status_code == 200
    change = reverse("admin:aicdn_auditevent_change", args=[event.pk])
    assert client.get(change).status_code == 200
    before = event.action
    client.post(change, {"action": "tampered"})
    assert AuditEvent.objects.get(pk=event.pk).action == before
    assert client.get(reverse("admin:aicdn_auditevent_delete", args=[event.pk])).status_code == 403
    assert client.get(reverse("admin:aicdn_auditevent_add")).status_code == 403
    assert login(users["author"]).get(reverse("admin:aicdn_auditevent_changelist")).status_code == 403


def test_policies_change_only_through_admins_and_are_audited(login, users, env):
    ApprovalPolicy.objects.create(environment=env)
    policy = ApprovalPolicy.objects.get(environment=env)
    url = reverse("admin:iprs_approvalpolicy_change", args=[policy.pk])
    form = {
        "required_approvals": 2,
        "reviewer_group": "reviewers",
        "blocking_severity": "medium",
        "cost_increase_threshold": "50.00",
        "emergency_rollback_allowed": "on",
    }
    assert login(users["reviewer"]).post(url, form).status_code == 403
    assert ApprovalPolicy.objects.get(pk=policy.pk).required_approvals == 1
    response = login(users["admin"]).post(url, form)
    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.required_approvals, policy.blocking_severity, policy.emergency_rollback_allowed) == (
        2,
        "medium",
        True,
    )
    event = AuditEvent.objects.get(action="environment.policy_changed")
    assert event.before["required_approvals"] == 1 and event.after["required_approvals"] == 2


def test_lock_admin_lists_holders_and_admins_release(login, users, open_ipr, env, enqueued):
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="w-9")
    url = reverse("admin:iprs_environmentlock_changelist")
    assert "w-9" in login(users["reviewer"]).get(url).content.decode()
    lock_pk = env.deploy_lock.pk
    login(users["operator"]).post(url, {"action": "release", "_selected_action": [lock_pk]})
    env.deploy_lock.refresh_from_db()
    assert env.deploy_lock.holder_ipr_id == ipr.pk  # operators do not get the release action
    login(users["admin"]).post(url, {"action": "release", "_selected_action": [lock_pk]})
    env.deploy_lock.refresh_from_db()
    assert env.deploy_lock.holder_ipr_id is None


def test_policy_added_through_the_admin_is_saved_by_the_service(login, users, env):
    url = reverse("admin:iprs_approvalpolicy_add")
    form = {
        "environment": env.pk,
        "required_approvals": 3,
        "reviewer_group": "reviewers",
        "blocking_severity": "high",
        "cost_increase_threshold": "",
    }
    response = login(users["admin"]).post(url, form)
    assert response.status_code == 302
    assert ApprovalPolicy.objects.get(environment=env).required_approvals == 3
    assert AuditEvent.objects.filter(action="environment.policy_changed", object_id=str(env.pk)).exists()
    assert login(users["operator"]).get(url).status_code == 403


def test_admin_aborts_a_queued_deployment_from_the_console(login, users, open_ipr, enqueued):
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
    assert 'name="_abort"' not in login(users["operator"]).get(page(ipr)).content.decode()
    assert post(login(users["operator"]), ipr, "abort", "stuck") == [
        "Refused: only admins may abort a queued or running deployment"
    ]
    assert 'name="_abort"' in login(users["admin"]).get(page(ipr)).content.decode()
    assert post(login(users["admin"]), ipr, "abort", "no executor yet") == [
        "Deployment aborted; the IPR is marked failed."
    ]
    assert IPR.objects.get(pk=ipr.pk).state == S.FAILED
