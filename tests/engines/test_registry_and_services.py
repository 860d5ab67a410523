"""The registry, environment services (validation + audit), secret resolution, and recorded resource state."""

from __future__ import annotations

import pytest

from aicdn_project.errors import ApplicationError, Conflict, ServiceUnavailable, ValidationFailed
from aicdn_project.models import AuditEvent
from engines import registry
from engines.base import EngineError, ResourceResult
from engines.docker_engine import DockerEngine
from engines.models import Environment, ResourceState, ResourceStatus
from engines.proxmox_engine import ProxmoxEngine
from engines.selectors import deployed_state, environment_engine
from engines.services import environment_create, environment_update, resource_state_record
from engines.simulator import SimulatorEngine

pytestmark = pytest.mark.django_db

PVE = {"host": "pve.example", "node": "pve1", "token_id": "ci@pve!deploy"}


def test_builtin_engines_are_registered() -> None:
    assert registry.engine_kinds() == ["docker", "kubernetes", "proxmox", "simulator"]
    assert registry.get_engine_class("docker") is DockerEngine
    assert registry.get_engine_class("simulator").kind == "simulator"


def test_unknown_kind_is_a_clear_application_error() -> None:
    with pytest.raises(ApplicationError) as info:
        registry.get_engine_class("vmware")
    assert info.value.code == "unknown_engine"
    assert "vmware" in info.value.message and info.value.details["available"] == registry.engine_kinds()


def test_a_kind_cannot_be_registered_twice_by_another_class() -> None:
    with pytest.raises(RuntimeError):

        @registry.register_engine("docker")
        class Impostor(SimulatorEngine):
            pass

    assert registry.get_engine_class("docker") is DockerEngine


def test_engine_error_carries_permanence() -> None:
    err = EngineError("boom", permanent=True)
    assert isinstance(err, ApplicationError)
    assert err.as_dict()["permanent"] is True and EngineError("x").permanent is False


def test_environment_create_validates_and_audits() -> None:
    env = environment_create(actor=None, name="lab", engine="simulator", config={"latency_scale": 0})
    event = AuditEvent.objects.get(action="environment.created")
    assert event.object_id == str(env.pk)
    assert event.after["engine"] == "simulator" and event.after["config"] == {"latency_scale": 0}


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"engine": "vmware"}, None),
        ({"engine": "simulator", "config": {"latency_scale": -2}}, "config.latency_scale"),
        ({"engine": "proxmox", "config": PVE}, "secret_refs.token"),
        ({"engine": "proxmox", "config": PVE, "secret_refs": {"token": "not a var"}}, "secret_refs.token"),
        ({"engine": "docker", "config": {"image_map": []}}, "config.image_map"),
        ({"engine": "simulator", "kind": "space"}, "kind"),
    ],
)
def test_environment_create_rejects_bad_input_without_writing(kwargs: dict, path: str | None) -> None:
    with pytest.raises(ValidationFailed) as info:
        environment_create(actor=None, name="bad", **kwargs)
    if path is not None:
        assert path in [e["path"] for e in info.value.details]
    assert not Environment.objects.filter(name="bad").exists()
    assert not AuditEvent.objects.filter(action="environment.created").exists()


def test_duplicate_environment_is_a_conflict() -> None:
    environment_create(actor=None, name="dup")
    with pytest.raises(Conflict):
        environment_create(actor=None, name="dup")


def test_environment_update_audits_before_and_after() -> None:
    env = environment_create(actor=None, name="stage")
    environment_update(actor=None, environment=env, engine="proxmox", config=PVE, secret_refs={"token": "PVE_TOKEN"})
    event = AuditEvent.objects.get(action="environment.updated")
    assert event.before["engine"] == "simulator" and event.after["engine"] == "proxmox"
    assert event.after["secret_refs"] == {"token": "PVE_TOKEN"}
    env.refresh_from_db()
    assert env.engine == "proxmox"


def test_engine_cannot_change_under_deployed_resources() -> None:
    env = environment_create(actor=None, name="busy")
    resource_state_record(
        environment=env, resource={"name": "web", "type": "compute"}, status="ready", deployment_id="1"
    )
    with pytest.raises(Conflict):
        environment_update(actor=None, environment=env, engine="docker")


def test_secrets_resolve_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment_create(
        actor=None, name="pve", engine="proxmox", config=PVE, secret_refs={"token": "AICDN_TEST_PVE_TOKEN"}
    )
    monkeypatch.delenv("AICDN_TEST_PVE_TOKEN", raising=False)
    with pytest.raises(ServiceUnavailable) as info:
        environment_engine(env, deployment_id="7")
    assert info.value.details["variables"] == ["AICDN_TEST_PVE_TOKEN"]
    monkeypatch.setenv("AICDN_TEST_PVE_TOKEN", "s3cret")
    engine, ctx = environment_engine(env, deployment_id="7")
    assert isinstance(engine, ProxmoxEngine)
    assert engine.secrets == {"token": "s3cret"} and ctx.secrets == {"token": "s3cret"}
    assert ctx.environment == "pve" and ctx.deployment_id == "7"
    assert "s3cret" not in repr(ctx)


def test_deployed_state_and_failed_updates_keep_the_deployed_spec() -> None:
    env = environment_create(actor=None, name="state")
    v1 = {"name": "web", "type": "compute", "specs": {"cpu": 1}}
    v2 = {"name": "web", "type": "compute", "specs": {"cpu": 2}}
    result = ResourceResult(name="web", type="compute", status="running", object_ids=["c1"], outputs={"ip": "10.0.0.2"})
    resource_state_record(environment=env, resource=v1, status=ResourceStatus.READY, deployment_id="1", result=result)
    resource_state_record(
        environment=env, resource=v2, status=ResourceStatus.FAILED, deployment_id="2", error=EngineError("no")
    )
    state = deployed_state(env)
    assert state == {
        "web": {"name": "web", "type": "compute", "spec": v1, "status": "failed", "outputs": {"ip": "10.0.0.2"}}
    }
    row = ResourceState.objects.get(environment=env, name="web")
    assert row.error == "no" and row.engine_object_ids == ["c1"] and row.deployment_id == "2"
