"""GET /api/v1/environments/{name}/plan: a version planned against what the environment has deployed."""

from __future__ import annotations

from engines.models import Environment
from engines.services import resource_state_record
from iprs.models import IPR
from tests.iprs.conftest import WEB

CACHE = {"name": "cache", "type": "cache", "specs": {"engine": "redis", "memory": "1GB"}}


def test_plan_diffs_against_the_recorded_state(users, env, make_version, api_as) -> None:  # type: ignore[no-untyped-def]
    deployed = make_version(WEB)
    for resource in deployed.document["resources"]:
        resource_state_record(environment=env, resource=resource, status="ready", deployment_id="d1")
    Environment.objects.filter(pk=env.pk).update(deployed_version=deployed)
    bigger = dict(WEB, specs={**WEB["specs"], "memory": "8GB"})
    target = make_version(bigger, CACHE)

    response = api_as(users["requester"]).get(f"/api/v1/environments/{env.name}/plan?version={target.commit_id}")
    assert response.status_code == 404  # the requester cannot see the author's blueprint version

    body = api_as(users["author"]).get(f"/api/v1/environments/{env.name}/plan?version={target.commit_id}").json()
    actions = {a["name"]: a["action"] for a in body["plan"]["actions"]}
    assert actions == {"web": "update", "cache": "create"}
    assert body["plan"]["summary"].startswith("1 to add, 1 to change, 0 to destroy")
    assert body["base_version"]["commit_id"] == deployed.commit_id
    assert body["cost"]["delta"]["delta"] > 0
    assert IPR.objects.count() == 0  # planning writes nothing


def test_plan_needs_a_version_and_a_known_environment(users, env, api_as) -> None:  # type: ignore[no-untyped-def]
    client = api_as(users["author"])
    missing = client.get(f"/api/v1/environments/{env.name}/plan")
    assert missing.status_code == 400 and "version" in missing.json()["message"]
    assert client.get("/api/v1/environments/nowhere/plan?version=abcdef123456").status_code == 404


def test_environment_detail_lists_the_recorded_resources(users, env, make_version, api_as) -> None:  # type: ignore[no-untyped-def]
    deployed = make_version(WEB, CACHE)
    for resource in deployed.document["resources"]:
        resource_state_record(environment=env, resource=resource, status="ready", deployment_id="d1")
    body = api_as(users["requester"]).get(f"/api/v1/environments/{env.name}").json()
    assert sorted((r["name"], r["type"], r["status"]) for r in body["resources"]) == [
        ("cache", "cache", "ready"),
        ("web", "compute", "ready"),
    ]
