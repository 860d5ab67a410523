"""Docker engine specifics against the real test dockerd: the resource mapping, checked through the Docker API."""

from __future__ import annotations

import io
import tarfile

import pytest

from engines import labels as L
from engines.base import EngineContext, EngineError
from engines.docker_engine import PROXY_CONFIG_PATH, DockerEngine
from tests.engines.conftest import docker_config
from tests.engines.dockerd import TEST_IMAGE, Dockerd

pytestmark = pytest.mark.docker


@pytest.fixture
def engine(dockerd: Dockerd) -> DockerEngine:
    return DockerEngine(docker_config(dockerd))


def ctx(env: str, dep: str = "d1") -> EngineContext:
    return EngineContext(environment=env, deployment_id=dep)


def read_file(container, path: str) -> str:  # type: ignore[no-untyped-def]
    bits, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
        member = tar.getmembers()[0]
        return tar.extractfile(member).read().decode()  # type: ignore[union-attr]


def test_stack_on_a_network_with_database_and_load_balancer(engine: DockerEngine, dockerd: Dockerd) -> None:
    c = ctx("stack")
    net = engine.create({"name": "backend", "type": "network", "specs": {"cidr": "172.29.7.0/24"}}, c)
    web = engine.create({"name": "web", "type": "compute", "count": 2, "network": "backend", "specs": {"cpu": 1}}, c)
    db = engine.create(
        {
            "name": "db",
            "type": "database",
            "network": "backend",
            "specs": {"engine": "postgresql", "engine_version": "16"},
        },
        c,
    )
    lb = engine.create(
        {
            "name": "front",
            "type": "loadbalancer",
            "network": "backend",
            "specs": {
                "targets": ["web"],
                "ports": [{"port": 80, "target_port": 8080}],
                "algorithm": "least_connections",
            },
        },
        c,
    )
    client = dockerd.client
    network = client.networks.get(net.object_ids[0])
    assert network.name == "aicdn-stack-backend"
    assert network.attrs["IPAM"]["Config"][0]["Subnet"] == "172.29.7.0/24"
    assert network.attrs["Labels"][L.RESOURCE] == "backend"
    # Containers joined the network under the resource name as a DNS alias, and got addresses in its subnet.
    for cid in web.object_ids:
        attached = client.api.inspect_container(cid)["NetworkSettings"]["Networks"]
        assert list(attached) == ["aicdn-stack-backend"]
        assert "web" in attached["aicdn-stack-backend"]["Aliases"]
        assert attached["aicdn-stack-backend"]["IPAddress"].startswith("172.29.7.")
    assert sorted(web.outputs["containers"]) == ["aicdn-stack-web-0", "aicdn-stack-web-1"]
    # postgres:16 was mapped to the imported stand-in image and runs its long-running command.
    db_attrs = client.api.inspect_container(db.object_ids[0])
    assert db_attrs["Config"]["Image"] == TEST_IMAGE
    assert db_attrs["Config"]["Cmd"] == ["sleep", "86400"]
    assert db_attrs["State"]["Running"] is True
    # The proxy container holds a config that forwards port 80 to every target on 8080.
    proxy = client.containers.get(lb.object_ids[0])
    conf = read_file(proxy, PROXY_CONFIG_PATH)
    assert "server web:8080;" in conf and "listen 80;" in conf and "least_conn;" in conf
    assert lb.outputs["config_path"] == PROXY_CONFIG_PATH
    # The network cannot go while containers use it: a transient error, then it works once they are gone.
    with pytest.raises(EngineError) as info:
        engine.delete("backend", c)
    assert info.value.permanent is False
    for name in ("front", "db", "web"):
        engine.delete(name, c)
    assert engine.delete("backend", c).existed
    assert client.networks.list(names=["aicdn-stack-backend"]) == []


def test_limits_env_and_user_reach_the_container(engine: DockerEngine, dockerd: Dockerd) -> None:
    result = engine.create(
        {
            "name": "app",
            "type": "container",
            "specs": {"cpu": 1.5, "memory": "96MB", "env": {"MODE": "prod", "DEBUG": False}, "run_as_user": 65534},
        },
        ctx("limits"),
    )
    attrs = dockerd.client.api.inspect_container(result.object_ids[0])
    assert attrs["HostConfig"]["NanoCpus"] == 1_500_000_000
    assert attrs["HostConfig"]["Memory"] == 96 * 1024**2
    assert "MODE=prod" in attrs["Config"]["Env"] and "DEBUG=false" in attrs["Config"]["Env"]
    assert attrs["Config"]["User"] == "65534"
    assert attrs["HostConfig"]["NetworkMode"] == "none"


def test_volume_records_size_and_refuses_in_place_change(engine: DockerEngine, dockerd: Dockerd) -> None:
    c = ctx("vol")
    vol = engine.create({"name": "data", "type": "volume", "specs": {"storage": "2GB"}}, c)
    assert vol.object_ids == ["aicdn-vol-data"]
    assert dockerd.client.volumes.get("aicdn-vol-data").attrs["Labels"]["ai-cdn.size-bytes"] == str(2 * 1024**3)
    assert engine.create({"name": "data", "type": "volume", "specs": {"storage": "2GB"}}, c).adopted is True
    with pytest.raises(EngineError) as info:
        engine.update({"name": "data", "type": "volume", "specs": {"storage": "4GB"}}, c)
    assert info.value.permanent is True and info.value.code == "immutable"


def test_missing_image_is_permanent_and_leaves_nothing(dockerd: Dockerd) -> None:
    engine = DockerEngine(docker_config(dockerd, image_map={"ghost:1": "aicdn-test/does-not-exist:1"}))
    c = ctx("noimage")
    with pytest.raises(EngineError) as info:
        engine.create({"name": "x", "type": "container", "specs": {"image": "ghost:1"}}, c)
    assert info.value.permanent is True and info.value.code == "image_not_found"
    assert engine.list_managed(c) == []


def test_name_taken_by_a_foreign_container_is_permanent(engine: DockerEngine, dockerd: Dockerd) -> None:
    dockerd.client.containers.create(TEST_IMAGE, ["sleep", "1"], name="aicdn-clash-web-0")
    with pytest.raises(EngineError) as info:
        engine.create({"name": "web", "type": "compute"}, ctx("clash"))
    assert info.value.permanent is True


def test_a_stopped_container_is_started_when_adopted(engine: DockerEngine, dockerd: Dockerd) -> None:
    c = ctx("restart")
    first = engine.create({"name": "web", "type": "compute"}, c)
    dockerd.client.containers.get(first.object_ids[0]).kill()
    again = engine.create({"name": "web", "type": "compute"}, c)
    assert again.object_ids == first.object_ids and again.status == "running"


def test_validate_config() -> None:
    assert DockerEngine.validate_config({"base_url": "unix:///x", "image_map": {"a": "b"}}) == []
    errors = DockerEngine.validate_config({"image_map": {"a": 3}, "commands": {"b": "sleep"}, "colour": 1})
    assert {e["path"] for e in errors} == {"$.image_map.a", "$.commands.b", "$.colour"}
