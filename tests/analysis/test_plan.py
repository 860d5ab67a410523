"""Plan: every action kind, field-level changes, replace-vs-update per type, and dependency ordering."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aicdn_project.errors import ValidationFailed
from blueprints.analysis import DeployedResource, compute_plan
from tests.analysis.conftest import bp, res, web_stack


def deployed_from(document: dict[str, Any], status: str = "ready") -> dict[str, DeployedResource]:
    return {
        r["name"]: DeployedResource(name=r["name"], type=r["type"], spec=copy.deepcopy(r), status=status)
        for r in document["resources"]
    }


def actions(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in plan["actions"]}


def position(plan: dict[str, Any], name: str) -> int:
    return actions(plan)[name]["order"]


def find(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in document["resources"] if r["name"] == name)


def test_empty_state_creates_everything_dependencies_first() -> None:
    plan = compute_plan(web_stack(), {})
    assert plan["summary"] == "4 to add, 0 to change, 0 to destroy"
    assert plan["counts"] == {"create": 4, "update": 0, "replace": 0, "delete": 0, "noop": 0}
    assert [a["name"] for a in plan["actions"]] == ["net", "db", "web", "lb"]
    assert [a["order"] for a in plan["actions"]] == [1, 2, 3, 4]
    by = actions(plan)
    assert by["web"]["depends_on"] == ["db", "net"]
    assert by["lb"]["depends_on"] == ["net", "web"]
    assert all(a["action"] == "create" and a["changes"] == [] for a in plan["actions"])


def test_order_follows_dependencies_not_document_order() -> None:
    document = bp(
        res("front", "loadbalancer", {"targets": ["app"]}),
        res("app", "compute", depends_on=["db"]),
        res("db", "database", {"engine": "postgresql"}, depends_on=["net-store"]),
        res("net-store", "volume"),
    )
    plan = compute_plan(document, {})
    assert [a["name"] for a in plan["actions"]] == ["net-store", "db", "app", "front"]


def test_identical_state_is_all_noop() -> None:
    document = web_stack()
    plan = compute_plan(document, deployed_from(document))
    assert plan["counts"]["noop"] == 4
    assert plan["summary"] == "0 to add, 0 to change, 0 to destroy"
    assert all(a["changes"] == [] for a in plan["actions"])


def test_memory_change_updates_in_place_with_field_changes() -> None:
    before = web_stack()
    after = copy.deepcopy(before)
    find(after, "web")["specs"]["memory"] = "8GB"
    plan = compute_plan(after, deployed_from(before))
    web = actions(plan)["web"]
    assert web["action"] == "update"
    assert web["changes"] == [{"field": "specs.memory", "old": "4GB", "new": "8GB"}]
    assert plan["summary"] == "0 to add, 1 to change, 0 to destroy"


def test_database_engine_change_forces_replace() -> None:
    before = web_stack()
    after = copy.deepcopy(before)
    find(after, "db")["specs"].update(engine="mysql", engine_version="8.4")
    plan = compute_plan(after, deployed_from(before))
    db = actions(plan)["db"]
    assert db["action"] == "replace"
    assert {c["field"] for c in db["changes"]} == {"specs.engine", "specs.engine_version"}
    assert plan["summary"] == "1 to add, 0 to change, 1 to destroy"


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("db", {"storage": "200GB"}, "update"),  # disks grow in place
        ("db", {"storage": "50GB"}, "replace"),  # and cannot shrink
        ("db", {"cpu": 4}, "update"),
        ("web", {"os": "debian-12"}, "replace"),
        ("web", {"cpu": 4}, "update"),
        ("net", {"cidr": "10.1.0.0/24"}, "replace"),
        ("lb", {"tls": False}, "update"),
    ],
)
def test_replace_or_update_is_declared_per_type(name: str, change: dict[str, Any], expected: str) -> None:
    before = web_stack()
    after = copy.deepcopy(before)
    find(after, name)["specs"].update(change)
    assert actions(compute_plan(after, deployed_from(before)))[name]["action"] == expected


def test_provider_or_type_change_replaces() -> None:
    before = bp(res("vm", "compute", {"cpu": 1}), res("box", "compute"))
    after = bp(res("vm", "compute", {"cpu": 1}, provider="docker"), res("box", "container"))
    by = actions(compute_plan(after, deployed_from(before)))
    assert by["vm"]["action"] == "replace"
    assert by["box"]["action"] == "replace"
    assert {"field": "type", "old": "compute", "new": "container"} in by["box"]["changes"]


def test_failed_resource_is_replaced() -> None:
    document = web_stack()
    state = deployed_from(document)
    state["web"].status = "failed"
    web = actions(compute_plan(document, state))["web"]
    assert web["action"] == "replace"
    assert web["changes"][0] == {"field": "status", "old": "failed", "new": "ready"}


def test_description_and_depends_on_changes_are_noop_and_default_count_is_one() -> None:
    before = bp(res("a", "compute"), res("b", "compute", count=1, description="old"))
    after = bp(res("a", "compute"), res("b", "compute", description="new", depends_on=["a"]))
    assert actions(compute_plan(after, deployed_from(before)))["b"]["action"] == "noop"


def test_nested_changes_are_reported_per_leaf() -> None:
    before = bp(res("svc", "container", {"env": {"A": "1", "B": "2"}}))
    after = bp(res("svc", "container", {"env": {"A": "1", "B": "3", "C": "4"}}))
    svc = actions(compute_plan(after, deployed_from(before)))["svc"]
    assert svc["action"] == "update"
    assert svc["changes"] == [
        {"field": "specs.env.B", "old": "2", "new": "3"},
        {"field": "specs.env.C", "old": None, "new": "4"},
    ]


def test_deletes_come_after_creates_in_reverse_dependency_order() -> None:
    before = web_stack()
    after = bp(res("net", "network", {"cidr": "10.0.0.0/24"}), res("cache", "cache", {"engine": "redis"}))
    plan = compute_plan(after, deployed_from(before))
    names = [a["name"] for a in plan["actions"]]
    assert names[:2] == ["net", "cache"]
    # lb depends on web depends on db: delete the dependent first.
    assert names[2:] == ["lb", "web", "db"]
    by = actions(plan)
    assert by["cache"]["action"] == "create"
    assert by["net"]["action"] == "noop"
    assert {by[n]["action"] for n in ("lb", "web", "db")} == {"delete"}
    assert by["web"]["depends_on"] == ["db", "net"]
    assert plan["summary"] == "1 to add, 0 to change, 3 to destroy"
    assert [a["order"] for a in plan["actions"]] == list(range(1, 6))


def test_mixed_plan_counts_every_action_kind() -> None:
    before = bp(
        res("keep", "compute"),
        res("grow", "compute", {"memory": "2GB"}),
        res("swap", "database", {"engine": "postgresql"}),
        res("gone", "volume"),
    )
    after = bp(
        res("keep", "compute"),
        res("grow", "compute", {"memory": "4GB"}),
        res("swap", "database", {"engine": "mariadb"}),
        res("fresh", "cache", {"engine": "redis"}),
    )
    plan = compute_plan(after, deployed_from(before))
    assert plan["counts"] == {"create": 1, "update": 1, "replace": 1, "delete": 1, "noop": 1}
    assert plan["summary"] == "2 to add, 1 to change, 2 to destroy"
    assert plan["actions"][-1]["name"] == "gone"


def test_replaced_dependency_comes_before_its_dependents() -> None:
    before = web_stack()
    after = copy.deepcopy(before)
    find(after, "db")["specs"]["engine"] = "mysql"
    find(after, "db")["specs"]["engine_version"] = "8.4"
    find(after, "web")["specs"]["cpu"] = 4
    plan = compute_plan(after, deployed_from(before))
    assert position(plan, "db") < position(plan, "web") < position(plan, "lb")


def test_cycle_is_refused() -> None:
    document = bp(res("a", "compute", depends_on=["b"]), res("b", "compute", depends_on=["a"]))
    with pytest.raises(ValidationFailed) as info:
        compute_plan(document, {})
    assert "cycle" in info.value.message


def test_plan_is_json_serialisable_and_linear_sized() -> None:
    import json

    chain = bp(*[res(f"r{i}", "compute", depends_on=[f"r{i - 1}"] if i else []) for i in range(3000)])
    plan = compute_plan(chain, {})
    assert [a["name"] for a in plan["actions"][:3]] == ["r0", "r1", "r2"]
    assert json.loads(json.dumps(plan))["counts"]["create"] == 3000
