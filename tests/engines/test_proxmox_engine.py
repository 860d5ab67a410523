"""Proxmox engine specifics against fakepve over real HTTPS with an API token: clone, LXC, locks, task timeouts."""

from __future__ import annotations

from typing import Any

import pytest

from engines import labels as L
from engines.base import EngineContext, EngineError
from engines.proxmox_engine import ProxmoxEngine
from tests.engines.conftest import PVE_TOKEN, proxmox_config

WEB = {"name": "web", "type": "compute", "specs": {"cpu": 2, "memory": "2GB", "storage": "20GB"}}


@pytest.fixture
def config(pve: Any, fakepve_cafile: str) -> dict[str, Any]:
    return proxmox_config(pve, fakepve_cafile)


def ctx(env: str = "pve", dep: str = "d1") -> EngineContext:
    return EngineContext(environment=env, deployment_id=dep)


def test_created_vm_has_cloud_init_disk_nic_and_labels(pve: Any, config: dict[str, Any]) -> None:
    result = ProxmoxEngine(config, {"token": PVE_TOKEN}).create(WEB, ctx())
    vm = pve.vm(result.outputs["vmids"][0])
    assert vm.status == "running"
    assert int(vm.config["cores"]) == 2 and int(vm.config["memory"]) == 2048
    assert "size=20G" in vm.config["scsi0"]
    assert vm.config["ipconfig0"] == "ip=dhcp"
    assert vm.config["net0"].startswith("virtio") and "bridge=vmbr0" in vm.config["net0"]
    assert vm.config["tags"] == "ai-cdn"
    labels = L.decode_description(vm.config["description"])
    assert labels[L.ENV] == "pve" and labels[L.RESOURCE] == "web" and labels[L.SPEC_HASH] == L.spec_hash(WEB)
    # Every request carried the API token, never a ticket.
    assert vm.name == "aicdn-pve-web-0"


def test_compute_clones_the_configured_template(pve: Any, config: dict[str, Any]) -> None:
    pve.add_vm(9000, "debian-tpl", template=True, config={"scsi0": "local-lvm:base-9000-disk-0,size=8G", "cores": 1})
    engine = ProxmoxEngine({**config, "template_vmid": 9000}, {"token": PVE_TOKEN})
    result = engine.create(WEB, ctx())
    vm = pve.vm(result.outputs["vmids"][0])
    assert any(t["type"] == "qmclone" and t["id"] == "9000" for t in pve.tasklog)
    assert int(vm.config["cores"]) == 2 and int(vm.config["memory"]) == 2048
    assert L.decode_description(vm.config["description"])[L.SPEC_HASH] == L.spec_hash(WEB)
    assert vm.status == "running"


def test_container_becomes_lxc(pve: Any, config: dict[str, Any]) -> None:
    ct_resource = {"name": "cache", "type": "container", "specs": {"cpu": 1, "memory": "512MB", "storage": "4GB"}}
    result = ProxmoxEngine(config, {"token": PVE_TOKEN}).create(ct_resource, ctx())
    assert result.object_ids[0].startswith("pve1/lxc/")
    ct = pve.guest(result.outputs["vmids"][0])
    assert int(ct.config["memory"]) == 512
    assert ct.config["hostname"] == "aicdn-pve-cache-0"
    assert L.decode_description(ct.config["description"])[L.TYPE] == "container"


def test_a_locked_vm_is_transient_and_clears(pve: Any, config: dict[str, Any]) -> None:
    engine = ProxmoxEngine({**config, "task_timeout": 0.3}, {"token": PVE_TOKEN})
    vmid = engine.create(WEB, ctx()).outputs["vmids"][0]
    updated = {**WEB, "specs": {**WEB["specs"], "cpu": 4}}
    pve.snapshot_lock(vmid)  # left locked, as an interrupted snapshot leaves it
    with pytest.raises(EngineError) as info:
        engine.update(updated, ctx())
    assert info.value.permanent is False and info.value.code == "locked"
    pve.unlock(vmid)
    assert engine.update(updated, ctx()).changed is True
    merged = {**pve.vm(vmid).config, **pve.vm(vmid).pending}
    assert int(merged["cores"]) == 4


def test_a_config_lock_timeout_is_transient(pve: Any, config: dict[str, Any]) -> None:
    engine = ProxmoxEngine(config, {"token": PVE_TOKEN})
    vmid = engine.create(WEB, ctx()).outputs["vmids"][0]
    pve.fail("PUT", f"/nodes/pve1/qemu/{vmid}/config", error="config_lock_timeout", times=1)
    updated = {**WEB, "specs": {**WEB["specs"], "memory": "4GB"}}
    with pytest.raises(EngineError) as info:
        engine.update(updated, ctx())
    assert info.value.permanent is False
    assert "lock" in info.value.message
    assert engine.update(updated, ctx()).changed is True


def test_a_task_that_outlives_the_timeout_is_transient(pve: Any, config: dict[str, Any]) -> None:
    engine = ProxmoxEngine({**config, "task_timeout": 0.3}, {"token": PVE_TOKEN})
    engine.create(WEB, ctx())
    vm = next(v for v in pve.vms if v.name == "aicdn-pve-web-0")
    vm.stop_secs = 600  # PVE seconds; with time_scale 1 the stop task runs for ten minutes
    pve.time_scale = 1.0
    with pytest.raises(EngineError) as info:
        engine.delete("web", ctx())
    assert info.value.permanent is False and info.value.code == "task_timeout"
    assert info.value.details["upid"].startswith("UPID:pve1:")


def test_a_rejected_create_is_permanent(pve: Any, config: dict[str, Any]) -> None:
    pve.fail("POST", "/nodes/pve1/qemu", 500, "unable to create VM - storage 'local-lvm' is full")
    with pytest.raises(EngineError) as info:
        ProxmoxEngine(config, {"token": PVE_TOKEN}).create(WEB, ctx())
    assert info.value.permanent is True
    assert "full" in info.value.message


def test_a_wrong_token_is_permanent(pve: Any, config: dict[str, Any]) -> None:
    with pytest.raises(EngineError) as info:
        ProxmoxEngine(config, {"token": "wrong"}).create(WEB, ctx())
    assert info.value.permanent is True and info.value.details["status"] == 401
    assert pve.vms == []


def test_disks_never_shrink(pve: Any, config: dict[str, Any]) -> None:
    engine = ProxmoxEngine(config, {"token": PVE_TOKEN})
    engine.create(WEB, ctx())
    with pytest.raises(EngineError) as info:
        engine.update({**WEB, "specs": {**WEB["specs"], "storage": "10GB"}}, ctx())
    assert info.value.permanent is True and info.value.code == "shrink_refused"


def test_validate_config_and_required_secret() -> None:
    errors = ProxmoxEngine.validate_config({"host": "pve", "token_id": "aicdn"})
    assert {e["path"] for e in errors} == {"$.node", "$.token_id"}
    assert ProxmoxEngine.required_secrets({}) == ["token"]
    assert ProxmoxEngine.validate_config({"host": "pve", "node": "pve1", "token_id": "ci@pve!deploy"}) == []
