"""The Proxmox VE engine: compute -> QEMU VM (clone or create, cloud-init), container -> LXC, over the HTTPS API."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests.exceptions
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

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
from engines.registry import register_engine

TAG = "ai-cdn"
GIB = 1024**3
MIB = 1024**2
# Messages of PVE failures that pass when retried: config locks, task timeouts, quorum, unreachable nodes.
TRANSIENT_MARKERS = ("lock", "got timeout", "timed out", "no quorum", "no route to host", "temporarily", "try again")


def _is_transient_message(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in TRANSIENT_MARKERS)


@contextmanager
def pve_errors(what: str) -> Iterator[None]:
    """Map proxmoxer / requests failures to EngineError with the right `permanent` flag."""
    try:
        yield
    except EngineError:
        raise
    except ResourceException as exc:
        status = int(exc.status_code or 500)
        message = f"{exc.status_message}: {exc.content}" if exc.content else str(exc.status_message)
        if exc.errors:
            message += f" {exc.errors}"
        transient = status in (502, 503, 504, 595, 596) or (status >= 500 and _is_transient_message(message))
        raise EngineError(
            f"{what}: proxmox answered {status} {message}", permanent=not transient, details={"status": status}
        ) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise EngineError(f"{what}: proxmox unreachable: {exc}", permanent=False, code="unreachable") from exc


@dataclass
class Guest:
    node: str
    kind: str  # "qemu" or "lxc"
    vmid: int
    name: str
    status: str
    labels: dict[str, str]
    config: dict[str, Any]

    @property
    def object_id(self) -> str:
        return f"{self.node}/{self.kind}/{self.vmid}"

    @property
    def instance(self) -> int:
        return int(self.labels.get(L.INSTANCE, "0"))

    @property
    def locked(self) -> bool:
        return bool(self.config.get("lock"))


@register_engine("proxmox")
class ProxmoxEngine(ConvergingEngine):
    """Config: host, port (8006), node, token_id ("user@realm!tokenid"; its secret is the `token` secret_ref),
    verify_ssl (true), ca_file, template_vmid (clone source for compute; else VMs are created), storage
    ("local-lvm"), bridge ("vmbr0"), lxc_template (ostemplate volume id), lxc_templates ({image: volid}),
    ci_user, ssh_keys, task_timeout (s, 300), request_timeout (s, 30), poll_interval (s, 0.5).
    """

    resource_types = frozenset({"compute", "container"})

    CONFIG_TYPES: Mapping[str, type | tuple[type, ...]] = {
        "host": str,
        "port": int,
        "node": str,
        "token_id": str,
        "verify_ssl": bool,
        "ca_file": str,
        "template_vmid": int,
        "storage": str,
        "bridge": str,
        "lxc_template": str,
        "lxc_templates": dict,
        "ci_user": str,
        "ssh_keys": str,
        "task_timeout": (int, float),
        "request_timeout": (int, float),
        "poll_interval": (int, float),
    }
    REQUIRED = ("host", "node", "token_id")

    def __init__(self, config: Mapping[str, Any] | None = None, secrets: Mapping[str, str] | None = None) -> None:
        super().__init__(config, secrets)
        self._api: Any = None

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> list[dict[str, str]]:
        errors = check_config_keys(config, cls.CONFIG_TYPES)
        for key in cls.REQUIRED:
            if key not in config:
                errors.append({"path": f"$.{key}", "message": "is required"})
        token_id = config.get("token_id")
        if isinstance(token_id, str) and ("@" not in token_id or "!" not in token_id):
            errors.append({"path": "$.token_id", "message": "must look like user@realm!tokenid"})
        return errors

    @classmethod
    def required_secrets(cls, config: Mapping[str, Any]) -> list[str]:
        return ["token"]

    # ------------------------------------------------------------------- api

    @property
    def api(self) -> Any:
        if self._api is None:
            token_id = str(self.config["token_id"])
            user, _, token_name = token_id.partition("!")
            if "token" not in self.secrets:
                raise EngineError("the proxmox engine needs the `token` secret", permanent=True, code="secret_missing")
            verify: bool | str = self.config.get("ca_file") or bool(self.config.get("verify_ssl", True))
            self._api = ProxmoxAPI(
                self.config["host"],
                port=int(self.config.get("port", 8006)),
                user=user,
                token_name=token_name,
                token_value=self.secrets["token"],
                verify_ssl=verify,
                timeout=float(self.config.get("request_timeout", 30)),
                backend="https",
                service="PVE",
            )
        return self._api

    @property
    def node(self) -> str:
        return str(self.config["node"])

    def _wait_task(self, upid: str, what: str, timeout: float | None = None) -> None:
        """Poll a task's UPID until it stops; its exit status decides success."""
        node = upid.split(":")[1] if upid.startswith("UPID:") else self.node
        limit = float(timeout if timeout is not None else self.config.get("task_timeout", 300))
        interval = float(self.config.get("poll_interval", 0.5))
        deadline = time.monotonic() + limit
        while True:
            with pve_errors(f"{what}: task status"):
                status = self.api.nodes(node).tasks(upid).status.get()
            if status.get("status") == "stopped":
                exit_status = str(status.get("exitstatus", ""))
                if exit_status == "OK" or exit_status.startswith("WARNINGS"):
                    return
                raise EngineError(
                    f"{what}: task failed: {exit_status}",
                    permanent=not _is_transient_message(exit_status),
                    code="task_failed",
                    details={"upid": upid, "exitstatus": exit_status},
                )
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"{what}: task {upid} still running after {limit:g}s",
                    permanent=False,
                    code="task_timeout",
                    details={"upid": upid},
                )
            time.sleep(interval)

    def _call_task(self, what: str, call: Callable[[], Any]) -> None:
        with pve_errors(what):
            upid = call()
        if isinstance(upid, str) and upid.startswith("UPID:"):
            self._wait_task(upid, what)

    def _guest_api(self, guest: Guest) -> Any:
        return getattr(self.api.nodes(guest.node), guest.kind)(guest.vmid)

    # ---------------------------------------------------------------- lookup

    @staticmethod
    def guest_name(ctx: EngineContext, name: str, instance: int) -> str:
        return f"aicdn-{ctx.environment}-{name}-{instance}".lower()[:63]

    def _guests(self, ctx: EngineContext, name: str | None = None) -> list[Guest]:
        """Guests whose description carries our labels for this environment (and resource)."""
        prefix = f"aicdn-{ctx.environment}-".lower()
        with pve_errors("listing guests"):
            items = self.api.cluster.resources.get(type="vm")
        found = []
        for item in items:
            tags = str(item.get("tags") or "").replace(",", ";").split(";")
            # A clone carries our description before its tags are set: match the name as well as the tag.
            if TAG not in tags and not str(item.get("name", "")).startswith(prefix):
                continue
            kind = item.get("type", "qemu")
            node, vmid = item["node"], int(item["vmid"])
            with pve_errors(f"reading {kind} {vmid}"):
                try:
                    config = getattr(self.api.nodes(node), kind)(vmid).config.get()
                except ResourceException as exc:
                    if "does not exist" in str(exc.content) or exc.status_code == 404:
                        continue  # destroyed between the listing and this read
                    raise
            labels = L.decode_description(config.get("description"))
            if L.is_managed(labels, environment=ctx.environment, resource_name=name):
                guest = Guest(node, kind, vmid, str(item.get("name", "")), str(item.get("status")), labels, config)
                found.append(guest)
        return sorted(found, key=lambda g: (g.labels.get(L.RESOURCE, ""), g.instance, g.vmid))

    def _refresh(self, guest: Guest) -> Guest:
        with pve_errors(f"reading {guest.object_id}"):
            api = self._guest_api(guest)
            config = api.config.get()
            status = api.status.current.get()
        guest.config, guest.status = config, str(status.get("status"))
        guest.labels = L.decode_description(config.get("description"))
        return guest

    def _wait_unlocked(self, guest: Guest) -> Guest:
        """A guest still locked by its create / clone task (a previous try's) is waited for, not touched."""
        limit = float(self.config.get("task_timeout", 300))
        deadline = time.monotonic() + limit
        while self._refresh(guest).locked:
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"{guest.object_id} stayed locked ({guest.config.get('lock')}) for {limit:g}s",
                    permanent=False,
                    code="locked",
                )
            time.sleep(float(self.config.get("poll_interval", 0.5)))
        return guest

    def _next_vmid(self) -> int:
        with pve_errors("allocating a VM id"):
            return int(self.api.cluster.nextid.get())

    # ------------------------------------------------------------- settings

    def _sizes(self, resource: Mapping[str, Any]) -> tuple[int, int, int]:
        """(cores, memory MiB, disk GiB) from the blueprint specs."""
        specs = specs_of(resource)
        try:
            memory = parse_size(str(specs["memory"])) // MIB if specs.get("memory") else 1024
            disk = math.ceil(parse_size(str(specs["storage"])) / GIB) if specs.get("storage") else 8
        except SizeError as exc:
            raise EngineError(str(exc), permanent=True) from exc
        return max(1, math.ceil(float(specs.get("cpu") or 1))), max(16, int(memory)), max(1, disk)

    def _description(self, resource: Mapping[str, Any], ctx: EngineContext, instance: int, final: bool) -> str:
        labels = L.managed_labels(
            environment=ctx.environment, resource=resource, deployment_id=ctx.deployment_id, instance=instance
        )
        if not final:
            # Until every setting is applied the hash says "pending", so a retry re-applies them.
            labels[L.SPEC_HASH] = "pending"
        return L.encode_description(labels, "Managed by ai-cdn; do not edit the ai-cdn.* lines.")

    def _net0(self, resource: Mapping[str, Any], lxc: bool, current: str = "") -> str:
        """The first NIC on the configured bridge; an existing NIC keeps its model and MAC address."""
        bridge = self.config.get("bridge", "vmbr0")
        firewall = ",firewall=1" if specs_of(resource).get("firewall") else ""
        if lxc:
            hwaddr = next((p for p in current.split(",") if p.startswith("hwaddr=")), "")
            return f"name=eth0,bridge={bridge},ip=dhcp{firewall}" + (f",{hwaddr}" if hwaddr else "")
        model = current.split(",")[0] if current else "virtio"
        return f"{model},bridge={bridge}{firewall}"

    def _qemu_settings(self, resource: Mapping[str, Any], ctx: EngineContext, instance: int) -> dict[str, Any]:
        cores, memory, _ = self._sizes(resource)
        settings: dict[str, Any] = {
            "name": self.guest_name(ctx, str(resource["name"]), instance),
            "cores": cores,
            "memory": memory,
            "tags": TAG,
            "description": self._description(resource, ctx, instance, final=True),
            "ipconfig0": "ip=dhcp",
            "agent": "1" if specs_of(resource).get("guest_agent") else "0",
        }
        if self.config.get("ci_user"):
            settings["ciuser"] = self.config["ci_user"]
        if self.config.get("ssh_keys"):
            settings["sshkeys"] = self.config["ssh_keys"]
        return settings

    def _lxc_template(self, resource: Mapping[str, Any]) -> str:
        image = specs_of(resource).get("image")
        templates = self.config.get("lxc_templates") or {}
        template = templates.get(image) if image else None
        template = template or self.config.get("lxc_template")
        if not template:
            raise EngineError(
                "containers need an LXC template: set lxc_template (or lxc_templates) in the environment config",
                permanent=True,
                code="no_template",
            )
        return str(template)

    # --------------------------------------------------------------- create

    def _create_guest(self, resource: Mapping[str, Any], ctx: EngineContext, instance: int) -> None:
        storage = self.config.get("storage", "local-lvm")
        for _attempt in range(3):
            vmid = self._next_vmid()
            try:
                if resource["type"] == "container":
                    self._create_lxc(resource, ctx, instance, vmid, storage)
                else:
                    self._create_qemu(resource, ctx, instance, vmid, storage)
                return
            except EngineError as exc:
                # Another client took the id between nextid and our request: take the next one.
                if "already exists" not in exc.message:
                    raise
        raise EngineError("could not allocate a free VM id after 3 tries", permanent=False, code="vmid_race")

    def _create_qemu(
        self, resource: Mapping[str, Any], ctx: EngineContext, instance: int, vmid: int, storage: str
    ) -> None:
        _, _, disk = self._sizes(resource)
        settings = self._qemu_settings(resource, ctx, instance)
        template = self.config.get("template_vmid")
        nodeapi = self.api.nodes(self.node)
        what = f"creating VM {settings['name']}"
        if template is not None:
            self._call_task(
                what,
                lambda: nodeapi.qemu(template).clone.post(
                    newid=vmid,
                    name=settings["name"],
                    full=1,
                    description=self._description(resource, ctx, instance, final=False),
                ),
            )
            guest = Guest(self.node, "qemu", vmid, settings["name"], "stopped", {}, {})
            self._configure_qemu(guest, resource, ctx, instance, disk)
        else:
            params = dict(
                settings,
                vmid=vmid,
                scsihw="virtio-scsi-pci",
                scsi0=f"{storage}:{disk}",
                ide2=f"{storage}:cloudinit",
                net0=self._net0(resource, lxc=False),
                boot="order=scsi0",
                ostype="l26",
            )
            self._call_task(what, lambda: nodeapi.qemu.post(**params))
        self._call_task(f"starting VM {settings['name']}", lambda: nodeapi.qemu(vmid).status.start.post())

    def _create_lxc(
        self, resource: Mapping[str, Any], ctx: EngineContext, instance: int, vmid: int, storage: str
    ) -> None:
        cores, memory, disk = self._sizes(resource)
        name = self.guest_name(ctx, str(resource["name"]), instance)
        params = {
            "vmid": vmid,
            "hostname": name,
            "ostemplate": self._lxc_template(resource),
            "cores": cores,
            "memory": memory,
            "swap": 0,
            "rootfs": f"{storage}:{disk}",
            "net0": self._net0(resource, lxc=True),
            "tags": TAG,
            "description": self._description(resource, ctx, instance, final=True),
            "unprivileged": 1,
        }
        nodeapi = self.api.nodes(self.node)
        self._call_task(f"creating container {name}", lambda: nodeapi.lxc.post(**params))
        self._call_task(f"starting container {name}", lambda: nodeapi.lxc(vmid).status.start.post())

    # --------------------------------------------------------------- update

    def _configure_qemu(
        self, guest: Guest, resource: Mapping[str, Any], ctx: EngineContext, instance: int, disk: int
    ) -> None:
        settings = self._qemu_settings(resource, ctx, instance)
        api = self._guest_api(guest)
        self._resize(guest, "scsi0", disk)
        current_net = str(guest.config.get("net0", ""))
        net0 = self._net0(resource, lxc=False, current=current_net)
        if net0 != current_net:
            settings["net0"] = net0
        # The description (with the final spec hash) goes last, so a crash before it makes a retry re-apply.
        description = settings.pop("description")
        with pve_errors(f"configuring {guest.object_id}"):
            api.config.put(**settings)
            api.config.put(description=description)

    def _resize(self, guest: Guest, disk_key: str, size_gib: int) -> None:
        current = str(self._refresh(guest).config.get(disk_key, ""))
        current_gib = 0
        for part in current.split(","):
            key, _, value = part.partition("=")
            if key == "size" and value:
                try:
                    current_gib = math.ceil(parse_size(value.replace("G", "GB").replace("M", "MB")) / GIB)
                except SizeError:
                    current_gib = 0
        if current_gib and size_gib < current_gib:
            raise EngineError(
                f"{guest.object_id}: disks can only grow ({current_gib}G -> {size_gib}G)",
                permanent=True,
                code="shrink_refused",
            )
        if size_gib > current_gib:
            self._call_task(
                f"resizing {guest.object_id}",
                lambda: self._guest_api(guest).resize.put(disk=disk_key, size=f"{size_gib}G"),
            )

    def _update_guest(self, guest: Guest, resource: Mapping[str, Any], ctx: EngineContext) -> None:
        guest = self._wait_unlocked(guest)
        cores, memory, disk = self._sizes(resource)
        if guest.kind == "qemu":
            self._configure_qemu(guest, resource, ctx, guest.instance, disk)
        else:
            self._resize(guest, "rootfs", disk)
            with pve_errors(f"configuring {guest.object_id}"):
                self._guest_api(guest).config.put(
                    cores=cores,
                    memory=memory,
                    net0=self._net0(resource, lxc=True, current=str(guest.config.get("net0", ""))),
                    description=self._description(resource, ctx, guest.instance, final=True),
                )
        self._apply_pending(guest)

    def _apply_pending(self, guest: Guest) -> None:
        """Changes a running guest cannot take live wait in `pending`: reboot to apply them."""
        with pve_errors(f"reading pending changes of {guest.object_id}"):
            pending = self._guest_api(guest).pending.get()
        waiting = [p for p in pending if "pending" in p or p.get("delete")]
        if waiting and self._refresh(guest).status == "running":
            self._call_task(f"rebooting {guest.object_id}", lambda: self._guest_api(guest).status.reboot.post())

    def _ensure_running(self, guest: Guest) -> None:
        if self._refresh(guest).status != "running":
            self._call_task(f"starting {guest.object_id}", lambda: self._guest_api(guest).status.start.post())

    def _destroy_guest(self, guest: Guest) -> None:
        api = self._guest_api(guest)
        if self._refresh(guest).status == "running":
            self._call_task(f"stopping {guest.object_id}", lambda: api.status.stop.post())
        params = {"purge": 1}
        if guest.kind == "qemu":
            params["destroy-unreferenced-disks"] = 1
        try:
            self._call_task(f"destroying {guest.object_id}", lambda: api.delete(**params))
        except EngineError as exc:
            if "does not exist" not in exc.message:
                raise

    def _converge(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult:
        self.check_supported(resource)
        name, count = str(resource["name"]), instance_count(resource)
        wanted = L.spec_hash(resource)
        kind = "lxc" if resource["type"] == "container" else "qemu"
        adopted = changed = False
        by_instance: dict[int, Guest] = {}
        for guest in self._guests(ctx, name):
            if guest.instance >= count or guest.instance in by_instance or guest.kind != kind:
                self._destroy_guest(self._wait_unlocked(guest))
                changed = True
            else:
                by_instance[guest.instance] = guest
        for i in range(count):
            existing = by_instance.get(i)
            if existing is None:
                self._create_guest(resource, ctx, i)
                changed = True
                continue
            adopted = True
            guest = self._wait_unlocked(existing)
            if guest.labels.get(L.SPEC_HASH) != wanted:
                self._update_guest(guest, resource, ctx)
                changed = True
            self._ensure_running(guest)
        result = self.read(name, ctx)
        if result is None:
            raise EngineError(f"{name}: guests vanished right after they were made", permanent=False)
        result.adopted, result.changed = adopted, changed
        return result

    # ------------------------------------------------------------- interface

    def health(self) -> HealthReport:
        started = time.monotonic()
        try:
            with pve_errors("proxmox health"):
                version = self.api.version.get()
                nodes = {n["node"]: n.get("status") for n in self.api.nodes.get()}
        except EngineError as exc:
            return HealthReport(False, exc.message, (time.monotonic() - started) * 1000)
        ms = (time.monotonic() - started) * 1000
        if nodes.get(self.node) != "online":
            return HealthReport(False, f"node {self.node!r} is {nodes.get(self.node, 'missing')}", ms)
        return HealthReport(True, f"proxmox {version.get('version')}; node {self.node} online", ms)

    def read(self, name: str, ctx: EngineContext) -> ResourceResult | None:
        guests = self._guests(ctx, name)
        if not guests:
            return None
        statuses = {g.status for g in guests}
        first = guests[0]
        outputs = {
            "node": first.node,
            "vmids": [g.vmid for g in guests],
            "names": [g.name for g in guests],
            "cores": int(first.config.get("cores") or 1),
            "memory_mib": int(first.config["memory"]) if str(first.config.get("memory", "")).isdigit() else None,
        }
        return ResourceResult(
            name=name,
            type=first.labels.get(L.TYPE, "compute"),
            status="running" if statuses == {"running"} else ",".join(sorted(statuses)),
            object_ids=[g.object_id for g in guests],
            outputs=outputs,
            labels=dict(first.labels),
            changed=False,
        )

    def delete(self, name: str, ctx: EngineContext) -> DeleteResult:
        deleted = []
        for guest in self._guests(ctx, name):
            self._destroy_guest(self._wait_unlocked(guest))
            deleted.append(guest.object_id)
        return DeleteResult(name=name, deleted_ids=deleted)

    def list_managed(self, ctx: EngineContext) -> list[ManagedObject]:
        return [ManagedObject(g.kind, g.object_id, g.name, g.labels) for g in self._guests(ctx)]
