"""The structural intent the model fills: eight flat fields, its JSON schema, range checks, and reading it back.

The model owns these counts and choices; everything else (sizes, ports, environment, provider, names) comes from
the extractor and the compiler. The JSON-schema grammar does not enforce numeric maxima on llama.cpp, so every
range is checked here as well.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from blueprints.validation import normalize_engine

DATABASE_CHOICES = ("none", "postgresql", "mysql", "mariadb", "mongodb")
CACHE_CHOICES = ("none", "redis", "valkey", "memcached")

# Inclusive ranges. Counts map onto blueprint limits: count <= 100, replicas <= 20 (so 21 database instances).
RANGES: dict[str, tuple[int, int]] = {
    "web_servers": (0, 100),
    "worker_servers": (0, 100),
    "database_instances": (0, 21),
    "kubernetes_nodes": (0, 1000),
}


@dataclass
class Intent:
    web_servers: int = 0
    worker_servers: int = 0
    load_balancer: bool = False
    database: str = "none"
    database_instances: int = 0
    database_ha: bool = False
    cache: str = "none"
    kubernetes_nodes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def compact_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))

    @property
    def empty(self) -> bool:
        return not (
            self.web_servers
            or self.worker_servers
            or self.database != "none"
            or self.cache != "none"
            or self.kubernetes_nodes
        )


FIELD_NAMES = tuple(f.name for f in fields(Intent))


def intent_schema() -> dict[str, Any]:
    """The `response_format` schema. Key order is the order the model writes them in."""
    integer = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(FIELD_NAMES),
        "properties": {
            "web_servers": {**integer, "maximum": RANGES["web_servers"][1]},
            "worker_servers": {**integer, "maximum": RANGES["worker_servers"][1]},
            "load_balancer": {"type": "boolean"},
            "database": {"type": "string", "enum": list(DATABASE_CHOICES)},
            "database_instances": {**integer, "maximum": RANGES["database_instances"][1]},
            "database_ha": {"type": "boolean"},
            "cache": {"type": "string", "enum": list(CACHE_CHOICES)},
            "kubernetes_nodes": {**integer, "maximum": RANGES["kubernetes_nodes"][1]},
        },
    }


def intent_problems(data: Any) -> list[str]:
    """Everything wrong with a would-be intent, phrased so the model can fix it in a repair round."""
    if not isinstance(data, dict):
        return ["the answer must be one JSON object"]
    problems = []
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        problems.append(f"unknown fields {', '.join(unknown)}; use only {', '.join(FIELD_NAMES)}")
    for name in FIELD_NAMES:
        if name not in data:
            problems.append(f"{name} is missing")
            continue
        value = data[name]
        if name in RANGES:
            low, high = RANGES[name]
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{name} must be a whole number from {low} to {high}, not {value!r}")
            elif not low <= value <= high:
                problems.append(f"{name} is {value}; it must be from {low} to {high}")
        elif name in ("load_balancer", "database_ha"):
            if not isinstance(value, bool):
                problems.append(f"{name} must be true or false, not {value!r}")
        elif name == "database":
            if not isinstance(value, str) or _engine(value) not in DATABASE_CHOICES:
                problems.append(f"database must be one of {', '.join(DATABASE_CHOICES)}, not {value!r}")
        elif name == "cache" and (not isinstance(value, str) or _engine(value) not in CACHE_CHOICES):
            problems.append(f"cache must be one of {', '.join(CACHE_CHOICES)}, not {value!r}")
    return problems


def _engine(value: str) -> str:
    return normalize_engine(value) if value.strip() else "none"


def intent_from_data(data: dict[str, Any]) -> Intent:
    """A checked dict (no `intent_problems`) -> Intent, made self-consistent (a database has >= 1 instance)."""
    intent = Intent(**{name: data[name] for name in FIELD_NAMES})
    intent.database = _engine(intent.database)
    intent.cache = _engine(intent.cache)
    if intent.database == "none":
        intent.database_instances, intent.database_ha = 0, False
    elif intent.database_instances == 0:
        intent.database_instances = 1
    return intent
