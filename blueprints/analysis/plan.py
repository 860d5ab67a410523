"""Plan: recorded deployed state vs a target blueprint -> create / update / replace / delete / no-op, DAG-ordered."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aicdn_project.errors import ValidationFailed
from blueprints.analysis.gcpause import paused_gc
from blueprints.validation import SizeError, dependency_edges, find_cycle, parse_size

ACTIONS = ("create", "update", "replace", "delete", "noop")


@dataclass
class DeployedResource:
    """What an environment records for one deployed resource: `spec` is its blueprint entry as it was deployed."""

    name: str
    type: str
    spec: dict[str, Any]
    status: str = "ready"
    outputs: dict[str, Any] = field(default_factory=dict)


# Resources the engine reports as broken are re-created, like a tainted resource in Terraform.
REPLACE_STATUSES = frozenset({"failed", "tainted"})
# Changes to these never need an engine call: ordering metadata and prose.
IGNORED_FIELDS = frozenset({"name", "depends_on", "description"})
ALWAYS_REPLACE = frozenset({"type", "provider"})
# Per type: fields whose change cannot be applied to the running resource, so it is destroyed and re-created.
# Everything else (memory, cpu, count, replicas, ports, env, image of a container: a rolling update) is in place.
REPLACE_FIELDS: dict[str, frozenset[str]] = {
    "compute": frozenset({"specs.os", "specs.template", "specs.image", "specs.gpu", "specs.encrypted", "network"}),
    "container": frozenset({"specs.host_network", "specs.privileged", "specs.namespace", "network"}),
    "database": frozenset({"specs.engine", "specs.encrypted", "specs.storage_tier", "network"}),
    "cache": frozenset({"specs.engine", "network"}),
    "loadbalancer": frozenset({"network"}),
    "network": frozenset({"specs.cidr"}),
    "volume": frozenset({"specs.encrypted", "specs.storage_tier"}),
    "kubernetes_cluster": frozenset({"network", "specs.cidr"}),
}
# Disks grow in place but cannot shrink: a smaller size means a new disk.
SHRINK_REPLACES: dict[str, frozenset[str]] = {
    "compute": frozenset({"specs.storage"}),
    "database": frozenset({"specs.storage"}),
    "volume": frozenset({"specs.storage"}),
    "kubernetes_cluster": frozenset({"specs.storage"}),
}
_MISSING = object()


def _flatten(value: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, item in value.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(item, dict):
            _flatten(item, path, out)
        else:
            out[path] = item


def _comparable(entry: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    _flatten({k: v for k, v in entry.items() if k not in IGNORED_FIELDS}, "", flat)
    flat.setdefault("count", 1)
    return flat


def _shrinks(old: Any, new: Any) -> bool:
    try:
        return parse_size(new) < parse_size(old)
    except (SizeError, TypeError):
        return False


def field_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Leaf-level changes between two resource entries (dotted paths; lists compared whole)."""
    a, b = _comparable(old), _comparable(new)
    changes = []
    for path in sorted(a.keys() | b.keys()):
        va, vb = a.get(path, _MISSING), b.get(path, _MISSING)
        if va != vb:
            changes.append(
                {"field": path, "old": None if va is _MISSING else va, "new": None if vb is _MISSING else vb}
            )
    return changes


def _forces_replace(rtype: str, changes: list[dict[str, Any]]) -> bool:
    replace = REPLACE_FIELDS.get(rtype, frozenset())
    shrink = SHRINK_REPLACES.get(rtype, frozenset())
    for change in changes:
        path = change["field"]
        top = path.split(".", 2)
        key = path if len(top) < 3 else f"{top[0]}.{top[1]}"  # specs.backups.enabled -> specs.backups
        if path in ALWAYS_REPLACE or key in replace:
            return True
        if key in shrink and change["old"] is not None and _shrinks(change["old"], change["new"]):
            return True
    return False


