"""Diff between two blueprint documents: structured (per resource, per field) and a unified YAML text diff."""

from __future__ import annotations

import difflib
from typing import Any

from blueprints.parsing import to_yaml

_MISSING = object()


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else key, out)
    else:
        out[prefix] = value


def field_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-level changes between two mappings, with dotted paths (lists compared whole)."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(old, "", a)
    _flatten(new, "", b)
    changes = []
    for path in sorted(set(a) | set(b)):
        va, vb = a.get(path, _MISSING), b.get(path, _MISSING)
        if va != vb:
            changes.append(
                {
                    "field": path,
                    "old": None if va is _MISSING else va,
                    "new": None if vb is _MISSING else vb,
                    "kind": "added" if va is _MISSING else "removed" if vb is _MISSING else "changed",
                }
            )
    return changes


def structured_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    old_res = {r["name"]: r for r in old.get("resources", [])}
    new_res = {r["name"]: r for r in new.get("resources", [])}
    top_old = {k: v for k, v in old.items() if k != "resources"}
    top_new = {k: v for k, v in new.items() if k != "resources"}
    changed = []
    for name in new_res:
        if name in old_res and old_res[name] != new_res[name]:
            changed.append(
                {"name": name, "type": new_res[name]["type"], "changes": field_changes(old_res[name], new_res[name])}
            )
    added = [{"name": n, "type": r["type"]} for n, r in new_res.items() if n not in old_res]
    removed = [{"name": n, "type": r["type"]} for n, r in old_res.items() if n not in new_res]
    return {
        "blueprint": field_changes(top_old, top_new),
        "added": added,
        "removed": removed,
        "changed": changed,
        "summary": f"{len(added)} added, {len(changed)} changed, {len(removed)} removed",
    }


def unified_yaml_diff(old: dict[str, Any], new: dict[str, Any], *, old_label: str, new_label: str) -> str:
    return "".join(
        difflib.unified_diff(
            to_yaml(old).splitlines(keepends=True),
            to_yaml(new).splitlines(keepends=True),
            fromfile=old_label,
            tofile=new_label,
        )
    )
