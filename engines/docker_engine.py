"""The Docker engine: containers, networks and volumes through the Docker SDK; see docs/engines.md for the mapping."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from blueprints.validation import SizeError, parse_size
from engines import labels as L
from engines.base import (
    ConvergingEngine,
    DeleteResult,
    EngineContext,
    EngineError,
    HealthReport,
    ManagedObject,
    ResourceResult,
    check_config_keys,
    instance_count,
    specs_of,
)
from engines.images import resolve_image, resource_ports
from engines.registry import register_engine

PROXY_CONFIG_PATH = "/etc/nginx/nginx.conf"


@contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Map Docker SDK failures to EngineError: 4xx and missing images are permanent, the rest transient."""
    try:
        yield
    except EngineError:
        raise
    except docker.errors.ImageNotFound as exc:
        message = f"{what}: image not found: {exc.explanation}"
        raise EngineError(message, permanent=True, code="image_not_found") from exc
    except docker.errors.NotFound as exc:
        raise EngineError(f"{what}: not found: {exc.explanation}", permanent=False, code="not_found") from exc
    except docker.errors.APIError as exc:
        status = exc.status_code or 500
        # 409 is a conflict with a state that changes (removal in progress); dockerd answers 403 for a network
        # that still has endpoints and 409 for a volume in use: both pass once the users are gone.
        explanation = str(exc.explanation or "").lower()
        in_use = "active endpoints" in explanation or "in use" in explanation
        permanent = 400 <= status < 500 and status != 409 and not in_use
        raise EngineError(
            f"{what}: docker answered {status}: {exc.explanation}",
            permanent=permanent,
            details={"status": status},
        ) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise EngineError(f"{what}: docker daemon unreachable: {exc}", permanent=False, code="unreachable") from exc
    except docker.errors.DockerException as exc:
        raise EngineError(f"{what}: {exc}", permanent=False) from exc


def _known(value: str | None) -> str:
    """An id or name the daemon always reports for an object it listed or inspected (the SDK types it optional)."""
    assert value is not None
    return value


