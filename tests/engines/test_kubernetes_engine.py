"""Kubernetes engine specifics through the real client against kmock's emulator (namespace fix in kube.py)."""

from __future__ import annotations

from typing import Any

import pytest

from engines import labels as L
from engines.base import EngineContext, EngineError
from engines.kubernetes_engine import LB_LABEL_PREFIX, KubernetesEngine
from tests.engines.kube import KubeEmulator


@pytest.fixture
def engine(kube: KubeEmulator) -> KubernetesEngine:
    return KubernetesEngine({"host": kube.url, "request_timeout": 5})


def ctx(env: str = "k", dep: str = "d1") -> EngineContext:
    return EngineContext(environment=env, deployment_id=dep)


def only(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    matches = [o for o in objs if o["metadata"]["name"] == name]
    assert len(matches) == 1, matches
    return matches[0]


def test_namespace_per_environment_is_created_once_with_labels(engine: KubernetesEngine, kube: KubeEmulator) -> None:
    engine.create({"name": "web", "type": "compute"}, ctx("blue"))
    engine.create({"name": "api", "type": "compute"}, ctx("blue"))
    engine.create({"name": "web", "type": "compute"}, ctx("green"))
    namespaces = {n["metadata"]["name"]: n["metadata"]["labels"] for n in kube.objects("namespaces")}
    assert namespaces == {
        "aicdn-blue": {L.MANAGED: "true", L.ENV: "blue"},
        "aicdn-green": {L.MANAGED: "true", L.ENV: "green"},
    }
    assert {d["metadata"]["name"] for d in kube.objects("deployments", "aicdn-blue")} == {"web", "api"}


def test_compute_is_a_deployment_with_limits_ports_and_a_service(engine: KubernetesEngine, kube: KubeEmulator) -> None:
    resource = {
        "name": "web",
        "type": "compute",
        "count": 3,
        "specs": {"cpu": 0.25, "memory": "256MB", "image": "nginx:1.27", "ports": [8080], "env": {"A": 1}},
    }
    result = engine.create(resource, ctx())
    assert result.object_ids == ["Deployment/aicdn-k/web", "Service/aicdn-k/web"]
    dep = only(kube.objects("deployments", "aicdn-k"), "web")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"]["matchLabels"] == {L.ENV: "k", L.RESOURCE: "web"}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.27"
    assert container["resources"]["limits"] == {"cpu": "250m", "memory": "256Mi"}
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert container["env"] == [{"name": "A", "value": "1"}]
    svc = only(kube.objects("services", "aicdn-k"), "web")
    assert svc["spec"]["selector"] == {L.ENV: "k", L.RESOURCE: "web"}
    assert result.outputs["host"] == "web.aicdn-k.svc"


def test_database_is_a_statefulset_with_a_headless_service(engine: KubernetesEngine, kube: KubeEmulator) -> None:
    db = {"name": "db", "type": "database", "specs": {"engine": "postgresql", "engine_version": "16", "replicas": 2}}
    engine.create(db, ctx())
    sts = only(kube.objects("statefulsets", "aicdn-k"), "db")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "db"
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "postgres:16"
    svc = only(kube.objects("services", "aicdn-k"), "db")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["port"] == 5432


def test_load_balancer_service_selects_its_labelled_targets(engine: KubernetesEngine, kube: KubeEmulator) -> None:
    c = ctx()
    engine.create({"name": "web", "type": "compute", "specs": {"ports": [8080]}}, c)
    engine.create({"name": "api", "type": "compute", "specs": {"ports": [9000]}}, c)
    lb = {"name": "front", "type": "loadbalancer", "specs": {"targets": ["web", "api"], "ports": [80]}}
    result = engine.create(lb, c)
    svc = only(kube.objects("services", "aicdn-k"), "front")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["selector"] == {LB_LABEL_PREFIX + "front": "true"}
    for target in ("web", "api"):
        dep = only(kube.objects("deployments", "aicdn-k"), target)
        assert dep["spec"]["template"]["metadata"]["labels"][LB_LABEL_PREFIX + "front"] == "true"
    assert result.status == "pending"  # no ingress address assigned yet
    # Dropping a target unlabels it; deleting the LB unlabels the rest.
    engine.update({**lb, "specs": {"targets": ["web"], "ports": [80]}}, c)
    api = only(kube.objects("deployments", "aicdn-k"), "api")
    assert api["spec"]["template"]["metadata"]["labels"].get(LB_LABEL_PREFIX + "front") is None
    engine.delete("front", c)
    web = only(kube.objects("deployments", "aicdn-k"), "web")
    assert web["spec"]["template"]["metadata"]["labels"].get(LB_LABEL_PREFIX + "front") is None


def test_volume_is_a_pvc(engine: KubernetesEngine, kube: KubeEmulator) -> None:
    eng = KubernetesEngine({**engine.config, "storage_class": "fast"})
    eng.create({"name": "data", "type": "volume", "specs": {"storage": "5GB"}}, ctx())
    pvc = only(kube.objects("persistentvolumeclaims", "aicdn-k"), "data")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5120Mi"
    assert pvc["spec"]["storageClassName"] == "fast"


def test_a_lost_create_response_is_transient_and_the_retry_adopts(engine: KubernetesEngine, kube: KubeEmulator) -> None:
    engine.create({"name": "seed", "type": "compute"}, ctx())  # the namespace exists
    # kmock stores the object and then answers with the injected 503: a response lost after the write.
    reaction = kube.handler["post /apis/apps/v1/namespaces/aicdn-k/deployments"] << 503
    with pytest.raises(EngineError) as info:
        engine.create({"name": "web", "type": "compute"}, ctx())
    assert info.value.permanent is False and info.value.details["status"] == 503
    kube.handler._payloads.remove(reaction)
    retry = engine.create({"name": "web", "type": "compute"}, ctx())
    assert retry.adopted is True
    assert len([d for d in kube.objects("deployments", "aicdn-k") if d["metadata"]["name"] == "web"]) == 1


def test_a_forbidden_request_is_permanent(engine: KubernetesEngine, kube: KubeEmulator) -> None:
    engine.create({"name": "seed", "type": "compute"}, ctx())
    kube.handler["patch /apis/apps/v1/namespaces/aicdn-k/deployments/seed"] << 403
    with pytest.raises(EngineError) as info:
        engine.update({"name": "seed", "type": "compute", "specs": {"cpu": 2}}, ctx())
    assert info.value.permanent is True and info.value.details["status"] == 403


def test_an_object_we_do_not_manage_is_never_taken_over(engine: KubernetesEngine, kube: KubeEmulator) -> None:
    engine.create({"name": "seed", "type": "compute"}, ctx())
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"team": "other"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
        },
    }
    from kubernetes import client

    api = client.AppsV1Api(engine.api_client)
    api.create_namespaced_deployment("aicdn-k", foreign, _preload_content=False)
    with pytest.raises(EngineError) as info:
        engine.create({"name": "web", "type": "compute"}, ctx())
    assert info.value.permanent is True
    assert only(kube.objects("deployments", "aicdn-k"), "web")["metadata"]["labels"] == {"team": "other"}
    assert {m.name for m in engine.list_managed(ctx())} == {"seed"}


def test_deployment_ids_must_be_label_values(engine: KubernetesEngine) -> None:
    with pytest.raises(EngineError) as info:
        engine.create({"name": "web", "type": "compute"}, ctx(dep="not a label!"))
    assert info.value.permanent is True


def test_validate_config() -> None:
    assert KubernetesEngine.validate_config({"host": "https://k8s:6443", "verify_ssl": True}) == []
    assert {e["path"] for e in KubernetesEngine.validate_config({"verify_ssl": "yes"})} == {"$.host", "$.verify_ssl"}
