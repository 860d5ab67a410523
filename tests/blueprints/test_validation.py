"""Every validation rule has a failing example, and the messages name the JSON path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from blueprints.parsing import parse_source
from blueprints.validation import find_cycle, parse_size, validate_document

BASE: dict[str, Any] = {
    "version": "1.0",
    "name": "shop",
    "environment": "production",
    "provider": "docker",
    "resources": [
        {"name": "net", "type": "network", "specs": {"cidr": "10.0.0.0/24"}},
        {"name": "web", "type": "compute", "count": 2, "network": "net", "specs": {"cpu": 2, "memory": "4GB"}},
        {"name": "db", "type": "database", "specs": {"engine": "postgresql", "engine_version": "16"}},
        {
            "name": "lb",
            "type": "loadbalancer",
            "depends_on": ["web"],
            "specs": {"targets": ["web"], "tls": True, "ports": [443]},
        },
    ],
}


def with_change(mutate) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(BASE)
    mutate(doc)
    return doc


def res(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in doc["resources"] if r["name"] == name)


def test_base_document_is_valid() -> None:
    assert validate_document(copy.deepcopy(BASE)) == []


def test_seed_readme_example_validates_unchanged(seed_yaml: str) -> None:
    assert validate_document(parse_source(seed_yaml)) == []


CASES = [
    ("wrong format version", lambda d: d.update(version="2.0"), "$.version", "1.0"),
    ("missing resources", lambda d: d.pop("resources"), "$", "resources"),
    ("empty resources", lambda d: d.update(resources=[]), "$.resources", "non-empty"),
    ("name not a DNS label", lambda d: d.update(name="My_Shop"), "$.name", "does not match"),
    ("unknown top-level field", lambda d: d.update(colour="blue"), "$", "colour"),
    ("unknown environment", lambda d: d.update(environment="prod"), "$.environment", "prod"),
    ("unknown provider", lambda d: d.update(provider="aws"), "$.provider", "aws"),
    ("unknown resource type", lambda d: res(d, "web").update(type="server"), "$.resources[1].type", "server"),
    ("resource name with shell chars", lambda d: res(d, "web").update(name="web;rm"), "$.resources[1].name", "match"),
    ("unknown spec field", lambda d: res(d, "web")["specs"].update(colour=1), "$.resources[1].specs", "colour"),
    ("duplicate names", lambda d: res(d, "db").update(name="web"), "$.resources[2].name", "duplicate"),
    (
        "depends_on unknown",
        lambda d: res(d, "lb").update(depends_on=["ghost"]),
        "$.resources[3].depends_on[0]",
        "ghost",
    ),
    ("depends on itself", lambda d: res(d, "web").update(depends_on=["web"]), "$.resources[1].depends_on[0]", "itself"),
    ("network unknown", lambda d: res(d, "web").update(network="nope"), "$.resources[1].network", "unknown network"),
    ("network not a network", lambda d: res(d, "web").update(network="db"), "$.resources[1].network", "not a network"),
    (
        "lb target unknown",
        lambda d: res(d, "lb")["specs"].update(targets=["x"]),
        "$.resources[3].specs.targets[0]",
        "x",
    ),
    ("lb target wrong type", lambda d: res(d, "lb")["specs"].update(targets=["db"]), "targets[0]", "database"),
    ("lb without targets", lambda d: res(d, "lb")["specs"].pop("targets"), "$.resources[3].specs.targets", "target"),
    ("cpu too high", lambda d: res(d, "web")["specs"].update(cpu=512), "$.resources[1].specs.cpu", "1..256"),
    ("cpu zero", lambda d: res(d, "web")["specs"].update(cpu=0), "$.resources[1].specs.cpu", "1..256"),
    ("count absurd", lambda d: res(d, "web").update(count=1000000000), "$.resources[1].count", "1..100"),
    ("count negative", lambda d: res(d, "web").update(count=-1), "$.resources[1].count", "1..100"),
    ("memory unit missing", lambda d: res(d, "web")["specs"].update(memory="4096"), "$.resources[1].specs.memory", ""),
    ("memory negative", lambda d: res(d, "web")["specs"].update(memory="-4GB"), "$.resources[1].specs.memory", ""),
    ("memory too large", lambda d: res(d, "web")["specs"].update(memory="9TB"), "$.resources[1].specs.memory", "4TB"),
    ("memory too small", lambda d: res(d, "web")["specs"].update(memory="1MB"), "$.resources[1].specs.memory", "16MB"),
    ("storage too large", lambda d: res(d, "web")["specs"].update(storage="2PB"), "specs.storage", "1PB"),
    ("replicas too many", lambda d: res(d, "db")["specs"].update(replicas=50), "specs.replicas", "0..20"),
    ("database without engine", lambda d: res(d, "db")["specs"].pop("engine"), "$.resources[2].specs.engine", "needs"),
    ("unknown db engine", lambda d: res(d, "db")["specs"].update(engine="oracle"), "specs.engine", "oracle"),
    (
        "unknown db version",
        lambda d: res(d, "db")["specs"].update(engine_version="9"),
        "engine_version",
        "not supported",
    ),
    ("engine on compute", lambda d: res(d, "web")["specs"].update(engine="postgresql"), "specs.engine", "applies to"),
    ("targets on compute", lambda d: res(d, "web")["specs"].update(targets=["db"]), "specs.targets", "applies to"),
    ("bad cidr", lambda d: res(d, "net")["specs"].update(cidr="10.0.0.1/24"), "$.resources[0].specs.cidr", "CIDR"),
    ("bad port", lambda d: res(d, "lb")["specs"].update(ports=[70000]), "specs.ports[0]", ""),
    (
        "bad port source",
        lambda d: res(d, "lb")["specs"].update(ports=[{"port": 22, "source": "everywhere"}]),
        "specs.ports[0].source",
        "CIDR",
    ),
    ("network on a network", lambda d: res(d, "net").update(network="net"), "$.resources[0].network", "network"),
]


@pytest.mark.parametrize(("label", "mutate", "path", "needle"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_rejects_its_failing_example(label: str, mutate, path: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    errors = validate_document(with_change(mutate))
    assert errors, f"{label}: expected an error"
    matching = [e for e in errors if path in e["path"]]
    assert matching, f"{label}: no error at {path}: {errors}"
    assert any(needle in e["message"] for e in matching), f"{label}: {matching}"


def test_dependency_cycle_is_named() -> None:
    def make_cycle(d: dict[str, Any]) -> None:
        res(d, "web").update(depends_on=["db"])
        res(d, "db").update(depends_on=["lb"])

    errors = validate_document(with_change(make_cycle))
    messages = [e["message"] for e in errors if "cycle" in e["message"]]
    assert messages, errors
    assert "web" in messages[0] and "db" in messages[0] and "lb" in messages[0]


def test_all_errors_reported_at_once() -> None:
    def break_twice(d: dict[str, Any]) -> None:
        res(d, "web")["specs"].update(cpu=999)
        res(d, "db")["specs"].update(engine="oracle")

    errors = validate_document(with_change(break_twice))
    paths = {e["path"] for e in errors}
    assert {"$.resources[1].specs.cpu", "$.resources[2].specs.engine"} <= paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512MB", 512 * 1024**2), ("8GB", 8 * 1024**3), ("2TB", 2 * 1024**4), ("1.5GiB", int(1.5 * 1024**3))],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_find_cycle_none_for_dag() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