@register_engine("docker")
class DockerEngine(ConvergingEngine):
    """Config: base_url (e.g. unix:///run/docker.sock; default: DOCKER_HOST / the local socket), timeout (s),
    image_map ({blueprint image: local image}), default_image (for resources that name no image),
    commands ({local image: [argv]}: a command for images that need one), proxy_image, network_driver,
    engine_images ({engine: "image:{version}"}), stop_timeout (s).
    """

    resource_types = frozenset({"compute", "container", "database", "cache", "loadbalancer", "network", "volume"})

    CONFIG_TYPES: Mapping[str, type | tuple[type, ...]] = {
        "base_url": str,
        "timeout": (int, float),
        "image_map": dict,
        "default_image": str,
        "commands": dict,
        "proxy_image": str,
        "network_driver": str,
        "engine_images": dict,
        "stop_timeout": int,
    }

    def __init__(self, config: Mapping[str, Any] | None = None, secrets: Mapping[str, str] | None = None) -> None:
        super().__init__(config, secrets)
        self._client: docker.DockerClient | None = None

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> list[dict[str, str]]:
        errors = check_config_keys(config, cls.CONFIG_TYPES)
        for key in ("image_map", "engine_images"):
            for k, v in (config.get(key) or {}).items() if isinstance(config.get(key), dict) else []:
                if not isinstance(v, str) or not v:
                    errors.append({"path": f"$.{key}.{k}", "message": "must be an image reference"})
        commands = config.get("commands")
        for k, v in commands.items() if isinstance(commands, dict) else []:
            if not isinstance(v, list) or not v or not all(isinstance(a, str) for a in v):
                errors.append({"path": f"$.commands.{k}", "message": "must be a non-empty list of strings"})
        return errors

    # ----------------------------------------------------------------- client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            timeout = int(self.config.get("timeout", 60))
            with docker_errors("connecting to docker"):
                if self.config.get("base_url"):
                    self._client = docker.DockerClient(base_url=self.config["base_url"], timeout=timeout)
                else:
                    self._client = docker.from_env(timeout=timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @staticmethod
    def object_name(ctx: EngineContext, name: str, instance: int | None = None) -> str:
        base = f"aicdn-{ctx.environment}-{name}"
        return base if instance is None else f"{base}-{instance}"

    @staticmethod
    def _filters(ctx: EngineContext, name: str | None = None) -> dict[str, str | list[str] | bool]:
        selected = [f"{L.MANAGED}=true", f"{L.ENV}={ctx.environment}"]
        if name is not None:
            selected.append(f"{L.RESOURCE}={name}")
        return {"label": selected}

    # ------------------------------------------------------------ image choice

    def resolve_image(self, resource: Mapping[str, Any]) -> tuple[str, list[str] | None]:
        return resolve_image(resource, self.config)

    # ---------------------------------------------------------- containers

    def _managed_containers(self, ctx: EngineContext, name: str | None = None) -> list[Container]:
        with docker_errors("listing containers"):
            return list(self.client.containers.list(all=True, filters=self._filters(ctx, name)))

    def _network_for(self, resource: Mapping[str, Any], ctx: EngineContext) -> Any | None:
        net_name = resource.get("network")
        if not net_name:
            return None
        with docker_errors(f"finding network {net_name}"):
            nets = self.client.networks.list(filters=self._filters(ctx, str(net_name)))
        if not nets:
            # The DAG creates networks first; missing here means it is still being made or was removed.
            raise EngineError(
                f"network {net_name!r} of {resource['name']!r} does not exist in {ctx.environment!r}",
                permanent=False,
                code="dependency_missing",
            )
        return nets[0]

    def _proxy_config(self, resource: Mapping[str, Any]) -> str:
        """An nginx config that forwards each load balancer port to every target, by its network alias."""
        specs = specs_of(resource)
        targets = list(specs.get("targets") or [])
        if not targets:
            raise EngineError(f"load balancer {resource['name']!r} has no targets", permanent=True)
        algorithm = {"least_connections": "least_conn;", "ip_hash": "hash $remote_addr consistent;"}.get(
            str(specs.get("algorithm", "round_robin")), ""
        )
        lines = ["# generated by ai-cdn; do not edit", "events {}", "stream {"]
        for port, target_port, _proto in resource_ports(resource):
            upstream = f"{resource['name']}_{port}".replace("-", "_")
            lines.append(f"  upstream {upstream} {{")
            if algorithm:
                lines.append(f"    {algorithm}")
            lines += [f"    server {target}:{target_port};" for target in targets]
            lines += ["  }", f"  server {{ listen {port}; proxy_pass {upstream}; }}"]
        lines.append("}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _tar_file(path: str, content: str) -> bytes:
        data = content.encode("utf-8")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def _create_container(self, resource: Mapping[str, Any], ctx: EngineContext, instance: int) -> Container:
        specs = specs_of(resource)
        image, command = self.resolve_image(resource)
        kwargs: dict[str, Any] = {
            "name": self.object_name(ctx, str(resource["name"]), instance),
            "labels": L.managed_labels(
                environment=ctx.environment, resource=resource, deployment_id=ctx.deployment_id, instance=instance
            ),
            "detach": True,
            "restart_policy": {"Name": "unless-stopped"},
            "hostname": f"{resource['name']}-{instance}",
        }
        if command:
            kwargs["command"] = command
        if specs.get("cpu"):
            kwargs["nano_cpus"] = int(float(specs["cpu"]) * 1_000_000_000)
        if specs.get("memory"):
            try:
                kwargs["mem_limit"] = parse_size(str(specs["memory"]))
            except SizeError as exc:
                raise EngineError(str(exc), permanent=True) from exc
        if specs.get("env"):
            kwargs["environment"] = {
                k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in specs["env"].items()
            }
        if specs.get("read_only_root"):
            kwargs["read_only"] = True
        if specs.get("run_as_user") is not None:
            kwargs["user"] = str(specs["run_as_user"])
        network = self._network_for(resource, ctx)
        if network is None:
            kwargs["network_mode"] = "none"
        else:
            # Join only our network (not the default bridge), reachable by the resource name as a DNS alias.
            kwargs["network"] = network.name
            kwargs["networking_config"] = {
                network.name: self.client.api.create_endpoint_config(aliases=[str(resource["name"])])
            }
        with docker_errors(f"creating container {kwargs['name']}"):
            container = self.client.containers.create(image, **kwargs)
        try:
            with docker_errors(f"configuring container {kwargs['name']}"):
                if resource["type"] == "loadbalancer":
                    container.put_archive("/", self._tar_file(PROXY_CONFIG_PATH, self._proxy_config(resource)))
                container.start()
        except EngineError:
            # A half-made container would be adopted by a retry as if it were complete: remove it first.
            with docker_errors(f"cleaning up container {kwargs['name']}"):
                container.remove(force=True)
            raise
        return container

    def _remove_container(self, container: Container) -> None:
        with docker_errors(f"removing container {container.name}"), suppress(docker.errors.NotFound):
            container.remove(force=True)

    def _ensure_containers(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult:
        name, count = str(resource["name"]), instance_count(resource)
        wanted = L.spec_hash(resource)
        adopted = changed = False
        by_instance: dict[int, Container] = {}
        for c in self._managed_containers(ctx, name):
            idx = int(c.labels.get(L.INSTANCE, "0"))
            if idx >= count or idx in by_instance:
                self._remove_container(c)
                changed = True
            else:
                by_instance[idx] = c
        for i in range(count):
            current = by_instance.get(i)
            if current is not None and current.labels.get(L.SPEC_HASH) == wanted:
                adopted = True
                if current.status in ("created", "exited"):
                    with docker_errors(f"starting container {current.name}"):
                        current.start()
                continue
            if current is not None:
                # Labels and images of a container are fixed at creation: a changed spec means a new container.
                self._remove_container(current)
            try:
                by_instance[i] = self._create_container(resource, ctx, i)
            except EngineError as exc:
                if exc.details.get("status") != 409:
                    raise
                by_instance[i] = self._adopt_by_name(resource, ctx, i)
                adopted = True
            changed = True
        containers = [by_instance[i] for i in range(count)]
        return self._container_result(resource["type"], name, containers, adopted=adopted, changed=changed)

    def _adopt_by_name(self, resource: Mapping[str, Any], ctx: EngineContext, instance: int) -> Container:
        """The name was taken: ours (a concurrent try made it, adopt) or someone else's (a permanent clash)."""
        cname = self.object_name(ctx, str(resource["name"]), instance)
        with docker_errors(f"inspecting container {cname}"):
            container = self.client.containers.get(cname)
        if not L.is_managed(container.labels, environment=ctx.environment, resource_name=str(resource["name"])):
            raise EngineError(f"container name {cname!r} is taken by an object ai-cdn does not manage", permanent=True)
        return container

    def _container_result(
        self, rtype: str, name: str, containers: list[Container], *, adopted: bool, changed: bool
    ) -> ResourceResult:
        outputs: dict[str, Any] = {"containers": [], "addresses": []}
        statuses = set()
        for c in containers:
            with docker_errors(f"inspecting container {c.name}"):
                c.reload()
            statuses.add(c.status)
            outputs["containers"].append(c.name)
            nets = c.attrs.get("NetworkSettings", {}).get("Networks") or {}
            outputs["addresses"] += [n["IPAddress"] for n in nets.values() if n.get("IPAddress")]
        first = containers[0]
        outputs["image"] = first.attrs.get("Config", {}).get("Image", "")
        outputs["host"] = name
        if rtype == "loadbalancer":
            outputs["config_path"] = PROXY_CONFIG_PATH
        return ResourceResult(
            name=name,
            type=rtype,
            status="running" if statuses == {"running"} else ",".join(sorted(statuses)),
            object_ids=[_known(c.id) for c in containers],
            outputs=outputs,
            labels=dict(first.labels),
            adopted=adopted,
            changed=changed,
        )

    # ---------------------------------------------------- networks, volumes

    def _ensure_network(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult:
        name = str(resource["name"])
        wanted = L.spec_hash(resource)
        labels = L.managed_labels(environment=ctx.environment, resource=resource, deployment_id=ctx.deployment_id)
        with docker_errors(f"listing networks for {name}"):
            nets = self.client.networks.list(filters=self._filters(ctx, name))
        adopted = changed = False
        net = nets[0] if nets else None
        if net is not None and net.attrs.get("Labels", {}).get(L.SPEC_HASH) != wanted:
            # A network's subnet and labels are fixed at creation; it must be empty to be remade.
            with docker_errors(f"replacing network {net.name}"):
                net.remove()
            net = None
        if net is None:
            specs = specs_of(resource)
            ipam = None
            if specs.get("cidr"):
                ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(specs["cidr"]))])
            with docker_errors(f"creating network {name}"):
                net = self.client.networks.create(
                    self.object_name(ctx, name),
                    driver=str(self.config.get("network_driver", "bridge")),
                    labels=labels,
                    ipam=ipam,
                    check_duplicate=True,
                )
            changed = True
        else:
            adopted = True
        with docker_errors(f"inspecting network {name}"):
            net.reload()
        configs = (net.attrs.get("IPAM") or {}).get("Config") or []
        return ResourceResult(
            name=name,
            type="network",
            status="available",
            object_ids=[_known(net.id)],
            outputs={"network": net.name, "cidr": configs[0].get("Subnet", "") if configs else ""},
            labels=dict(net.attrs.get("Labels") or {}),
            adopted=adopted,
            changed=changed,
        )

    def _ensure_volume(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult:
        name = str(resource["name"])
        wanted = L.spec_hash(resource)
        labels = L.managed_labels(environment=ctx.environment, resource=resource, deployment_id=ctx.deployment_id)
        specs = specs_of(resource)
        if specs.get("storage"):
            try:
                # The local driver cannot cap a volume: the size is recorded, not enforced (docs/engines.md).
                labels["ai-cdn.size-bytes"] = str(parse_size(str(specs["storage"])))
            except SizeError as exc:
                raise EngineError(str(exc), permanent=True) from exc
        with docker_errors(f"listing volumes for {name}"):
            vols = self.client.volumes.list(filters=self._filters(ctx, name))
        adopted = changed = False
        vol = vols[0] if vols else None
        if vol is not None and (vol.attrs.get("Labels") or {}).get(L.SPEC_HASH) != wanted:
            raise EngineError(
                f"volume {name!r} cannot be changed in place (it holds data); replace it explicitly",
                permanent=True,
                code="immutable",
            )
        if vol is None:
            with docker_errors(f"creating volume {name}"):
                vol = self.client.volumes.create(name=self.object_name(ctx, name), driver="local", labels=labels)
            changed = True
        else:
            adopted = True
        vol_labels = dict(vol.attrs.get("Labels") or {})
        return ResourceResult(
            name=name,
            type="volume",
            status="available",
            object_ids=[vol.name],
            outputs={"volume": vol.name, "size_bytes": int(vol_labels.get("ai-cdn.size-bytes", "0"))},
            labels=vol_labels,
            adopted=adopted,
            changed=changed,
        )

    def _converge(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult:
        self.check_supported(resource)
        if resource["type"] == "network":
            return self._ensure_network(resource, ctx)
        if resource["type"] == "volume":
            return self._ensure_volume(resource, ctx)
        return self._ensure_containers(resource, ctx)

    # ------------------------------------------------------------- interface

    def health(self) -> HealthReport:
        started = time.monotonic()
        try:
            with docker_errors("docker health"):
                self.client.ping()
                version = self.client.version()
        except EngineError as exc:
            return HealthReport(False, exc.message, (time.monotonic() - started) * 1000)
        detail = f"docker {version.get('Version')} (API {version.get('ApiVersion')})"
        return HealthReport(True, detail, (time.monotonic() - started) * 1000)

    def read(self, name: str, ctx: EngineContext) -> ResourceResult | None:
        containers = self._managed_containers(ctx, name)
        if containers:
            containers.sort(key=lambda c: int(c.labels.get(L.INSTANCE, "0")))
            rtype = containers[0].labels.get(L.TYPE, "container")
            return self._container_result(rtype, name, containers, adopted=False, changed=False)
        with docker_errors(f"reading {name}"):
            nets = self.client.networks.list(filters=self._filters(ctx, name))
            vols = self.client.volumes.list(filters=self._filters(ctx, name))
        if nets:
            net = nets[0]
            configs = (net.attrs.get("IPAM") or {}).get("Config") or []
            return ResourceResult(
                name=name,
                type="network",
                status="available",
                object_ids=[_known(net.id)],
                outputs={"network": net.name, "cidr": configs[0].get("Subnet", "") if configs else ""},
                labels=dict(net.attrs.get("Labels") or {}),
                changed=False,
            )
        if vols:
            vol = vols[0]
            vol_labels = dict(vol.attrs.get("Labels") or {})
            return ResourceResult(
                name=name,
                type="volume",
                status="available",
                object_ids=[vol.name],
                outputs={"volume": vol.name, "size_bytes": int(vol_labels.get("ai-cdn.size-bytes", "0"))},
                labels=vol_labels,
                changed=False,
            )
        return None

    def delete(self, name: str, ctx: EngineContext) -> DeleteResult:
        deleted: list[str] = []
        for c in self._managed_containers(ctx, name):
            self._remove_container(c)
            deleted.append(_known(c.id))
        with docker_errors(f"deleting {name}"):
            for net in self.client.networks.list(filters=self._filters(ctx, name)):
                try:
                    net.remove()
                except docker.errors.NotFound:
                    continue
                deleted.append(_known(net.id))
            for vol in self.client.volumes.list(filters=self._filters(ctx, name)):
                try:
                    vol.remove()
                except docker.errors.NotFound:
                    continue
                deleted.append(vol.name)
        return DeleteResult(name=name, deleted_ids=deleted)

    def list_managed(self, ctx: EngineContext) -> list[ManagedObject]:
        found: list[ManagedObject] = []
        for c in self._managed_containers(ctx):
            found.append(ManagedObject("container", _known(c.id), _known(c.name), dict(c.labels)))
        with docker_errors("listing managed networks and volumes"):
            for net in self.client.networks.list(filters=self._filters(ctx)):
                found.append(
                    ManagedObject("network", _known(net.id), _known(net.name), dict(net.attrs.get("Labels") or {}))
                )
            for vol in self.client.volumes.list(filters=self._filters(ctx)):
                found.append(ManagedObject("volume", vol.name, vol.name, dict(vol.attrs.get("Labels") or {})))
        return found
