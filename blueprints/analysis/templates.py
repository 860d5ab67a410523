"""Template catalog: blueprints stored as YAML data with typed parameters, rendered by structural substitution."""

from __future__ import annotations

import copy
import itertools
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from aicdn_project.errors import NotFound, ValidationFailed
from blueprints.validation import validate_document

CATALOG_DIR = Path(__file__).resolve().parent / "catalog"
PARAMETER_TYPES = ("integer", "number", "boolean", "string")
_OMIT = object()

# Directives a catalog file may use inside `blueprint` (catalog data is trusted; user values are only ever
# substituted as typed values, never parsed, formatted into templates or evaluated):
#   {$param: name}                                  -> the parameter's value
#   {$size_gb: name}                                -> an integer parameter as a size, e.g. 8 -> "8GB"
#   {$lookup: name, values: {...}, default: ...}    -> a fixed catalog value chosen by an enum/boolean parameter
#   {$if: name, then: ..., else: ...}               -> by a boolean parameter; without else the key is left out
#   list item with `$when: name` or `$when: {param: name, in: [...]}` -> included only when the condition holds


@lru_cache(maxsize=1)
def _catalog() -> dict[str, dict[str, Any]]:
    templates: dict[str, dict[str, Any]] = {}
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        templates[data["id"]] = data
    return templates


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": data["id"],
        "name": data["name"],
        "description": data["description"],
        "category": data["category"],
        "parameters": copy.deepcopy(data["parameters"]),
    }


def list_templates() -> list[dict[str, Any]]:
    """Every template's id, name, description, category and parameters (catalog order)."""
    return [_summary(data) for data in _catalog().values()]


def _template(template_id: str) -> dict[str, Any]:
    data = _catalog().get(template_id) if isinstance(template_id, str) else None
    if data is None:
        raise NotFound(
            f"template {template_id!r} not found; known: {', '.join(_catalog())}",
            code="template_not_found",
            details={"template_id": str(template_id)},
        )
    return data


def get_template(template_id: str) -> dict[str, Any]:
    """One template's description and parameters; NotFound for an unknown id."""
    return _summary(_template(template_id))


def _check_value(name: str, spec: dict[str, Any], value: Any) -> tuple[Any, str | None]:
    """(coerced value, error message or None) for one parameter."""
    kind = spec["type"]
    if kind == "boolean":
        return (value, None) if isinstance(value, bool) else (value, "must be true or false")
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, f"must be {'an integer' if kind == 'integer' else 'a number'}"
        if value != value or value in (float("inf"), float("-inf")):
            return value, "must be a finite number"
        if kind == "integer":
            if isinstance(value, float) and not value.is_integer():
                return value, "must be a whole number"
            value = int(value)
        if "minimum" in spec and value < spec["minimum"]:
            return value, f"must be at least {spec['minimum']} (got {value})"
        if "maximum" in spec and value > spec["maximum"]:
            return value, f"must be at most {spec['maximum']} (got {value})"
    if kind == "string" and not isinstance(value, str):
        return value, "must be a string"
    if "enum" in spec and value not in spec["enum"]:
        return value, f"must be one of {', '.join(map(str, spec['enum']))}"
    return value, None


def resolve_parameters(template_id: str, parameters: Any) -> dict[str, Any]:
    """Defaults merged with the given values, each checked against its declared type and range."""
    specs = _template(template_id)["parameters"]
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise ValidationFailed(
            "parameters must be an object of name: value",
            code="invalid_parameters",
            details={"errors": [{"path": "$.parameters", "message": "must be an object"}]},
        )
    errors = []
    resolved = {name: spec["default"] for name, spec in specs.items()}
    for name, value in parameters.items():
        if name not in specs:
            errors.append(
                {
                    "path": f"$.parameters.{name}",
                    "message": f"unknown parameter {name!r}; known: {', '.join(specs)}",
                }
            )
            continue
        coerced, problem = _check_value(name, specs[name], value)
        if problem:
            errors.append({"path": f"$.parameters.{name}", "message": f"{name} {problem}"})
        else:
            resolved[name] = coerced
    if errors:
        names = ", ".join(e["path"].removeprefix("$.parameters.") for e in errors)
        raise ValidationFailed(
            f"invalid template parameter(s) {names}: " + "; ".join(e["message"] for e in errors),
            code="invalid_parameters",
            details={"errors": errors},
        )
    return resolved


def _condition(spec: Any, params: dict[str, Any]) -> bool:
    if isinstance(spec, str):
        return bool(params[spec])
    return params[spec["param"]] in spec["in"]


def _render(node: Any, params: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$param" in node:
            return params[node["$param"]]
        if "$size_gb" in node:
            return f"{int(params[node['$size_gb']])}GB"
        if "$lookup" in node:
            value = params[node["$lookup"]]
            key = value if not isinstance(value, bool) else str(value).lower()
            chosen = node["values"][key] if key in node["values"] else node.get("default", _OMIT)
            return _render(chosen, params) if chosen is not _OMIT else _OMIT
        if "$if" in node:
            branch = node["then"] if params[node["$if"]] else node.get("else", _OMIT)
            return _render(branch, params) if branch is not _OMIT else _OMIT
        out = {}
        for key, value in node.items():
            rendered = _render(value, params)
            if rendered is not _OMIT:
                out[key] = rendered
        return out
    if isinstance(node, list):
        items = []
        for item in node:
            if isinstance(item, dict) and "$when" in item:
                if not _condition(item["$when"], params):
                    continue
                item = {k: v for k, v in item.items() if k != "$when"}
            rendered = _render(item, params)
            if rendered is not _OMIT:
                items.append(rendered)
        return items
    return node


def _prune_references(document: dict[str, Any]) -> None:
    """Drop references to resources a condition left out (a cache that is switched off, ...)."""
    names = {res["name"] for res in document["resources"]}
    for res in document["resources"]:
        if "depends_on" in res:
            res["depends_on"] = [dep for dep in res["depends_on"] if dep in names]
            if not res["depends_on"]:
                del res["depends_on"]
        if res.get("network") and res["network"] not in names:
            del res["network"]
        specs = res.get("specs") or {}
        if "targets" in specs:
            specs["targets"] = [t for t in specs["targets"] if t in names]


def render_template(template_id: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """A validated blueprint document from a template and its parameters (defaults fill the rest)."""
    data = _template(template_id)
    params = resolve_parameters(template_id, parameters)
    document = _render(copy.deepcopy(data["blueprint"]), params)
    _prune_references(document)
    errors = validate_document(document)
    if errors:
        # A catalog bug, not a user error: the parameter checks passed. Report it like any invalid blueprint.
        raise ValidationFailed(
            f"template {template_id!r} rendered an invalid blueprint: {errors[0]['path']}: {errors[0]['message']}",
            code="template_invalid",
            details={"errors": errors},
        )
    return document


def corner_parameters(template_id: str) -> list[dict[str, Any]]:
    """Every enum/boolean combination with all numeric parameters at their minimum, then at their maximum.

    Costs only grow with numeric parameters, so these corners bound the cost of every valid parameter set.
    """
    specs = _template(template_id)["parameters"]
    choices = {
        name: spec.get("enum", [False, True])
        for name, spec in specs.items()
        if "enum" in spec or spec["type"] == "boolean"
    }
    numeric = [name for name, spec in specs.items() if spec["type"] in ("integer", "number")]
    corners = []
    for combo in itertools.product(*choices.values()):
        for bound in ("minimum", "maximum"):
            params = dict(zip(choices, combo, strict=True))
            params.update({name: specs[name][bound] for name in numeric})
            corners.append(params)
    return corners
