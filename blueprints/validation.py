"""Blueprint validation: the JSON Schema, then semantic rules; every error carries a JSON path and a message."""

from __future__ import annotations

import ipaddress
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "blueprint-1.0.json"
FORMAT_VERSION = "1.0"

RESOURCE_TYPES = (
    "compute",
    "container",
    "database",
    "cache",
    "loadbalancer",
    "network",
    "volume",
    "kubernetes_cluster",
)
PROVIDERS = ("simulator", "docker", "proxmox", "kubernetes")

# Known engines and the versions we accept (major or major.minor as their projects number them).
DATABASE_ENGINES: dict[str, tuple[str, ...]] = {
    "postgresql": ("12", "13", "14", "15", "16", "17"),
    "mysql": ("5.7", "8.0", "8.4"),
    "mariadb": ("10.6", "10.11", "11.4"),
    "mongodb": ("6.0", "7.0", "8.0"),
}
CACHE_ENGINES: dict[str, tuple[str, ...]] = {
    "redis": ("6.2", "7.0", "7.2", "7.4"),
    "valkey": ("7.2", "8.0"),
    "memcached": ("1.6",),
}
ENGINE_ALIASES = {"postgres": "postgresql", "pg": "postgresql", "mongo": "mongodb"}

_UNITS = {
    "B": 1,
    "KB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "TB": 1024**4,
    "PB": 1024**5,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "PiB": 1024**5,
}
_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s?(B|KB|MB|GB|TB|PB|KiB|MiB|GiB|TiB|PiB)$")

LIMITS = {
    "cpu": (1, 256),
    "count": (1, 100),
    "replicas": (0, 20),
    "nodes": (1, 1000),
    "memory": (16 * 1024**2, 4 * 1024**4),  # 16 MB .. 4 TB
    "storage": (64 * 1024**2, 1024**5),  # 64 MB .. 1 PB
}

# Fields that only make sense on some resource types.
TYPE_ONLY_FIELDS = {
    "engine": ("database", "cache"),
    "engine_version": ("database", "cache"),
    "targets": ("loadbalancer",),
    "algorithm": ("loadbalancer",),
    "cidr": ("network",),
    "nodes": ("kubernetes_cluster",),
    "kubernetes_version": ("kubernetes_cluster",),
    "template": ("compute",),
    "guest_agent": ("compute",),
}
LB_TARGET_TYPES = ("compute", "container", "kubernetes_cluster")


class SizeError(ValueError):
    pass