def _action_for(res: dict[str, Any], current: DeployedResource) -> tuple[str, list[dict[str, Any]]]:
    if res == current.spec and current.status not in REPLACE_STATUSES:
        return "noop", []
    changes = field_changes(current.spec, res)
    if current.type != res["type"] and not any(c["field"] == "type" for c in changes):
        changes.insert(0, {"field": "type", "old": current.type, "new": res["type"]})
    if current.status in REPLACE_STATUSES:
        changes.insert(0, {"field": "status", "old": current.status, "new": "ready"})
        return "replace", changes
    if not changes:
        return "noop", []
    return ("replace" if _forces_replace(res["type"], changes) else "update"), changes


def topological_order(names: list[str], edges: dict[str, list[str]]) -> list[str] | None:
    """Kahn's algorithm, dependencies first, ties broken by position in `names`; None if a cycle remains."""
    position = {name: i for i, name in enumerate(names)}
    indegree = dict.fromkeys(names, 0)
    dependents: dict[str, list[str]] = {name: [] for name in names}
    for name in names:
        for dep in edges.get(name, ()):
            if dep in position:
                indegree[name] += 1
                dependents[dep].append(name)
    ready = [position[name] for name in names if indegree[name] == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        name = names[heapq.heappop(ready)]
        ordered.append(name)
        for child in dependents[name]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, position[child])
    return ordered if len(ordered) == len(names) else None


def _known(names: list[str], known: Mapping[str, Any]) -> list[str]:
    # dependency_edges built a fresh list per resource: reuse it when every name is known (a valid blueprint).
    return names if all(name in known for name in names) else [name for name in names if name in known]


def summary_line(counts: Mapping[str, int]) -> str:
    """Terraform's wording: a replace is one to add and one to destroy."""
    add = counts["create"] + counts["replace"]
    destroy = counts["delete"] + counts["replace"]
    return f"{add} to add, {counts['update']} to change, {destroy} to destroy"


def compute_plan(target: dict[str, Any], deployed: Mapping[str, DeployedResource]) -> dict[str, Any]:
    """Per-resource actions from `deployed` to `target`: creates/updates in dependency order, then deletes reversed."""
    with paused_gc(len(target.get("resources") or ()) + len(deployed)):
        return _compute_plan(target, deployed)


def _compute_plan(target: dict[str, Any], deployed: Mapping[str, DeployedResource]) -> dict[str, Any]:
    resources = target.get("resources") or []
    names = [res["name"] for res in resources]
    edges = dependency_edges(target)
    ordered = topological_order(names, edges)
    if ordered is None:
        cycle = find_cycle(edges) or []
        raise ValidationFailed(
            "target blueprint has a dependency cycle: " + " -> ".join(cycle),
            code="dependency_cycle",
            details={"errors": [{"path": "$.resources", "message": "dependency cycle: " + " -> ".join(cycle)}]},
        )
    by_name = {res["name"]: res for res in resources}
    actions: list[dict[str, Any]] = []
    counts = dict.fromkeys(ACTIONS, 0)
    for name in ordered:
        res = by_name[name]
        current = deployed.get(name)
        action, changes = ("create", []) if current is None else _action_for(res, current)
        counts[action] += 1
        actions.append(
            {
                "name": name,
                "type": res["type"],
                "action": action,
                "changes": changes,
                "depends_on": _known(edges[name], by_name),
            }
        )

    gone = [name for name in deployed if name not in by_name]
    if gone:
        old_edges = dependency_edges({"resources": [{**deployed[name].spec, "name": name} for name in gone]})
        # Reverse of "dependencies first": a resource goes before what it depends on. A cycle in recorded state
        # cannot come from a valid blueprint; fall back to recorded order rather than refuse to clean up.
        delete_order = list(reversed(topological_order(gone, old_edges) or list(reversed(gone))))
        for name in delete_order:
            counts["delete"] += 1
            actions.append(
                {
                    "name": name,
                    "type": deployed[name].type,
                    "action": "delete",
                    "changes": [],
                    "depends_on": _known(old_edges.get(name, []), deployed),
                }
            )
    for order, item in enumerate(actions, start=1):
        item["order"] = order
    return {"summary": summary_line(counts), "counts": counts, "actions": actions}
