"""The interfaces: IPR progress, rollback, drift and reconcile, deployments endpoints, the beat tasks, the CLI."""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import pytest
from django.core.wsgi import get_wsgi_application
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from aicdn_project import metrics
from aicdn_project.cli import commands
from aicdn_project.cli.client import Api
from engines import labels as L
from engines import tasks as engine_tasks
from engines.models import Deployment, DeploymentStatus, DriftReport, SimulatedObject
from iprs.models import IPR, IPRKind, IPRState
from tests.deployments.conftest import compute, doc

pytestmark = pytest.mark.django_db(transaction=True)

V1 = doc({"name": "net", "type": "network"}, compute("web", count=2, network="net"), compute("jobs"))
V2 = doc({"name": "net", "type": "network"}, compute("web", count=3, network="net"))


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def deployed_twice(make_env, deploy):
    env = make_env()
    first = deploy(env, V1)
    second = deploy(env, V2)
    assert (first.state, second.state) == (IPRState.DEPLOYED, IPRState.DEPLOYED)
    first.refresh_from_db()
    return env, first, second


def test_the_ipr_shows_its_deployment_progress(deployed_twice, users):
    env, first, second = deployed_twice
    body = client_for(users["author"]).get(f"/api/v1/iprs/{second.pk}").json()
    assert body["state"] == "deployed"
    progress = body["deployment"]
    assert (progress["status"], progress["attempt"]) == ("succeeded", 1)
    assert [(r["name"], r["action"], r["status"]) for r in progress["resources"]] == [
        ("net", "noop", "skipped"),
        ("web", "update", "succeeded"),
        ("jobs", "delete", "succeeded"),
    ]
    # Before it deploys, an IPR has no deployment.
    fresh = client_for(users["author"]).post(
        "/api/v1/iprs",
        {"blueprint_version": first.blueprint_version.commit_id, "environment": env.name, "title": "again"},
        format="json",
    )
    assert fresh.status_code == 201 and fresh.json()["deployment"] is None


