"""Intent + extracted facts -> a full blueprint (format 1.0), deterministically; and a blueprint back to its intent.

The compiler carries the expertise a small model lacks: names, sizes, a private network, dependencies, load
balancer targets and health checks, replicas for HA, backups and encryption for production data, TLS on public
entry points. Every default it picks for something the request did not state is listed as an assumption.
For a follow-up it starts from the current document: resources keep their names and settings unless the change
touches them, and resources it does not model (volumes, extra tiers) are carried over.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from blueprints.validation import normalize_engine, validate_document
from llm.extractor import Facts, Sizes
from llm.intent import Intent

DEFAULT_SIZES: dict[str, Sizes] = {
    "web": Sizes(cpu=2, memory="4GB", storage="40GB", storage_tier="ssd"),
    "worker": Sizes(cpu=2, memory="4GB", storage="40GB", storage_tier="ssd"),
    "database": Sizes(cpu=2, memory="8GB", storage="100GB", storage_tier="ssd"),
    "cache": Sizes(cpu=1, memory="2GB"),
    "kubernetes": Sizes(cpu=4, memory="8GB", storage="100GB", storage_tier="ssd"),
}
PRODUCTION_SIZES: dict[str, Sizes] = {
    "web": Sizes(cpu=2, memory="8GB", storage="50GB", storage_tier="ssd"),
    "worker": Sizes(cpu=4, memory="8GB", storage="50GB", storage_tier="ssd"),
    "database": Sizes(cpu=4, memory="16GB", storage="200GB", storage_tier="nvme"),
    "cache": Sizes(cpu=2, memory="4GB"),
    "kubernetes": Sizes(cpu=4, memory="16GB", storage="100GB", storage_tier="ssd"),
}
DEFAULT_VERSIONS = {
    "postgresql": "16",
    "mysql": "8.4",
    "mariadb": "11.4",
    "mongodb": "7.0",
    "redis": "7.2",
    "valkey": "8.0",
    "memcached": "1.6",
}
ENGINE_PORTS = {
    "postgresql": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "mongodb": 27017,
    "redis": 6379,
    "valkey": 6379,
    "memcached": 11211,
}
APP_PORT = 8080
NETWORK_CIDR = "10.20.0.0/24"
BACKUPS = {
    "production": {"enabled": True, "retention_days": 30, "schedule": "0 2 * * *"},
    "staging": {"enabled": True, "retention_days": 7, "schedule": "0 3 * * *"},
}
DEFAULT_NAMES = {
    "network": "net",
    "database": "db",
    "cache": "cache",
    "web": "web",
    "worker": "worker",
    "kubernetes": "k8s",
    "loadbalancer": "lb",
}
_WORKER_NAME = re.compile(r"worker|job|queue|batch|consumer|task|cron", re.I)


@dataclass
class Compiled:
    document: dict[str, Any]
    intent: Intent  # after the facts were applied: what the document really contains
    assumptions: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


# --- reading a document back -----------------------------------------------------------------------------------


def document_roles(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Which resource plays which role: load balancer targets are the web tier, worker-like names the workers."""
    resources = document.get("resources") or []
    roles: dict[str, dict[str, Any]] = {}
    by_name = {r.get("name"): r for r in resources}
    for rtype, role in (
        ("network", "network"),
        ("loadbalancer", "loadbalancer"),
        ("database", "database"),
        ("cache", "cache"),
        ("kubernetes_cluster", "kubernetes"),
    ):
        found = next((r for r in resources if r.get("type") == rtype), None)
        if found is not None:
            roles[role] = found
    compute = [r for r in resources if r.get("type") in ("compute", "container")]
    targets = ((roles.get("loadbalancer") or {}).get("specs") or {}).get("targets") or []
    targeted = [by_name[t] for t in targets if t in by_name and by_name[t].get("type") in ("compute", "container")]
    if targeted:
        roles["web"] = targeted[0]
    for res in compute:
        if res is roles.get("web"):
            continue
        if _WORKER_NAME.search(res.get("name", "")):
            roles.setdefault("worker", res)
        else:
            roles.setdefault("web", res)
    return roles


def _instances(resource: dict[str, Any] | None) -> int:
    return int(resource.get("count", 1)) if resource else 0


