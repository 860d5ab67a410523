"""Fixtures for engine tests: a real dockerd (session), fakepve over HTTPS, kmock's emulator, and one harness per
engine that the shared conformance suite (test_conformance.py) drives."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from engines import labels as L
from engines.base import Engine, EngineContext
from engines.registry import get_engine_class
from tests.engines.dockerd import LONG_RUNNING, TEST_IMAGE, Dockerd, DockerdError
from tests.engines.kube import KubeEmulator

PVE_TOKEN_ID = "root@pam!aicdn"
PVE_TOKEN = "8a1e2c55-0d7b-4bb4-9d0e-5f3c2a1b9e77"
LXC_TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
_envs = itertools.count(1)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """One private dockerd for the session. It must start: a missing or broken daemon fails, never skips."""
    daemon = Dockerd()
    try:
        daemon.start()
        daemon.import_busybox_image(TEST_IMAGE)
    except DockerdError as exc:
        daemon.stop()
        pytest.fail(f"the test dockerd could not start: {exc}", pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()


def docker_config(daemon: Dockerd, **extra: Any) -> dict[str, Any]:
    """An engine config that runs every blueprint image as the imported busybox with a long-running command."""
    return {
        "base_url": daemon.base_url,
        "timeout": 30,
        "default_image": TEST_IMAGE,
        "proxy_image": TEST_IMAGE,
        "image_map": {"postgres:16": TEST_IMAGE, "redis:7": TEST_IMAGE, "nginx:1.27-alpine": TEST_IMAGE},
        "commands": {TEST_IMAGE: LONG_RUNNING},
        **extra,
    }


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def pve(fakepve: Any) -> Any:
    """fakepve (the plugin's per-test fixture, real HTTPS on loopback) with our API token and an LXC template."""
    fakepve.apitokens[PVE_TOKEN_ID] = PVE_TOKEN
    fakepve.store_file("local", LXC_TEMPLATE.split("/", 1)[1], 120 * 1024**2, content="vztmpl")
    return fakepve


def proxmox_config(pve: Any, cafile: str, **extra: Any) -> dict[str, Any]:
    return {
        "host": pve.host,
        "port": pve.port,
        "node": "pve1",
        "token_id": PVE_TOKEN_ID,
        "ca_file": cafile,
        "lxc_template": LXC_TEMPLATE,
        "task_timeout": 5,
        "poll_interval": 0.02,
        "request_timeout": 5,
        **extra,
    }


@dataclass
class Harness:
    """One engine under the conformance suite, with a way to look at the backend behind the engine's back."""

    kind: str
    config: dict[str, Any]
    secrets: dict[str, str]
    # The resource type every engine must support in the suite, and a changed spec for update.
    resource: dict[str, Any]
    updated: dict[str, Any]
    # name, ctx -> [(object id, labels)] read straight from the backend (Docker API, fakepve state, kmock store, DB)
    backend_objects: Callable[[str, EngineContext], list[tuple[str, dict[str, str]]]]
    # resource -> the applied cpu / memory as the backend reports them
    applied_limits: Callable[[dict[str, Any], EngineContext], list[tuple[float, int]]]
    unreachable_config: dict[str, Any] = field(default_factory=dict)

    def engine(self, **overrides: Any) -> Engine:
        return get_engine_class(self.kind)({**self.config, **overrides}, self.secrets)

    def ctx(self, environment: str | None = None, deployment_id: str = "dep-1") -> EngineContext:
        return EngineContext(
            environment=environment or f"ct{next(_envs)}", deployment_id=deployment_id, config=self.config
        )


def _compute(name: str, cpu: float, memory: str) -> dict[str, Any]:
    return {"name": name, "type": "compute", "specs": {"cpu": cpu, "memory": memory, "storage": "10GB"}}


def _simulator_harness() -> Harness:
    from engines.models import SimulatedObject

    def objects(name: str, ctx: EngineContext) -> list[tuple[str, dict[str, str]]]:
        rows = SimulatedObject.objects.filter(cluster="conformance", environment=ctx.environment, resource_name=name)
        return [(r.object_id, r.labels) for r in rows]

    def limits(resource: dict[str, Any], ctx: EngineContext) -> list[tuple[float, int]]:
        from blueprints.validation import parse_size

        rows = SimulatedObject.objects.filter(
            cluster="conformance", environment=ctx.environment, resource_name=resource["name"]
        )
        return [(float(r.spec["specs"]["cpu"]), parse_size(r.spec["specs"]["memory"])) for r in rows]

    return Harness(
        kind="simulator",
        config={"cluster": "conformance", "latency_scale": 0, "seed": 7},
        secrets={},
        resource=_compute("web", 1, "512MB"),
        updated=_compute("web", 2, "1GB"),
        backend_objects=objects,
        applied_limits=limits,
    )


def _docker_harness(daemon: Dockerd) -> Harness:
    client = daemon.client
    assert client is not None

    def containers(name: str, ctx: EngineContext) -> list[Any]:
        flt = {"label": [f"{L.ENV}={ctx.environment}", f"{L.RESOURCE}={name}"]}
        return client.containers.list(all=True, filters=flt)

    def objects(name: str, ctx: EngineContext) -> list[tuple[str, dict[str, str]]]:
        return [(c.id, dict(c.labels)) for c in containers(name, ctx)]

    def limits(resource: dict[str, Any], ctx: EngineContext) -> list[tuple[float, int]]:
        found = []
        for c in containers(resource["name"], ctx):
            host = client.api.inspect_container(c.id)["HostConfig"]
            found.append((host["NanoCpus"] / 1e9, host["Memory"]))
        return found

    return Harness(
        kind="docker",
        config=docker_config(daemon),
        secrets={},
        resource=_compute("web", 0.5, "64MB"),
        updated=_compute("web", 1, "128MB"),
        backend_objects=objects,
        applied_limits=limits,
        unreachable_config={"base_url": f"unix://{daemon.root}/nobody-listens.sock", "timeout": 2},
    )


def _proxmox_harness(pve: Any, cafile: str) -> Harness:
    def guests(name: str, ctx: EngineContext) -> list[Any]:
        found = []
        for vm in list(pve.vms) + list(getattr(pve, "cts", [])):
            labels = L.decode_description(vm.config.get("description"))
            if L.is_managed(labels, environment=ctx.environment, resource_name=name):
                found.append((vm, labels))
        return found

    def objects(name: str, ctx: EngineContext) -> list[tuple[str, dict[str, str]]]:
        return [(f"{vm.node}/qemu/{vm.vmid}", labels) for vm, labels in guests(name, ctx)]

    def limits(resource: dict[str, Any], ctx: EngineContext) -> list[tuple[float, int]]:
        found = []
        for vm, _labels in guests(resource["name"], ctx):
            config = {**vm.config, **{k: v for k, v in vm.pending.items() if v is not None}}
            found.append((float(config["cores"]), int(config["memory"]) * 1024**2))
        return found

    return Harness(
        kind="proxmox",
        config=proxmox_config(pve, cafile),
        secrets={"token": PVE_TOKEN},
        resource=_compute("web", 1, "512MB"),
        updated=_compute("web", 2, "1GB"),
        backend_objects=objects,
        applied_limits=limits,
        unreachable_config={"host": "127.0.0.1", "port": 9, "request_timeout": 2},
    )


def _kubernetes_harness(kube: KubeEmulator) -> Harness:
    def objects(name: str, ctx: EngineContext) -> list[tuple[str, dict[str, str]]]:
        found = []
        for plural in ("deployments", "statefulsets", "services", "persistentvolumeclaims"):
            for obj in kube.objects(plural, f"aicdn-{ctx.environment}"):
                labels = obj["metadata"].get("labels") or {}
                if labels.get(L.RESOURCE) == name:
                    found.append((f"{obj['kind']}/{obj['metadata']['name']}", labels))
        return found

    def limits(resource: dict[str, Any], ctx: EngineContext) -> list[tuple[float, int]]:
        found = []
        for obj in kube.objects("deployments", f"aicdn-{ctx.environment}"):
            if obj["metadata"]["name"] == resource["name"]:
                lim = obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
                found.append((int(lim["cpu"].rstrip("m")) / 1000, int(lim["memory"].rstrip("Mi")) * 1024**2))
        return found

    return Harness(
        kind="kubernetes",
        config={"host": kube.url, "request_timeout": 5},
        secrets={},
        resource=_compute("web", 0.5, "256MB"),
        updated=_compute("web", 1, "512MB"),
        backend_objects=objects,
        applied_limits=limits,
        unreachable_config={"host": "http://127.0.0.1:9", "request_timeout": 2},
    )


ENGINE_KINDS = ["simulator", "docker", "proxmox", "kubernetes"]


@pytest.fixture(params=ENGINE_KINDS)
def harness(request: pytest.FixtureRequest, db: None) -> Harness:
    kind = request.param
    if kind == "simulator":
        from engines.simulator import reset_attempts

        reset_attempts()
        return _simulator_harness()
    if kind == "docker":
        return _docker_harness(request.getfixturevalue("dockerd"))
    if kind == "proxmox":
        return _proxmox_harness(request.getfixturevalue("pve"), request.getfixturevalue("fakepve_cafile"))
    return _kubernetes_harness(request.getfixturevalue("kube"))