def test_rollback_endpoint_opens_a_rollback_ipr_planned_from_the_recorded_state(deployed_twice, users):
    env, first, second = deployed_twice
    answer = client_for(users["author"]).post(
        "/api/v1/iprs/rollback",
        {"to": first.blueprint_version.commit_id, "environment": env.name, "emergency": False},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert (body["kind"], body["state"], body["emergency"]) == ("rollback", "open", False)
    assert body["blueprint_version"]["commit_id"] == first.blueprint_version.commit_id
    assert body["base_version"]["commit_id"] == second.blueprint_version.commit_id
    actions = {a["name"]: a["action"] for a in body["plan"]["actions"]}
    assert actions == {"net": "noop", "web": "update", "jobs": "create"}
    assert body["title"] == f"Roll {env.name} back to stack {first.blueprint_version.commit_id}"


def test_rollback_refusals(deployed_twice, make_version, users):
    env, first, _ = deployed_twice
    url = "/api/v1/iprs/rollback"
    to = first.blueprint_version.commit_id
    as_requester = client_for(users["author"]).post(url, {"to": to, "environment": env.name, "emergency": True})
    assert (as_requester.status_code, as_requester.json()["error"]) == (403, "not_operator")
    as_operator = client_for(users["operator"]).post(url, {"to": to, "environment": env.name, "emergency": True})
    assert (as_operator.status_code, as_operator.json()["error"]) == (403, "emergency_not_allowed")
    never = make_version(doc(compute("other")))
    unknown = client_for(users["author"]).post(url, {"to": never.commit_id, "environment": env.name})
    assert (unknown.status_code, unknown.json()["error"]) == (400, "rollback_target_unknown")
    missing = client_for(users["author"]).post(url, {"to": "abcdef123456", "environment": env.name})
    assert missing.status_code == 404


def test_drift_check_report_metrics_and_reconcile(deployed_twice, users, approve_and_deploy):
    env, _, second = deployed_twice
    operator, reviewer = client_for(users["operator"]), client_for(users["reviewer"])
    drift_url = f"/api/v1/environments/{env.name}/drift"
    assert reviewer.get(drift_url).json() == {"environment": env.name, "latest": None, "recent": []}
    assert client_for(users["author"]).get(drift_url).status_code == 403
    assert reviewer.post(f"{drift_url}/check").status_code == 403
    clean = operator.post(f"{drift_url}/check")
    assert clean.status_code == 201 and clean.json()["status"] == "clean"
    assert clean.json()["resources_checked"] == 2
    nothing = operator.post(f"{drift_url}/reconcile", {}, format="json")
    assert (nothing.status_code, nothing.json()["error"]) == (409, "no_drift")

    cluster = env.config["cluster"]
    SimulatedObject.objects.filter(cluster=cluster, environment=env.name, resource_name="net").delete()
    web0 = SimulatedObject.objects.get(cluster=cluster, environment=env.name, resource_name="web", instance=0)
    web0.labels = {**web0.labels, L.SPEC_HASH: "0" * 16}  # someone re-made it with another spec
    web0.save()
    SimulatedObject.objects.create(
        cluster=cluster,
        object_id="sim-intruder",
        environment=env.name,
        resource_name="intruder",
        kind="container",
        labels=L.managed_labels(
            environment=env.name, resource={"name": "intruder", "type": "container"}, deployment_id="x"
        ),
    )
    findings = metrics.DRIFT_FINDINGS.labels(environment=env.name, kind="missing")
    before = findings._value.get()
    drifted = operator.post(f"{drift_url}/check").json()
    assert drifted["status"] == "drifted"
    assert drifted["missing"] == [{"name": "net", "type": "network"}]
    assert [c["name"] for c in drifted["changed"]] == ["web"]
    assert drifted["changed"][0]["reasons"][0]["field"] == "spec"
    assert [(u["resource"], u["object_id"]) for u in drifted["unmanaged"]] == [("intruder", "sim-intruder")]
    assert "1 missing (net)" in drifted["summary"]
    assert findings._value.get() == before + 1
    listed = reviewer.get(drift_url).json()
    assert listed["latest"]["id"] == drifted["id"] and len(listed["recent"]) == 2

    opened = operator.post(f"{drift_url}/reconcile", {}, format="json")
    assert opened.status_code == 201, opened.json()
    body = opened.json()
    assert body["kind"] == "reconcile" and body["blueprint_version"]["id"] == second.blueprint_version_id
    assert {a["name"]: a["action"] for a in body["plan"]["actions"]} == {
        "net": "create",
        "web": "replace",
        "intruder": "delete",
    }
    assert DriftReport.objects.get(pk=drifted["id"]).reconcile_ipr_id == body["id"]
    reconciled = approve_and_deploy(IPR.objects.get(pk=body["id"]))
    assert reconciled.state == IPRState.DEPLOYED, reconciled.failure_reason
    assert operator.post(f"{drift_url}/check").json()["status"] == "clean"
    assert not SimulatedObject.objects.filter(environment=env.name, resource_name="intruder").exists()
    assert SimulatedObject.objects.filter(environment=env.name, resource_name="web").count() == 3


def test_drift_is_not_checked_while_a_deployment_runs(deployed_twice, users):
    env, _, second = deployed_twice
    Deployment.objects.filter(ipr_id=second.pk).update(status=DeploymentStatus.RUNNING)
    refused = client_for(users["operator"]).post(f"/api/v1/environments/{env.name}/drift/check")
    assert (refused.status_code, refused.json()["error"]) == (409, "deployment_running")
    assert engine_tasks.drift_check_environment.apply(args=[env.pk]).get() == "skipped"
    Deployment.objects.filter(ipr_id=second.pk).update(status=DeploymentStatus.SUCCEEDED)
    assert engine_tasks.drift_check_all.apply().get() == [env.pk]  # fans out (eagerly here) one check each
    assert DriftReport.objects.filter(environment=env, status="clean").count() == 1


def test_deployments_endpoints(deployed_twice, users):
    env, first, _ = deployed_twice
    reviewer = client_for(users["reviewer"])
    assert client_for(users["author"]).get("/api/v1/deployments").status_code == 403
    listed = reviewer.get("/api/v1/deployments", {"environment": env.name}).json()
    assert [d["ipr_id"] for d in listed["results"]] == sorted((d["ipr_id"] for d in listed["results"]), reverse=True)
    assert len(listed["results"]) == 2
    mine = reviewer.get("/api/v1/deployments", {"ipr": first.pk}).json()["results"]
    assert len(mine) == 1 and mine[0]["status"] == "succeeded"
    detail = reviewer.get(f"/api/v1/deployments/{mine[0]['id']}").json()
    assert [(o["resource"], o["action"], o["status"]) for o in detail["operations"]] == [
        ("net", "create", "succeeded"),
        ("web", "create", "succeeded"),
        ("jobs", "create", "succeeded"),
    ]
    assert detail["operations"][1]["output"]["object_ids"]
    assert reviewer.get("/api/v1/deployments/999999").status_code == 404


def cli_api(user: Any) -> Api:
    """The CLI's own HTTP client, talking to this process's Django app (and test database) over WSGI."""
    api = Api("http://testserver", token=Token.objects.create(user=user).key)
    api.http = httpx.Client(
        transport=httpx.WSGITransport(app=get_wsgi_application()),
        base_url="http://testserver",
        headers=dict(api.http.headers),
    )
    return api


def test_cli_rollback_and_wait_use_these_endpoints(deployed_twice, users, approve_and_deploy):
    env, first, _ = deployed_twice
    api = cli_api(users["operator"])
    out = commands.Out(True)
    args = argparse.Namespace(to=first.blueprint_version.commit_id, env=env.name, emergency=False)
    assert commands.cmd_rollback(api, args, out) == commands.OK
    rollback = IPR.objects.get(kind=IPRKind.ROLLBACK)
    assert (rollback.origin, rollback.blueprint_version_id) == ("cli", first.blueprint_version_id)
    approve_and_deploy(rollback)
    final = commands.wait_for_ipr(api, rollback.pk, out, interval=0.1, timeout=10)
    assert final["state"] == "deployed"
    rows = commands._resource_rows(final)
    assert [(r["name"], r["action"], r["status"]) for r in rows] == [
        ("net", "noop", "skipped"),
        ("web", "update", "succeeded"),
        ("jobs", "create", "succeeded"),
    ]
    assert all(r["status"] in commands.DONE_STATUSES for r in rows)
    api.close()