def intent_from_document(document: dict[str, Any]) -> Intent:
    """The structural intent a blueprint expresses (the starting point of a follow-up change)."""
    roles = document_roles(document)
    db = roles.get("database")
    db_specs = (db or {}).get("specs") or {}
    cache = roles.get("cache")
    k8s = roles.get("kubernetes")
    return Intent(
        web_servers=_instances(roles.get("web")),
        worker_servers=_instances(roles.get("worker")),
        load_balancer="loadbalancer" in roles,
        database=normalize_engine(db_specs.get("engine", "postgresql")) if db else "none",
        database_instances=_instances(db) * (1 + int(db_specs.get("replicas", 0))) if db else 0,
        database_ha=bool(db_specs.get("ha", False)) if db else False,
        cache=normalize_engine(((cache or {}).get("specs") or {}).get("engine", "redis")) if cache else "none",
        kubernetes_nodes=int(((k8s or {}).get("specs") or {}).get("nodes", 1)) if k8s else 0,
    )


# --- applying the facts ----------------------------------------------------------------------------------------


def reconcile(intent: Intent, facts: Facts, *, base: Intent | None = None) -> tuple[Intent, list[str]]:
    """The model owns counts; the text owns engine names and negations. Returns the fixed intent and assumptions."""
    result = copy.copy(intent)
    notes: list[str] = []
    if "database" in facts.negated:
        result.database, result.database_instances, result.database_ha = "none", 0, False
    elif facts.database_engine:
        if result.database == "none":
            result.database_instances = max(1, result.database_instances)
        result.database = facts.database_engine
    if "cache" in facts.negated:
        result.cache = "none"
    elif facts.cache_engine:
        result.cache = facts.cache_engine
    if "loadbalancer" in facts.negated:
        result.load_balancer = False
    if "worker" in facts.negated:
        result.worker_servers = 0
    if "kubernetes" in facts.negated:
        result.kubernetes_nodes = 0

    if result.database == "none":
        result.database_instances, result.database_ha = 0, False
    elif result.database_instances == 0:
        result.database_instances = 1
    if result.database_ha and result.database_instances < 2:
        result.database_instances = 2
        notes.append("a highly available database needs a standby: assumed a primary plus 1 replica")
    if result.load_balancer and not (result.web_servers or result.kubernetes_nodes):
        # Workers take jobs from a queue, not traffic: a balancer needs web servers (or a cluster) behind it.
        result.web_servers = 2
        notes.append("a load balancer needs web servers behind it: assumed 2")
    new_db = result.database != "none" and (base is None or base.database == "none")
    if new_db and not facts.database_engine:
        notes.append(
            f"database engine not named: assumed {result.database} {DEFAULT_VERSIONS.get(result.database, '')}".strip()
        )
    new_cache = result.cache != "none" and (base is None or base.cache == "none")
    if new_cache and not facts.cache_engine:
        notes.append(f"cache engine not named: assumed {result.cache} {DEFAULT_VERSIONS.get(result.cache, '')}".strip())
    return result, notes


# --- compiling -------------------------------------------------------------------------------------------------


def _sizes_for(role: str, facts: Facts) -> Sizes:
    """Sizes written next to this role, then sizes said of every machine ("all servers need 16GB")."""
    return facts.sizes.get(role, Sizes()).merged_over(facts.sizes.get("all", Sizes()))


def _apply_sizes(specs: dict[str, Any], stated: Sizes, defaults: Sizes, *, fresh: bool) -> list[str]:
    """Stated sizes always win; defaults fill only what a new resource lacks. Returns the defaulted field names."""
    defaulted = []
    for key in ("cpu", "memory", "storage", "storage_tier"):
        value = getattr(stated, key)
        if value is not None:
            specs[key] = int(value) if key == "cpu" and float(value).is_integer() else value
        elif fresh and key not in specs and getattr(defaults, key) is not None:
            specs[key] = getattr(defaults, key)
            if key != "storage_tier":
                defaulted.append(key)
    return defaulted


def _describe_default(role: str, specs: dict[str, Any], defaulted: list[str]) -> str | None:
    if not defaulted:
        return None
    parts = []
    if "cpu" in defaulted:
        parts.append(f"{specs['cpu']} vCPU")
    if "memory" in defaulted:
        parts.append(f"{specs['memory']} RAM")
    if "storage" in defaulted:
        parts.append(f"{specs['storage']} disk")
    return f"no size stated for {role}: assumed {', '.join(parts)}"


