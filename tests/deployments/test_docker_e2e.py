"""Deploy -> change -> deploy -> rollback -> drift -> reconcile against the real test dockerd, through the real
services (ipr_open, two reviewers, ipr_deploy, the deploy task); every effect is checked through the Docker API."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from engines import labels as L
from engines.drift import drift_check
from engines.models import Deployment, ResourceState
from iprs import services
from iprs.models import IPRKind, IPRState
from tests.deployments.conftest import compute, doc
from tests.engines.conftest import docker_config
from tests.engines.dockerd import LONG_RUNNING, TEST_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

NET = {"name": "backend", "type": "network", "specs": {"cidr": "172.30.7.0/24"}}
DB = {
    "name": "db",
    "type": "database",
    "network": "backend",
    "specs": {"engine": "postgresql", "engine_version": "16", "memory": "128MB"},
}
CACHE = {"name": "cache", "type": "cache", "network": "backend", "specs": {"engine": "redis", "engine_version": "7.2"}}
V1 = doc(NET, compute("web", count=2, network="backend", specs={"memory": "64MB"}), DB)
V2 = doc(NET, compute("web", count=3, network="backend", specs={"memory": "96MB"}), CACHE)
MB = 1024 * 1024


def containers(client: Any, env: str) -> dict[str, list[dict[str, Any]]]:
    """resource name -> [inspect data] of every container labelled for `env`, running or not."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in client.containers.list(all=True, filters={"label": [f"{L.ENV}={env}"]}):
        found[c.labels[L.RESOURCE]].append(client.api.inspect_container(c.id))
    return found


def memory_limits(items: list[dict[str, Any]]) -> list[int]:
    return [i["HostConfig"]["Memory"] for i in items]


def test_deploy_change_deploy_rollback_then_drift_and_reconcile(dockerd, make_env, deploy, users):
    # `deploy` runs the deploy task eagerly after each ipr_deploy commits, for the IPRs deployed by hand below too.
    client = dockerd.client
    config = docker_config(dockerd)
    config["image_map"] = {**config["image_map"], "redis:7.2": TEST_IMAGE}
    env = make_env(engine="docker", config=config, emergency_rollback_allowed=True)

    # 1. Deploy v1: a network, two web containers, a database container, all on the network.
    first = deploy(env, V1)
    assert first.state == IPRState.DEPLOYED, first.failure_reason
    live = containers(client, env.name)
    assert sorted(live) == ["db", "web"]
    assert memory_limits(live["web"]) == [64 * MB, 64 * MB]
    assert all(i["State"]["Running"] for i in live["web"] + live["db"])
    assert live["db"][0]["Config"]["Cmd"] == LONG_RUNNING
    assert list(live["db"][0]["NetworkSettings"]["Networks"]) == [f"aicdn-{env.name}-backend"]
    assert client.networks.list(filters={"label": [f"{L.ENV}={env.name}", f"{L.RESOURCE}=backend"]})
    v1_web_ids = sorted(i["Id"] for i in live["web"])

    # 2. Change: three web containers with more memory, the database goes, a cache comes.
    second = deploy(env, V2)
    assert second.state == IPRState.DEPLOYED, second.failure_reason
    assert {a["name"]: a["action"] for a in second.plan["actions"]} == {
        "backend": "noop",
        "web": "update",
        "cache": "create",
        "db": "delete",
    }
    live = containers(client, env.name)
    assert sorted(live) == ["cache", "web"]
    assert memory_limits(live["web"]) == [96 * MB] * 3
    assert not set(v1_web_ids) & {i["Id"] for i in live["web"]}  # changed limits: new containers
    first.refresh_from_db()
    assert first.state == IPRState.SUPERSEDED
    assert set(ResourceState.objects.filter(environment=env).values_list("name", flat=True)) == {
        "backend",
        "web",
        "cache",
    }

    # 3. Roll back to v1 (an operator, emergency: one approval suffices where the policy allows it).
    rollback = services.ipr_open_rollback(
        author=users["operator"], environment=env, version=first.blueprint_version, emergency=True
    )
    assert (rollback.kind, rollback.emergency, rollback.state) == (IPRKind.ROLLBACK, True, IPRState.OPEN)
    assert {a["name"]: a["action"] for a in rollback.plan["actions"]} == {
        "backend": "noop",
        "web": "update",
        "db": "create",
        "cache": "delete",
    }
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == IPRState.APPROVED
    services.ipr_deploy(actor=users["operator"], ipr_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == IPRState.DEPLOYED, rollback.failure_reason
    env.refresh_from_db()
    assert env.deployed_version_id == first.blueprint_version_id
    live = containers(client, env.name)
    assert sorted(live) == ["db", "web"]
    assert memory_limits(live["web"]) == [64 * MB, 64 * MB]
    assert live["db"][0]["State"]["Running"]
    assert Deployment.objects.get(ipr_id=rollback.pk).result["operations"] == {"skipped": 1, "succeeded": 3}

    # 4. Drift made behind our back: the database container removed, a web container stopped, and a stray
    #    container carrying our labels for a resource nobody records.
    assert drift_check(environment=env).status == "clean"
    client.containers.get(live["db"][0]["Id"]).remove(force=True)
    client.containers.get(live["web"][0]["Id"]).stop(timeout=0)
    stray_labels = L.managed_labels(
        environment=env.name, resource={"name": "stray", "type": "container"}, deployment_id="manual"
    )
    stray = f"aicdn-{env.name}-stray-0"
    client.containers.run(TEST_IMAGE, LONG_RUNNING, name=stray, labels=stray_labels, detach=True, network_mode="none")
    report = drift_check(environment=env)
    assert report.status == "drifted"
    assert report.missing == [{"name": "db", "type": "database"}]
    assert [(c["name"], [r["field"] for r in c["reasons"]]) for c in report.changed] == [("web", ["status"])]
    assert [(u["resource"], u["kind"]) for u in report.unmanaged] == [("stray", "container")]

    # 5. Reconcile: re-apply the deployed version from the drift report, reviewed like any IPR.
    reconcile = services.ipr_open_reconcile(author=users["operator"], environment=env)
    assert reconcile.kind == IPRKind.RECONCILE
    assert {a["name"]: a["action"] for a in reconcile.plan["actions"]} == {
        "backend": "noop",
        "web": "replace",
        "db": "create",
        "stray": "delete",
    }
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=reconcile.pk)
    services.ipr_approve(reviewer=users["reviewer2"], ipr_id=reconcile.pk)
    services.ipr_deploy(actor=users["operator"], ipr_id=reconcile.pk)
    reconcile.refresh_from_db()
    assert reconcile.state == IPRState.DEPLOYED, reconcile.failure_reason
    live = containers(client, env.name)
    assert sorted(live) == ["db", "web"]
    assert all(i["State"]["Running"] for i in live["web"] + live["db"])
    assert len(live["web"]) == 2
    assert drift_check(environment=env).status == "clean"
