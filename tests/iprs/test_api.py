"""The IPR, environment and audit API: wiring, permissions and error mapping."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from aicdn_project.models import AuditEvent
from iprs import services
from iprs.models import IPR, IPRState
from tests.iprs.conftest import PUBLIC_DB, WEB

S = IPRState


def test_anonymous_requests_are_refused():
    client = APIClient()
    for url in ("/api/v1/iprs", "/api/v1/environments", "/api/v1/audit"):
        assert client.get(url).status_code == 401


def test_open_by_commit_id_and_retrieve_with_snapshots(api_as, users, make_version, env):
    version = make_version(WEB, PUBLIC_DB)
    client = api_as(users["author"])
    response = client.post(
        "/api/v1/iprs",
        {"blueprint_version": version.commit_id, "environment": env.name, "title": "shop", "description": "why"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["state"], body["environment"], body["author"]) == ("open", "staging", "alice")
    assert body["blueprint_version"]["commit_id"] == version.commit_id
    assert body["plan"]["summary"] == "2 to add, 0 to change, 0 to destroy"
    assert body["cost"]["delta"]["old_total"] == 0
    assert body["findings"]["max_severity"] == "high"
    detail = client.get(f"/api/v1/iprs/{body['id']}").json()
    assert detail["reviews"] == [] and detail["plan"] == body["plan"]


def test_open_refusals_map_to_4xx(api_as, users, make_version, env):
    version = make_version(WEB)
    reviewer = api_as(users["reviewer"])
    payload = {"blueprint_version": str(version.pk), "environment": env.name, "title": "x"}
    assert reviewer.post("/api/v1/iprs", payload, format="json").status_code == 403
    author = api_as(users["author"])
    assert author.post("/api/v1/iprs", {**payload, "environment": "nowhere"}, format="json").status_code == 404
    assert author.post("/api/v1/iprs", {**payload, "blueprint_version": "zz"}, format="json").status_code == 400
    assert author.post("/api/v1/iprs", {"title": "x"}, format="json").status_code == 400
    other = api_as(users["requester"])  # cannot see the author's version
    assert other.post("/api/v1/iprs", payload, format="json").status_code == 404


def test_list_filters_and_visibility(api_as, users, open_ipr, env):
    mine = open_ipr(title="alpha")
    theirs = open_ipr(title="beta", author=users["requester"])
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=theirs.pk)
    reviewer = api_as(users["reviewer"])

    def ids(client, **params):
        return [row["id"] for row in client.get("/api/v1/iprs", params).json()["results"]]

    assert set(ids(reviewer)) == {mine.pk, theirs.pk}
    assert ids(reviewer, state="approved") == [theirs.pk]
    assert ids(reviewer, author="alice") == [mine.pk]
    assert ids(reviewer, q="alp") == [mine.pk]
    assert ids(reviewer, awaiting_review="true") == [mine.pk]
    assert set(ids(reviewer, environment="staging")) == {mine.pk, theirs.pk}
    assert ids(reviewer, environment="prod") == []
    assert ids(api_as(users["author"])) == [mine.pk]
    assert api_as(users["author"]).get(f"/api/v1/iprs/{theirs.pk}").status_code == 404


def test_review_actions_and_error_bodies(api_as, users, open_ipr, enqueued, django_capture_on_commit_callbacks):
    ipr = open_ipr()
    author, reviewer, operator = api_as(users["author"]), api_as(users["reviewer"]), api_as(users["operator"])
    denied = author.post(f"/api/v1/iprs/{ipr.pk}/approve", {}, format="json")
    assert denied.status_code == 403
    assert denied.json()["error"] == "not_reviewer"
    early = operator.post(f"/api/v1/iprs/{ipr.pk}/deploy", {}, format="json")
    assert early.status_code == 409
    assert early.json()["details"]["current_state"] == "open"
    assert early.json()["details"]["allowed_next_states"] == ["approved", "closed", "rejected"]
    assert reviewer.post(f"/api/v1/iprs/{ipr.pk}/reject", {}, format="json").status_code == 400
    ok = reviewer.post(f"/api/v1/iprs/{ipr.pk}/approve", {"comment": "fine"}, format="json")
    assert ok.status_code == 200 and ok.json()["state"] == "approved"
    assert ok.json()["reviews"][0]["reviewer"] == "rita" and ok.json()["reviews"][0]["stale"] is False
    changes = api_as(users["reviewer2"]).post(
        f"/api/v1/iprs/{ipr.pk}/request-changes", {"comment": "pin the image"}, format="json"
    )
    assert changes.json()["state"] == "open"
    assert api_as(users["reviewer2"]).post(f"/api/v1/iprs/{ipr.pk}/approve", {}, format="json").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        deployed = operator.post(f"/api/v1/iprs/{ipr.pk}/deploy", {}, format="json")
    assert deployed.status_code == 200 and deployed.json()["state"] == "queued"
    assert enqueued == [ipr.pk]
    again = operator.post(f"/api/v1/iprs/{ipr.pk}/deploy", {}, format="json")
    assert again.status_code == 409
    assert "queued" in again.json()["message"]


def test_close_replan_override_update_version_submit(api_as, users, open_ipr, make_version):
    risky = open_ipr(WEB, PUBLIC_DB)
    admin = api_as(users["admin"])
    assert admin.post(f"/api/v1/iprs/{risky.pk}/override", {}, format="json").status_code == 400
    assert (
        api_as(users["operator"])
        .post(f"/api/v1/iprs/{risky.pk}/override", {"justification": "x"}, format="json")
        .status_code
        == 403
    )
    overridden = admin.post(f"/api/v1/iprs/{risky.pk}/override", {"justification": "VPN"}, format="json")
    assert overridden.status_code == 200 and overridden.json()["overrides"][0]["justification"] == "VPN"
    assert api_as(users["author"]).post(f"/api/v1/iprs/{risky.pk}/replan", {}, format="json").status_code == 200
    newer = make_version({**WEB, "count": 1})
    updated = api_as(users["author"]).post(
        f"/api/v1/iprs/{risky.pk}/version", {"blueprint_version": newer.commit_id}, format="json"
    )
    assert updated.status_code == 200 and updated.json()["blueprint_version"]["id"] == newer.pk
    assert api_as(users["requester"]).post(f"/api/v1/iprs/{risky.pk}/close", {}, format="json").status_code == 404
    assert api_as(users["reviewer"]).post(f"/api/v1/iprs/{risky.pk}/close", {}, format="json").status_code == 403
    closed = api_as(users["author"]).post(f"/api/v1/iprs/{risky.pk}/close", {"comment": "done"}, format="json")
    assert closed.json()["state"] == "closed"
    draft = open_ipr(draft=True)
    assert api_as(users["author"]).post(f"/api/v1/iprs/{draft.pk}/submit", {}, format="json").json()["state"] == "open"


def test_environments_are_listed_for_all_and_written_by_admins(api_as, users, env):
    listed = api_as(users["requester"]).get("/api/v1/environments").json()
    assert [e["name"] for e in listed] == ["staging"]
    assert listed[0]["policy"]["required_approvals"] == 1 and listed[0]["lock"]["held"] is False
    payload = {"name": "prod", "kind": "production", "engine": "simulator", "policy": {"required_approvals": 2}}
    assert api_as(users["operator"]).post("/api/v1/environments", payload, format="json").status_code == 403
    created = api_as(users["admin"]).post("/api/v1/environments", payload, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["policy"]["required_approvals"] == 2
    assert api_as(users["admin"]).post("/api/v1/environments", payload, format="json").status_code == 409
    bad = api_as(users["admin"]).post(
        "/api/v1/environments", {**payload, "name": "bad", "secret_refs": {"token": "not a var!"}}, format="json"
    )
    assert bad.status_code == 400
    patched = api_as(users["admin"]).patch(
        "/api/v1/environments/prod", {"description": "live", "policy": {"blocking_severity": "medium"}}, format="json"
    )
    assert patched.status_code == 200
    assert (patched.json()["description"], patched.json()["policy"]["blocking_severity"]) == ("live", "medium")
    assert (
        api_as(users["reviewer"]).patch("/api/v1/environments/prod", {"description": "x"}, format="json").status_code
        == 403
    )
    assert api_as(users["reviewer"]).get("/api/v1/environments/prod").json()["kind"] == "production"
    assert api_as(users["reviewer"]).get("/api/v1/environments/nope").status_code == 404
    actions = set(AuditEvent.objects.filter(object_type="environment").values_list("action", flat=True))
    assert {"environment.created", "environment.updated", "environment.policy_changed"} <= actions


def test_environment_lock_endpoint(api_as, users, open_ipr, enqueued, env):
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="w-3")
    lock = api_as(users["requester"]).get("/api/v1/environments/staging/lock").json()
    assert (lock["held"], lock["holder_ipr"], lock["holder_name"]) == (True, ipr.pk, "w-3")
    assert api_as(users["operator"]).delete("/api/v1/environments/staging/lock", {}, format="json").status_code == 403
    assert api_as(users["admin"]).delete("/api/v1/environments/staging/lock", {}, format="json").json() == {
        "released": True
    }
    assert api_as(users["admin"]).get("/api/v1/environments/staging/lock").json()["held"] is False


def test_audit_is_read_only_and_filterable(api_as, users, open_ipr):
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    reviewer = api_as(users["reviewer"])
    rows = reviewer.get("/api/v1/audit", {"object_type": "ipr", "object_id": ipr.pk}).json()["results"]
    assert [r["action"] for r in rows] == ["ipr.approved", "ipr.review.approve", "ipr.open", "ipr.created"]
    assert all(r["hash"] and r["prev_hash"] for r in rows)
    assert [r["action"] for r in reviewer.get("/api/v1/audit", {"action": "ipr.review."}).json()["results"]] == [
        "ipr.review.approve"
    ]
    assert {r["actor_name"] for r in reviewer.get("/api/v1/audit", {"actor": "rita"}).json()["results"]} == {"rita"}
    # A requester sees only what they did.
    mine = api_as(users["author"]).get("/api/v1/audit").json()["results"]
    assert mine and {r["actor_name"] for r in mine} == {"alice"}
    assert reviewer.post("/api/v1/audit", {}, format="json").status_code == 405
    assert reviewer.get("/api/v1/audit/verify").status_code == 403
    verify = api_as(users["admin"]).get("/api/v1/audit/verify").json()
    assert verify["ok"] is True and verify["checked"] == AuditEvent.objects.count()


@pytest.mark.parametrize("state", [S.DEPLOYED, S.REJECTED, S.CLOSED])
def test_final_states_refuse_every_action_with_409(state, api_as, users, open_ipr):
    ipr = open_ipr()
    IPR.objects.filter(pk=ipr.pk).update(state=state)
    for action in ("approve", "reject", "request-changes", "deploy", "close", "replan", "abort"):
        response = api_as(users["admin"]).post(f"/api/v1/iprs/{ipr.pk}/{action}", {"comment": "c"}, format="json")
        assert response.status_code == 409, action
        assert response.json()["details"]["current_state"] == state