def parse_size(value: str) -> int:
    """'512MB' -> bytes (binary multiples: 1 GB = 1024 MB, as hypervisors count)."""
    match = _SIZE_RE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise SizeError(f"{value!r} is not a size with a unit such as 512MB, 8GB or 2TB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_size(num_bytes: int) -> str:
    for unit in ("PB", "TB", "GB", "MB"):
        factor = _UNITS[unit]
        if num_bytes >= factor and num_bytes % factor == 0:
            return f"{num_bytes // factor}{unit}"
    return f"{num_bytes // 1024**2}MB"


def normalize_engine(name: str) -> str:
    lowered = name.strip().lower()
    return ENGINE_ALIASES.get(lowered, lowered)


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


@lru_cache(maxsize=1)
def _fast_validator() -> Any:
    # The keywords this schema uses mean the same in draft 7, which fastjsonschema compiles to Python code.
    # use_default=False: a validator must never fill defaults into the caller's document.
    schema = {key: value for key, value in load_schema().items() if key != "$schema"}
    return fastjsonschema.compile(schema, use_default=False)


def _fast_valid(document: dict[str, Any]) -> bool:
    """True when the compiled validator accepts the document; any doubt sends it down the full jsonschema walk."""
    try:
        _fast_validator()(document)
    except Exception:
        return False
    return True


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _schema_errors(document: dict[str, Any]) -> list[dict[str, str]]:
    # Fast path: most documents are valid, and the compiled validator confirms that about ten times faster.
    # Only an invalid document pays for jsonschema's walk, which reports every error with its path.
    if _fast_valid(document):
        return []
    errors = []
    for error in _validator().iter_errors(document):
        # oneOf failures carry the useful message in their best sub-error.
        message = error.message
        if error.validator == "oneOf" and error.context:
            best = min(error.context, key=lambda e: len(e.absolute_path))
            message = best.message
        if len(message) > 300:
            message = message[:297] + "..."
        errors.append({"path": _json_path(error.absolute_path), "message": message})
    errors.sort(key=lambda e: e["path"])
    return errors


def _check_range(errors: list[dict[str, str]], path: str, field: str, value: float, shown: str | None = None) -> None:
    low, high = LIMITS[field]
    if not (low <= value <= high):
        if field in ("memory", "storage"):
            errors.append(
                {"path": path, "message": f"{field} {shown} is outside {format_size(low)}..{format_size(high)}"}
            )
        else:
            errors.append({"path": path, "message": f"{field} {value} is outside {low}..{high}"})


def _semantic_errors(document: dict[str, Any]) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    resources = document.get("resources") or []
    by_name: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, res in enumerate(resources):
        name = res["name"]
        if name in by_name:
            errors.append(
                {
                    "path": f"$.resources[{i}].name",
                    "message": f"duplicate resource name {name!r} (first used at $.resources[{by_name[name][0]}])",
                }
            )
        else:
            by_name[name] = (i, res)

    edges: dict[str, list[str]] = {name: [] for name in by_name}
    for i, res in enumerate(resources):
        base = f"$.resources[{i}]"
        name, rtype = res["name"], res["type"]
        specs = res.get("specs") or {}
        if "count" in res:
            _check_range(errors, f"{base}.count", "count", res["count"])
        for field, allowed in TYPE_ONLY_FIELDS.items():
            if field in specs and rtype not in allowed:
                errors.append(
                    {
                        "path": f"{base}.specs.{field}",
                        "message": f"{field} applies to {', '.join(allowed)}, not {rtype}",
                    }
                )
        if "cpu" in specs:
            _check_range(errors, f"{base}.specs.cpu", "cpu", specs["cpu"])
        for field in ("memory", "storage"):
            if field in specs:
                try:
                    size = parse_size(specs[field])
                except SizeError as exc:
                    errors.append({"path": f"{base}.specs.{field}", "message": str(exc)})
                else:
                    _check_range(errors, f"{base}.specs.{field}", field, size, specs[field])
        for field in ("replicas", "nodes"):
            if field in specs:
                _check_range(errors, f"{base}.specs.{field}", field, specs[field])
        if rtype in ("database", "cache"):
            known = DATABASE_ENGINES if rtype == "database" else CACHE_ENGINES
            engine = specs.get("engine")
            if engine is None:
                errors.append(
                    {
                        "path": f"{base}.specs.engine",
                        "message": f"a {rtype} needs specs.engine, one of {', '.join(sorted(known))}",
                    }
                )
            else:
                canonical = normalize_engine(engine)
                if canonical not in known:
                    errors.append(
                        {
                            "path": f"{base}.specs.engine",
                            "message": f"unknown {rtype} engine {engine!r}; known: {', '.join(sorted(known))}",
                        }
                    )
                elif "engine_version" in specs and specs["engine_version"] not in known[canonical]:
                    errors.append(
                        {
                            "path": f"{base}.specs.engine_version",
                            "message": f"{canonical} version {specs['engine_version']!r} is not supported; "
                            f"supported: {', '.join(known[canonical])}",
                        }
                    )
        if "cidr" in specs:
            try:
                ipaddress.ip_network(specs["cidr"], strict=True)
            except ValueError as exc:
                errors.append({"path": f"{base}.specs.cidr", "message": f"invalid CIDR: {exc}"})
        for j, port in enumerate(specs.get("ports") or []):
            source = port.get("source") if isinstance(port, dict) else None
            if source is not None:
                try:
                    ipaddress.ip_network(source, strict=False)
                except ValueError:
                    errors.append(
                        {"path": f"{base}.specs.ports[{j}].source", "message": f"source {source!r} is not a CIDR"}
                    )

        for j, dep in enumerate(res.get("depends_on") or []):
            if dep == name:
                errors.append({"path": f"{base}.depends_on[{j}]", "message": f"{name!r} cannot depend on itself"})
            elif dep not in by_name:
                errors.append({"path": f"{base}.depends_on[{j}]", "message": f"depends on unknown resource {dep!r}"})
            elif name in edges:
                edges[name].append(dep)
        if "network" in res:
            net = res["network"]
            if net not in by_name:
                errors.append({"path": f"{base}.network", "message": f"unknown network {net!r}"})
            elif by_name[net][1]["type"] != "network":
                errors.append(
                    {"path": f"{base}.network", "message": f"{net!r} is a {by_name[net][1]['type']}, not a network"}
                )
            elif net != name and name in edges:
                edges[name].append(net)
        if rtype == "network" and "network" in res:
            errors.append({"path": f"{base}.network", "message": "a network cannot be attached to another network"})
        for j, target in enumerate(specs.get("targets") or []):
            tpath = f"{base}.specs.targets[{j}]"
            if target not in by_name:
                errors.append({"path": tpath, "message": f"load balancer target {target!r} does not exist"})
            elif by_name[target][1]["type"] not in LB_TARGET_TYPES:
                errors.append(
                    {
                        "path": tpath,
                        "message": f"load balancer target {target!r} is a {by_name[target][1]['type']}; "
                        f"targets must be {', '.join(LB_TARGET_TYPES)}",
                    }
                )
            elif target != name and name in edges:
                edges[name].append(target)
        if rtype == "loadbalancer" and not specs.get("targets"):
            errors.append({"path": f"{base}.specs.targets", "message": "a load balancer needs at least one target"})

    cycle = find_cycle(edges)
    if cycle:
        first = by_name[cycle[0]][0]
        errors.append(
            {"path": f"$.resources[{first}].depends_on", "message": "dependency cycle: " + " -> ".join(cycle)}
        )
    return errors


def dependency_edges(document: dict[str, Any]) -> dict[str, list[str]]:
    """name -> names it must come after: depends_on, its network, and (for a load balancer) its targets."""
    edges: dict[str, list[str]] = {}
    for res in document.get("resources") or []:
        deps = list(res.get("depends_on") or [])
        if res.get("network"):
            deps.append(res["network"])
        deps.extend((res.get("specs") or {}).get("targets") or [])
        edges[res["name"]] = list(dict.fromkeys(deps))
    return edges


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """Iterative DFS; returns one cycle as a closed path [a, b, ..., a], or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    for root in edges:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        color[root] = grey
        path.append(root)
        while stack:
            node, idx = stack[-1]
            children = edges.get(node, [])
            if idx < len(children):
                stack[-1] = (node, idx + 1)
                child = children[idx]
                if child not in color:
                    continue
                if color[child] == grey:
                    start = path.index(child)
                    return [*path[start:], child]
                if color[child] == white:
                    color[child] = grey
                    path.append(child)
                    stack.append((child, 0))
            else:
                color[node] = black
                path.pop()
                stack.pop()
    return None


def validate_document(document: dict[str, Any]) -> list[dict[str, str]]:
    """All errors of a parsed document (schema first; semantics only once the structure is sound)."""
    errors = _schema_errors(document)
    if errors:
        return errors
    return _semantic_errors(document)
