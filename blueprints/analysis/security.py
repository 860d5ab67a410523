"""Security audit: the AICDN-SEC rule catalog, each finding with its JSON path, and per-blueprint suppressions."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from blueprints.analysis import sizing
from blueprints.analysis.gcpause import paused_gc
from blueprints.validation import RESOURCE_TYPES, normalize_engine

SEVERITIES = ("critical", "high", "medium", "low")
_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1, "none": 0}
# A blueprint "passes" when nothing at or above this severity is left unsuppressed.
BLOCKING_SEVERITY = "high"


def severity_at_least(severity: str, threshold: str) -> bool:
    """True when `severity` is as severe as `threshold` or more ("none" is below everything)."""
    if severity not in _RANK or threshold not in _RANK:
        raise ValueError(f"unknown severity {severity if severity not in _RANK else threshold!r}")
    return _RANK[severity] >= _RANK[threshold]


@dataclass(frozen=True)
class Context:
    environment: str
    production: bool
    provider: str
    by_name: dict[str, dict[str, Any]]


# A check yields path suffixes relative to the resource ("" = the resource itself, ".specs.tls", ...).
Check = Callable[[dict[str, Any], dict[str, Any], Context], Iterable[str]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    title: str
    rationale: str
    remediation: str
    types: tuple[str, ...]
    check: Check

    def describe(self) -> dict[str, Any]:
        return {
            "rule_id": self.id,
            "severity": self.severity,
            "title": self.title,
            "rationale": self.rationale,
            "remediation": self.remediation,
            "types": list(self.types),
        }


RULES: list[Rule] = []


def rule(
    number: int, severity: str, title: str, rationale: str, remediation: str, types: Iterable[str] = RESOURCE_TYPES
) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        RULES.append(Rule(f"AICDN-SEC-{number:03d}", severity, title, rationale, remediation, tuple(types), check))
        return check

    return register


# --- helpers -----------------------------------------------------------------------------------------------------
SSH, RDP = 22, 3389
WEB_PORTS = frozenset({80, 443})
# Daemons and data stores that must never face the internet (docker API, databases, caches, search, hypervisor UI,
# Kubernetes API and kubelet, VNC, message brokers).
MANAGEMENT_PORTS = frozenset(
    {2375, 2376, 3306, 5432, 5672, 5900, 5984, 6379, 6443, 8006, 9042, 9200, 9300, 10250, 11211, 15672, 27017}
)
SECRET_NAME = re.compile(
    r"(^|_)(PASSWORD|PASSWD|PWD|PASS|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIALS?)(_|$)", re.I
)
REFERENCE_PREFIXES = ("${", "$(", "vault:", "env:", "file:", "secret:", "k8s:", "sops:", "/run/secrets/")
REFERENCE_NAME_SUFFIXES = ("_FILE", "_PATH", "_REF")
SECRET_SCHEMES = ("env:", "vault:", "file:", "k8s:", "secret:", "sops:")
KNOWN_CREDENTIAL = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|gh[pousr]_[A-Za-z0-9]{30,}|glpat-[A-Za-z0-9_-]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|sk_live_[A-Za-z0-9]{16,}|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\."
)
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)
CLI_SECRET = re.compile(r"^--?(password|passwd|pwd|secret|token|api[-_]?key)(=.+)?$", re.I)
MIN_KUBERNETES = (1, 30)
EOL_ENGINE_VERSIONS = {
    "postgresql": ("12", "13"),
    "mysql": ("5.7",),
    "mongodb": ("6.0",),
    "redis": ("6.2", "7.0"),
}
MIN_PROD_BACKUP_DAYS = 7
RUNNING_TYPES = ("compute", "container", "database", "cache")


def _specs(res: dict[str, Any]) -> dict[str, Any]:
    return res.get("specs") or {}


@lru_cache(maxsize=256)
def _open_to_world(source: str) -> bool:
    try:
        return ipaddress.ip_network(source, strict=False).prefixlen == 0
    except ValueError:
        return False


def _world_ports(specs: dict[str, Any]) -> Iterator[tuple[int, int]]:
    """(index, port) of every port reachable from anywhere: a bare port on a public resource, or source /0."""
    public = specs.get("exposure") == "public"
    for j, port in enumerate(specs.get("ports") or ()):
        if isinstance(port, int):
            if public:
                yield j, port
        else:
            source = port.get("source")
            if (source is None and public) or (source is not None and _open_to_world(source)):
                yield j, port["port"]


def _image_tag(image: str) -> str | None:
    """The tag of an image reference; '@digest' counts as pinned; None when untagged."""
    if "@" in image:
        return "@digest"
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _is_reference(name: str, value: str) -> bool:
    return value.startswith(REFERENCE_PREFIXES) or name.upper().endswith(REFERENCE_NAME_SUFFIXES)


def _env_strings(specs: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for key, value in (specs.get("env") or {}).items():
        if isinstance(value, str) and value:
            yield key, value


def _single(res: dict[str, Any]) -> bool:
    return sizing.instances(res) < 2


# --- exposure ----------------------------------------------------------------------------------------------------
@rule(
    1,
    "critical",
    "Database exposed to the internet",
    "A database reachable from anywhere is brute-forced and exploited within hours; data theft follows.",
    "Set specs.exposure to private and reach the database from the application network only.",
    ("database",),
)
def _public_database(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if specs.get("exposure") == "public":
        yield ".specs.exposure"


@rule(
    2,
    "high",
    "Cache exposed to the internet",
    "Redis, Valkey and Memcached trust their network; an exposed cache leaks data and is abused for amplification.",
    "Set specs.exposure to private.",
    ("cache",),
)
def _public_cache(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if specs.get("exposure") == "public":
        yield ".specs.exposure"


def _port_rule(port_number: int) -> Check:
    def check(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
        for j, port in _world_ports(specs):
            if port == port_number:
                yield f".specs.ports[{j}]"

    return check


rule(
    3,
    "critical",
    "SSH open to 0.0.0.0/0",
    "SSH reachable from the whole internet is under constant credential-stuffing and exploit attempts.",
    "Give the port a source CIDR (a VPN or bastion range) or make the resource private and use a bastion.",
)(_port_rule(SSH))
rule(
    4,
    "critical",
    "RDP open to 0.0.0.0/0",
    "RDP exposed to the internet is a leading ransomware entry point.",
    "Restrict the port's source to a VPN range, or reach the machine through a gateway.",
)(_port_rule(RDP))


@rule(
    5,
    "high",
    "Public load balancer without TLS",
    "Traffic through a public load balancer without TLS can be read and altered on the way.",
    "Set specs.tls: true on the load balancer (terminate TLS there) and redirect plain HTTP.",
    ("loadbalancer",),
)
def _lb_without_tls(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if specs.get("exposure") == "public" and specs.get("tls") is not True:
        yield ".specs.tls"


@rule(
    6,
    "high",
    "Management or data port open to the internet",
    "Database, cache, Docker API, Kubernetes API, kubelet, hypervisor and VNC ports must not face the internet.",
    "Remove the port from public exposure or restrict its source to an internal CIDR.",
)
def _management_port(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    for j, port in _world_ports(specs):
        if port in MANAGEMENT_PORTS:
            yield f".specs.ports[{j}]"


@rule(
    7,
    "medium",
    "Non-web port open to the internet",
    "Every port reachable from anywhere widens the attack surface; only web traffic usually needs to be public.",
    "Expose only 80/443 publicly, behind a load balancer; restrict other ports to known source CIDRs.",
)
def _other_public_port(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    for j, port in _world_ports(specs):
        if port not in WEB_PORTS and port not in MANAGEMENT_PORTS and port not in (SSH, RDP):
            yield f".specs.ports[{j}]"


@rule(
    8,
    "medium",
    "Load balancer without health check",
    "Without a health check a load balancer keeps sending traffic to dead or half-started targets.",
    "Add specs.health_check with a path (HTTP) or port and an interval.",
    ("loadbalancer",),
)
def _lb_without_health_check(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if not specs.get("health_check"):
        yield ".specs"


@rule(
    9,
    "high",
    "Kubernetes API server exposed to the internet",
    "A public API server is probed continuously; one leaked kubeconfig or API flaw gives away the cluster.",
    "Set specs.exposure to private and reach the API through a VPN or bastion.",
    ("kubernetes_cluster",),
)
def _public_kube_api(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if specs.get("exposure") == "public":
        yield ".specs.exposure"


# --- resilience ----------------------------------------------------------------------------------------------------
@rule(
    10,
    "high",
    "Single instance in production",
    "One instance is one failure (or one reboot for patching) away from an outage.",
    "Run at least two instances (count or replicas) behind a load balancer.",
    ("compute", "container"),
)
def _single_instance(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.production and _single(res):
        yield ".count" if res["type"] == "compute" or "replicas" not in specs else ".specs.replicas"


@rule(
    11,
    "high",
    "Production database without backups",
    "Without backups, a bad migration, ransomware or a lost disk means lost data.",
    "Enable specs.backups with a retention of at least 7 days.",
    ("database",),
)
def _db_without_backups(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.production and not sizing.backups_enabled(specs):
        yield ".specs.backups"


@rule(
    12,
    "high",
    "Production database without replica or HA",
    "A single database server makes every host failure an outage with a restore from backup.",
    "Set specs.ha: true or add at least one replica (specs.replicas).",
    ("database",),
)
def _db_single(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.production and _single(res):
        yield ".specs.ha"


@rule(
    13,
    "medium",
    "Production cache without replica or HA",
    "When the only cache node restarts, every request falls through to the database at once.",
    "Set specs.ha: true or add a replica.",
    ("cache",),
)
def _cache_single(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.production and _single(res):
        yield ".specs.ha"


@rule(
    14,
    "medium",
    "Production load balancer with fewer than two target instances",
    "A load balancer in front of one instance balances nothing; that instance is a single point of failure.",
    "Point the load balancer at targets that together run at least two instances.",
    ("loadbalancer",),
)
def _lb_single_target(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if not ctx.production:
        return
    total = sum(sizing.instances(ctx.by_name[t]) for t in specs.get("targets") or () if t in ctx.by_name)
    if total < 2:
        yield ".specs.targets"


@rule(
    15,
    "medium",
    "Short backup retention in production",
    f"Under {MIN_PROD_BACKUP_DAYS} days of backups often misses the last good copy when corruption is noticed late.",
    f"Set specs.backups.retention_days to {MIN_PROD_BACKUP_DAYS} or more.",
)
def _short_retention(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    days = sizing.backup_retention_days(specs)
    if ctx.production and sizing.backups_enabled(specs) and days is not None and days < MIN_PROD_BACKUP_DAYS:
        yield ".specs.backups.retention_days"


@rule(
    16,
    "high",
    "Production Kubernetes cluster with fewer than three nodes",
    "With fewer than three workers, draining one node for an upgrade leaves no room to reschedule workloads.",
    "Run at least three worker nodes (specs.nodes).",
    ("kubernetes_cluster",),
)
def _small_cluster(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.production and int(specs.get("nodes") or sizing.DEFAULT_SPECS["kubernetes_cluster"]["nodes"]) < 3:
        yield ".specs.nodes"


# --- containers --------------------------------------------------------------------------------------------------
@rule(
    17,
    "critical",
    "Privileged container",
    "A privileged container has every capability and the host's devices: escaping to the host is trivial.",
    "Remove specs.privileged; grant only the specific capability the workload needs.",
)
def _privileged(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if specs.get("privileged") is True:
        yield ".specs.privileged"


@rule(
    18,
    "high",
    "Container uses the host network",
    "Host networking bypasses network isolation and lets the container bind and sniff host interfaces.",
    "Remove specs.host_network and publish the needed ports instead.",
)
def _host_network(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if specs.get("host_network") is True:
        yield ".specs.host_network"


@rule(
    19,
    "medium",
    "Container without a CPU limit",
    "A container without a CPU limit can starve its neighbours on the same host.",
    "Set specs.cpu.",
    ("container",),
)
def _no_cpu_limit(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if "cpu" not in specs:
        yield ".specs"


@rule(
    20,
    "medium",
    "Container without a memory limit",
    "A container without a memory limit can exhaust host memory and trigger the OOM killer on other workloads.",
    "Set specs.memory.",
    ("container",),
)
def _no_memory_limit(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if "memory" not in specs:
        yield ".specs"


@rule(
    21,
    "medium",
    "Image uses the latest tag",
    "'latest' changes under you: deployments are not reproducible and a bad push rolls out silently.",
    "Pin the image to a version tag or, better, a digest.",
)
def _latest_tag(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    image = specs.get("image")
    if image and _image_tag(image) == "latest":
        yield ".specs.image"


@rule(
    22,
    "medium",
    "Image not pinned to a tag or digest",
    "An untagged image means 'latest': the running code is whatever was pushed last.",
    "Add an explicit version tag (name:1.2.3) or a digest (name@sha256:...).",
)
def _untagged(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    image = specs.get("image")
    if image and _image_tag(image) is None:
        yield ".specs.image"


@rule(
    23,
    "high",
    "Container runs as root",
    "Root inside the container is root on the host after any container escape.",
    "Set specs.run_as_user to a non-zero UID (e.g. 10001).",
)
def _root_user(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if str(specs.get("run_as_user", "")).strip().lower() in ("0", "root"):
        yield ".specs.run_as_user"


@rule(
    24,
    "low",
    "Container user not set",
    "Without run_as_user the image decides, and most images run as root.",
    "Set specs.run_as_user to a non-zero UID.",
    ("container",),
)
def _user_unset(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if "run_as_user" not in specs:
        yield ".specs"


@rule(
    25,
    "low",
    "Writable root filesystem",
    "A writable root filesystem lets an attacker persist tools and modify binaries inside the container.",
    "Set specs.read_only_root: true and mount volumes for the paths that must be written.",
    ("container",),
)
def _writable_root(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if specs.get("read_only_root") is not True:
        yield ".specs.read_only_root" if "read_only_root" in specs else ".specs"


# --- secrets -----------------------------------------------------------------------------------------------------
@rule(
    26,
    "critical",
    "Plain-text secret in an environment variable",
    "Blueprints are versioned, reviewed and shown in chat: a password or key in specs.env is leaked to all of them.",
    "Move the value to a secret store and reference it (specs.secrets: ['vault:...'] or env: ${NAME}).",
)
def _plaintext_secret(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    for key, value in _env_strings(specs):
        if SECRET_NAME.search(key) and not _is_reference(key, value):
            yield f".specs.env.{key}"


@rule(
    27,
    "critical",
    "Known credential format in a value",
    "The value matches a real credential format (cloud access key, private key, API token).",
    "Revoke the credential, then reference it from a secret store instead.",
)
def _known_credential(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    for key, value in _env_strings(specs):
        if KNOWN_CREDENTIAL.search(value):
            yield f".specs.env.{key}"
    for j, arg in enumerate(specs.get("command") or ()):
        if KNOWN_CREDENTIAL.search(arg):
            yield f".specs.command[{j}]"


@rule(
    28,
    "high",
    "Credentials embedded in a URL",
    "A connection URL with user:password@ puts the password in plain text wherever the URL is logged or shown.",
    "Keep the URL without credentials and pass the password through a secret reference.",
)
def _url_credentials(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    for key, value in _env_strings(specs):
        if URL_CREDENTIALS.search(value) and not _is_reference(key, value):
            yield f".specs.env.{key}"


@rule(
    29,
    "high",
    "Secret on the command line",
    "Command-line arguments are visible to every process on the host (ps, /proc) and in engine logs.",
    "Read the secret from a file or environment variable populated from a secret store.",
)
def _cli_secret(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    command = specs.get("command") or ()
    for j, arg in enumerate(command):
        match = CLI_SECRET.match(arg)
        if match and (match.group(2) or j + 1 < len(command)):
            yield f".specs.command[{j}]"


@rule(
    30,
    "medium",
    "Secret reference without a secret store",
    "An entry in specs.secrets without a scheme is either a literal secret or a reference engines cannot resolve.",
    f"Use one of {', '.join(SECRET_SCHEMES)} (e.g. vault:kv/app/db-password).",
)
def _bad_secret_reference(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    for j, ref in enumerate(specs.get("secrets") or ()):
        if not ref.startswith(SECRET_SCHEMES):
            yield f".specs.secrets[{j}]"


# --- storage -----------------------------------------------------------------------------------------------------
@rule(
    31,
    "high",
    "Unencrypted volume",
    "A volume without encryption at rest exposes its data when disks are replaced, snapshotted or copied.",
    "Set specs.encrypted: true.",
    ("volume",),
)
def _unencrypted_volume(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if specs.get("encrypted") is not True:
        yield ".specs.encrypted"


@rule(
    32,
    "medium",
    "Database storage not encrypted in staging or production",
    "Staging and production databases hold real data; unencrypted disks leak it through snapshots and backups.",
    "Set specs.encrypted: true on the database.",
    ("database",),
)
def _unencrypted_database(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.environment in ("staging", "production") and specs.get("encrypted") is not True:
        yield ".specs.encrypted"


@rule(
    33,
    "medium",
    "Production volume without backups",
    "A volume without backups loses its data with its disk, or with one mistaken delete.",
    "Enable specs.backups on the volume.",
    ("volume",),
)
def _volume_without_backups(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.production and not sizing.backups_enabled(specs):
        yield ".specs.backups"


# --- Proxmox -----------------------------------------------------------------------------------------------------
def _on_proxmox(res: dict, ctx: Context) -> bool:
    return (res.get("provider") or ctx.provider) == "proxmox"


@rule(
    34,
    "high",
    "Proxmox guest without firewall",
    "Without the Proxmox firewall on the guest, any other guest on the bridge reaches every port it listens on.",
    "Set specs.firewall: true (Proxmox VM/LXC firewall) and allow only the declared ports.",
    RUNNING_TYPES,
)
def _proxmox_firewall(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if _on_proxmox(res, ctx) and specs.get("firewall") is not True:
        yield ".specs.firewall"


@rule(
    35,
    "medium",
    "Proxmox VM without QEMU guest agent",
    "Without the guest agent Proxmox cannot freeze filesystems for consistent backups or shut the VM down cleanly.",
    "Set specs.guest_agent: true and install qemu-guest-agent in the template.",
    ("compute",),
)
def _proxmox_guest_agent(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if _on_proxmox(res, ctx) and specs.get("guest_agent") is not True:
        yield ".specs.guest_agent"


@rule(
    36,
    "medium",
    "Production Proxmox VM without backups",
    "A VM without vzdump / Proxmox Backup Server jobs cannot be restored after a failed disk or a bad upgrade.",
    "Enable specs.backups (schedule and retention) for the VM.",
    ("compute",),
)
def _proxmox_backups(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.production and _on_proxmox(res, ctx) and not sizing.backups_enabled(specs):
        yield ".specs.backups"


# --- Kubernetes --------------------------------------------------------------------------------------------------
def _kube_version(value: str) -> tuple[int, int] | None:
    match = re.match(r"^v?(\d+)\.(\d+)", value.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


@rule(
    37,
    "medium",
    "Kubernetes version not pinned",
    "Without a pinned version the cluster is created with whatever the installer defaults to, and drifts.",
    "Set specs.kubernetes_version (e.g. 1.32).",
    ("kubernetes_cluster",),
)
def _kube_unpinned(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if not specs.get("kubernetes_version"):
        yield ".specs"


@rule(
    38,
    "high",
    "Kubernetes version out of support",
    f"Versions before {MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]} no longer receive security patches upstream.",
    f"Upgrade to {MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]} or later.",
    ("kubernetes_cluster",),
)
def _kube_outdated(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    value = specs.get("kubernetes_version")
    if value:
        version = _kube_version(value)
        if version is None or version < MIN_KUBERNETES:
            yield ".specs.kubernetes_version"


@rule(
    39,
    "medium",
    "Workload in the default namespace",
    "The default namespace mixes workloads under one set of RBAC rules, quotas and network policies.",
    "Set specs.namespace to a namespace dedicated to the application.",
    ("container",),
)
def _default_namespace(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if (res.get("provider") or ctx.provider) == "kubernetes" and specs.get("namespace", "default") == "default":
        yield ".specs.namespace" if "namespace" in specs else ".specs"


@rule(
    40,
    "medium",
    "Production Kubernetes control plane without HA",
    "A single control-plane node (and etcd member) stops every deployment and self-healing when it fails.",
    "Set specs.ha: true (three control-plane nodes).",
    ("kubernetes_cluster",),
)
def _kube_control_plane(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.production and specs.get("ha") is not True:
        yield ".specs.ha"


# --- network and lifecycle -------------------------------------------------------------------------------------
@rule(
    41,
    "medium",
    "Production resource outside a private network",
    "Without an explicit network the resource lands on the provider's default bridge with everything else.",
    "Declare a network resource and attach the resource to it (network: <name>).",
    RUNNING_TYPES,
)
def _no_network(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if ctx.production and not res.get("network") and (res.get("provider") or ctx.provider) != "kubernetes":
        yield ".network"


@rule(
    42,
    "medium",
    "Engine version past end of life",
    "End-of-life database and cache versions receive no security fixes.",
    "Upgrade to a supported engine_version.",
    ("database", "cache"),
)
def _eol_engine(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    engine, version = specs.get("engine"), specs.get("engine_version")
    if engine and version and version in EOL_ENGINE_VERSIONS.get(normalize_engine(engine), ()):
        yield ".specs.engine_version"


@rule(
    43,
    "low",
    "Engine version not pinned",
    "Without engine_version each environment may get a different major version, and upgrades happen by accident.",
    "Set specs.engine_version.",
    ("database", "cache"),
)
def _engine_unpinned(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    if not specs.get("engine_version"):
        yield ".specs"


@rule(
    44,
    "medium",
    "Network uses public address space",
    "A network CIDR outside the private ranges collides with real internet addresses and invites routing leaks.",
    "Use a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or fd00::/8).",
    ("network",),
)
def _public_cidr(res: dict, specs: dict, ctx: Context) -> Iterable[str]:
    cidr = specs.get("cidr")
    if cidr:
        try:
            private = ipaddress.ip_network(cidr, strict=False).is_private
        except ValueError:
            return
        if not private:
            yield ".specs.cidr"


RULES_BY_ID = {r.id: r for r in RULES}
_RULES_BY_TYPE = {t: [r for r in RULES if t in r.types] for t in RESOURCE_TYPES}


def rule_catalog() -> list[dict[str, Any]]:
    return [r.describe() for r in RULES]


def _finding(rule_: Rule, path: str, resource: str) -> dict[str, Any]:
    return {
        "rule_id": rule_.id,
        "severity": rule_.severity,
        "title": rule_.title,
        "rationale": rule_.rationale,
        "remediation": rule_.remediation,
        "path": path,
        "resource": resource,
    }


def context_for(document: dict[str, Any]) -> Context:
    environment = sizing.environment_of(document)
    return Context(
        environment=environment,
        production=environment == sizing.PRODUCTION,
        provider=document.get("provider") or "simulator",
        by_name={res["name"]: res for res in document.get("resources") or []},
    )


def resource_findings(ctx: Context, index: int, res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every finding on one resource entry (in rule order)."""
    base = f"$.resources[{index}]"
    specs = _specs(res)
    name = res["name"]
    return [
        _finding(rule_, base + suffix, name)
        for rule_ in _RULES_BY_TYPE.get(res["type"], ())
        for suffix in rule_.check(res, specs, ctx)
    ]