def _blueprint_name(intent: Intent, environment: str) -> str:
    if intent.web_servers:
        stem = "web-app"
    elif intent.kubernetes_nodes:
        stem = "k8s-platform"
    elif intent.worker_servers:
        stem = "workers"
    elif intent.database != "none":
        stem = f"{intent.database}-db"
    else:
        stem = f"{intent.cache}-cache"
    return f"{stem}-{environment}"


def compile_blueprint(
    intent: Intent,
    facts: Facts,
    *,
    description: str = "",
    base: dict[str, Any] | None = None,
) -> Compiled:
    """Build the whole document. `base` is the current blueprint for a follow-up (its names and settings stay)."""
    base = copy.deepcopy(base) if base else None
    base_intent = intent_from_document(base) if base else None
    intent, assumptions = reconcile(intent, facts, base=base_intent)
    roles = document_roles(base) if base else {}

    environment = facts.environment or (base or {}).get("environment")
    if environment is None:
        environment = "development"
        assumptions.append("environment not stated: assumed development")
    provider = facts.provider or (base or {}).get("provider")
    production = environment == "production"
    defaults = PRODUCTION_SIZES if production else DEFAULT_SIZES
    if base is None and not facts.states_numbers:
        assumptions.append(
            "no counts stated: assumed "
            + ", ".join(
                f"{n} {label}"
                for n, label in (
                    (intent.web_servers, "web server(s)"),
                    (intent.worker_servers, "worker(s)"),
                    (intent.database_instances, "database instance(s)"),
                    (intent.kubernetes_nodes, "Kubernetes node(s)"),
                )
                if n
            )
        )

    name = facts.name or (base or {}).get("name") or _blueprint_name(intent, environment)
    if base is None and not facts.name:
        assumptions.append(f"no name given: called it {name}")

    def existing(role: str) -> dict[str, Any] | None:
        return roles.get(role)

    base_names = {r["name"] for r in (base or {}).get("resources", [])}
    names: dict[str, str] = {}

    def new_resource(role: str, rtype: str) -> tuple[dict[str, Any], bool]:
        found = existing(role)
        if found is not None:
            found = copy.deepcopy(found)
            found.setdefault("specs", {})
            names[role] = found["name"]
            return found, False
        label, n = DEFAULT_NAMES[role], 2
        while label in base_names:  # a kept resource of the current blueprint already has the default name
            label, n = f"{DEFAULT_NAMES[role]}-{n}", n + 1
        names[role] = label
        return {"name": label, "type": rtype, "specs": {}}, True

    resources: list[dict[str, Any]] = []

    network, _ = new_resource("network", "network")
    if "cidr" not in network["specs"]:
        network["specs"]["cidr"] = NETWORK_CIDR
    resources.append(network)
    net = network["name"]

    def size_role(res: dict[str, Any], role: str, fresh: bool, label: str) -> None:
        defaulted = _apply_sizes(res["specs"], _sizes_for(role, facts), defaults[role], fresh=fresh)
        note = _describe_default(label, res["specs"], defaulted)
        if note:
            assumptions.append(note)

    deps: list[str] = []
    if intent.database != "none":
        db, fresh = new_resource("database", "database")
        specs = db["specs"]
        engine_changed = normalize_engine(specs.get("engine", intent.database)) != intent.database
        specs["engine"] = intent.database
        if facts.database_version:
            specs["engine_version"] = facts.database_version
        elif fresh or engine_changed or "engine_version" not in specs:
            specs["engine_version"] = DEFAULT_VERSIONS[intent.database]
        if engine_changed:
            specs["ports"] = [ENGINE_PORTS[intent.database]]
        size_role(db, "database", fresh, "the database")
        db.pop("count", None)
        specs["ha"] = intent.database_ha
        replicas = intent.database_instances - 1
        if replicas > 0:
            specs["replicas"] = replicas
        else:
            specs.pop("replicas", None)
        specs.setdefault("ports", [facts.ports.get("database", [ENGINE_PORTS[intent.database]])[0]])
        specs["exposure"] = "private"
        specs["encrypted"] = True
        if environment in BACKUPS:
            specs["backups"] = dict(BACKUPS[environment])
        else:
            specs.setdefault("backups", False)
        specs.setdefault("secrets", [f"env:{db['name'].upper().replace('-', '_')}_PASSWORD"])
        db["network"] = net
        resources.append(db)
        deps.append(db["name"])

    if intent.cache != "none":
        cache, fresh = new_resource("cache", "cache")
        specs = cache["specs"]
        engine_changed = normalize_engine(specs.get("engine", intent.cache)) != intent.cache
        specs["engine"] = intent.cache
        if facts.cache_version:
            specs["engine_version"] = facts.cache_version
        elif fresh or engine_changed or "engine_version" not in specs:
            specs["engine_version"] = DEFAULT_VERSIONS[intent.cache]
        if engine_changed:
            specs["ports"] = [ENGINE_PORTS[intent.cache]]
        size_role(cache, "cache", fresh, "the cache")
        specs.setdefault("ports", [facts.ports.get("cache", [ENGINE_PORTS[intent.cache]])[0]])
        specs["exposure"] = "private"
        if production:
            specs["ha"] = True
        cache["network"] = net
        resources.append(cache)
        deps.append(cache["name"])

    app_ports = facts.ports.get("web") or facts.ports.get("all")
    app_port = app_ports[0] if app_ports else None
    machine_type = "container" if provider in ("docker", "kubernetes") else "compute"
    lb_targets: list[str] = []
    for role, count, label in (
        ("web", intent.web_servers, "the web servers"),
        ("worker", intent.worker_servers, "the workers"),
    ):
        if not count:
            continue
        res, fresh = new_resource(role, machine_type)
        res["count"] = count
        specs = res["specs"]
        size_role(res, role, fresh, label)
        if role == "web":
            if app_port is not None:
                specs["ports"] = [app_port]
            if intent.load_balancer:
                specs.setdefault("ports", [APP_PORT])
                specs["exposure"] = "private"
                lb_targets.append(res["name"])
            else:
                specs.setdefault("ports", [{"port": 443, "protocol": "https"}])
                specs["exposure"] = "public"
                specs["tls"] = True
                if fresh:
                    assumptions.append("no load balancer: the web server is public on HTTPS 443 with TLS")
        else:
            specs["exposure"] = "private"
        res["depends_on"] = list(dict.fromkeys([*(d for d in res.get("depends_on", []) if d in deps), *deps]))
        res["network"] = net
        resources.append(res)

    if intent.kubernetes_nodes:
        k8s, fresh = new_resource("kubernetes", "kubernetes_cluster")
        k8s.pop("count", None)
        k8s["specs"]["nodes"] = intent.kubernetes_nodes
        size_role(k8s, "kubernetes", fresh, "each Kubernetes node")
        k8s["network"] = net
        if deps:
            k8s["depends_on"] = list(dict.fromkeys([*(d for d in k8s.get("depends_on", []) if d in deps), *deps]))
        resources.append(k8s)
        if intent.load_balancer and not lb_targets:
            lb_targets.append(k8s["name"])

    if intent.load_balancer:
        lb, fresh = new_resource("loadbalancer", "loadbalancer")
        specs = lb["specs"]
        target_port = app_port or APP_PORT
        specs["targets"] = lb_targets
        specs.setdefault("algorithm", "round_robin")
        specs["exposure"] = "public"
        specs["tls"] = True
        if fresh or app_port is not None:
            specs["ports"] = [{"port": 443, "target_port": target_port, "protocol": "https"}]
            specs["health_check"] = {"path": "/health", "port": target_port, "interval_seconds": 10}
        lb["network"] = net
        lb.pop("count", None)
        resources.append(lb)

    used = {r["name"] for r in resources}
    role_names = {r["name"] for r in roles.values()}
    for extra in (base or {}).get("resources", []):
        # Resources the intent does not model (volumes, extra tiers) survive a follow-up untouched.
        if extra["name"] in used or extra["name"] in role_names:
            continue
        kept = copy.deepcopy(extra)
        resources.append(kept)
        used.add(kept["name"])
    for res in resources:
        if "depends_on" in res:
            res["depends_on"] = [d for d in res["depends_on"] if d in used and d != res["name"]]
            if not res["depends_on"]:
                del res["depends_on"]
        if res.get("network") and res["network"] not in used:
            del res["network"]
        targets = (res.get("specs") or {}).get("targets")
        if targets is not None and res["type"] == "loadbalancer":
            res["specs"]["targets"] = [t for t in targets if t in used]

    document: dict[str, Any] = {"version": "1.0", "name": name}
    text = (base or {}).get("description") if base else description.strip()
    if text:
        document["description"] = text[:2000]
    document["environment"] = environment
    if provider:
        document["provider"] = provider
    document["tags"] = {**((base or {}).get("tags") or {}), "generated-by": "ai-cdn"}
    document["resources"] = resources
    return Compiled(document=document, intent=intent, assumptions=assumptions, errors=validate_document(document))
