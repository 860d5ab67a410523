"""Template catalog: ten distinct templates, valid and inside the cost band at defaults and at every corner."""

from __future__ import annotations

from typing import Any

import pytest

from aicdn_project.errors import NotFound, ValidationFailed
from blueprints.analysis import audit_document, estimate_cost, get_template, list_templates, render_template
from blueprints.analysis.templates import corner_parameters
from blueprints.validation import validate_document

TEMPLATE_IDS = [t["id"] for t in list_templates()]
BAND = (100.0, 5000.0)


def test_ten_distinct_templates_with_typed_parameters() -> None:
    templates = list_templates()
    assert len(templates) == 10
    assert len(set(TEMPLATE_IDS)) == 10
    assert len({t["name"] for t in templates}) == 10
    assert len({t["category"] for t in templates}) >= 5
    for template in templates:
        assert template["description"]
        assert template["parameters"]
        for name, spec in template["parameters"].items():
            assert spec["type"] in ("integer", "number", "boolean", "string"), name
            assert spec["description"], name
            assert "default" in spec, name
            if spec["type"] in ("integer", "number"):
                assert spec["minimum"] <= spec["default"] <= spec["maximum"], name
            if spec["type"] == "string":
                assert spec["default"] in spec["enum"], name


def test_templates_are_structurally_distinct() -> None:
    shapes = set()
    for template_id in TEMPLATE_IDS:
        document = render_template(template_id, {})
        shapes.add(tuple(sorted((r["type"], r.get("count", 1)) for r in document["resources"])))
    assert len(shapes) == 10


@pytest.mark.parametrize("template_id", TEMPLATE_IDS)
def test_defaults_render_a_valid_blueprint_inside_the_cost_band(template_id: str, book: dict) -> None:
    document = render_template(template_id, {})
    assert validate_document(document) == []
    total = estimate_cost(document, book)["monthly_total"]
    assert BAND[0] <= total <= BAND[1], f"{template_id}: ${total}"


@pytest.mark.parametrize("template_id", TEMPLATE_IDS)
def test_defaults_pass_the_security_audit_without_findings(template_id: str) -> None:
    result = audit_document(render_template(template_id, {}))
    assert result["findings"] == [] and result["passed"] is True


@pytest.mark.parametrize("template_id", TEMPLATE_IDS)
def test_every_corner_is_valid_and_inside_the_band(template_id: str, book: dict) -> None:
    corners = corner_parameters(template_id)
    assert len(corners) >= 2
    for params in corners:
        document = render_template(template_id, params)
        assert validate_document(document) == [], params
        total = estimate_cost(document, book)["monthly_total"]
        assert BAND[0] <= total <= BAND[1], f"{template_id} {params}: ${total}"


def test_parameters_change_the_blueprint_structurally() -> None:
    small = render_template("ha-web-app", {"instance_count": 2, "instance_memory_gb": 4})
    big = render_template("ha-web-app", {"instance_count": 7, "instance_memory_gb": 64})
    web_small = next(r for r in small["resources"] if r["name"] == "web")
    web_big = next(r for r in big["resources"] if r["name"] == "web")
    assert (web_small["count"], web_small["specs"]["memory"]) == (2, "4GB")
    assert (web_big["count"], web_big["specs"]["memory"]) == (7, "64GB")
    # An integral float is accepted as an integer.
    assert (
        next(r for r in render_template("ha-web-app", {"instance_count": 4.0})["resources"] if r["name"] == "web")[
            "count"
        ]
        == 4
    )


def test_boolean_parameter_drops_a_resource_and_its_references() -> None:
    without = render_template("wordpress", {"object_cache": False})
    names = {r["name"] for r in without["resources"]}
    assert "object-cache" not in names
    wordpress = next(r for r in without["resources"] if r["name"] == "wordpress")
    assert "object-cache" not in wordpress["depends_on"]
    assert validate_document(without) == []


def test_enum_lookup_picks_matching_engine_version() -> None:
    document = render_template("simple-web-app", {"db_engine": "mysql", "environment": "production"})
    db = next(r for r in document["resources"] if r["name"] == "db")
    assert (db["specs"]["engine"], db["specs"]["engine_version"], db["specs"]["ha"]) == ("mysql", "8.4", True)


def test_scheduled_shutdown_is_optional() -> None:
    on = render_template("dev-environment", {})
    off = render_template("dev-environment", {"scheduled_shutdown": False})
    assert "schedule" in next(r for r in on["resources"] if r["name"] == "workstation")["specs"]
    assert "schedule" not in next(r for r in off["resources"] if r["name"] == "workstation")["specs"]


@pytest.mark.parametrize(
    ("params", "name", "fragment"),
    [
        ({"instance_count": 1}, "instance_count", "at least 2"),
        ({"instance_count": 11}, "instance_count", "at most 10"),
        ({"instance_count": "3"}, "instance_count", "integer"),
        ({"instance_count": True}, "instance_count", "integer"),
        ({"instance_count": 2.5}, "instance_count", "whole number"),
        ({"environment": "prod"}, "environment", "one of"),
        ({"environment": "{{ 7*7 }}"}, "environment", "one of"),
        ({"colour": "blue"}, "colour", "unknown parameter"),
    ],
)
def test_bad_parameter_is_named(params: dict[str, Any], name: str, fragment: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        render_template("ha-web-app", params)
    assert name in info.value.message
    errors = info.value.details["errors"]
    assert errors[0]["path"] == f"$.parameters.{name}"
    assert fragment in errors[0]["message"]


def test_boolean_parameter_type_is_checked() -> None:
    with pytest.raises(ValidationFailed) as info:
        render_template("wordpress", {"object_cache": "yes"})
    assert info.value.details["errors"][0]["path"] == "$.parameters.object_cache"


def test_all_bad_parameters_are_reported_together() -> None:
    with pytest.raises(ValidationFailed) as info:
        render_template("ha-web-app", {"instance_count": 0, "db_replicas": 9})
    assert {e["path"] for e in info.value.details["errors"]} == {
        "$.parameters.instance_count",
        "$.parameters.db_replicas",
    }


def test_parameters_must_be_an_object() -> None:
    with pytest.raises(ValidationFailed) as info:
        render_template("ha-web-app", ["instance_count", 3])  # type: ignore[arg-type]
    assert info.value.details["errors"][0]["path"] == "$.parameters"


def test_unknown_template() -> None:
    with pytest.raises(NotFound):
        get_template("nope")
    with pytest.raises(NotFound):
        render_template("../catalog/ha-web-app", {})


def test_get_template_returns_a_copy() -> None:
    first = get_template("ha-web-app")
    first["parameters"]["instance_count"]["default"] = 99
    assert get_template("ha-web-app")["parameters"]["instance_count"]["default"] == 3