def _suppression_for(finding: dict[str, Any], by_rule: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    for sup in by_rule.get(finding["rule_id"], ()):
        if sup.get("resource") and sup["resource"] != finding["resource"]:
            continue
        if sup.get("path") and sup["path"] != finding["path"]:
            continue
        return sup
    return None


def audit_document(document: dict[str, Any], suppressions: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """Run every rule on a (valid) blueprint; findings matching a suppression are reported apart, with its reason."""
    with paused_gc(len(document.get("resources") or ())):
        return _audit(document, suppressions)


def _audit(document: dict[str, Any], suppressions: Iterable[dict[str, Any]]) -> dict[str, Any]:
    ctx = context_for(document)
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for sup in suppressions:
        by_rule.setdefault(sup["rule_id"], []).append(sup)
    findings: list[dict[str, Any]] = []
    suppressed: list[dict[str, Any]] = []
    counts = dict.fromkeys(SEVERITIES, 0)
    for index, res in enumerate(document.get("resources") or []):
        for finding in resource_findings(ctx, index, res):
            sup = _suppression_for(finding, by_rule) if by_rule else None
            if sup is None:
                findings.append(finding)
                counts[finding["severity"]] += 1
            else:
                suppressed.append({**finding, "justification": sup.get("justification", "")})
    max_severity = next((sev for sev in SEVERITIES if counts[sev]), "none")
    return {
        "findings": findings,
        "suppressed": suppressed,
        "counts": counts,
        "max_severity": max_severity,
        "passed": not severity_at_least(max_severity, BLOCKING_SEVERITY),
        "rules_checked": len(RULES),
    }
