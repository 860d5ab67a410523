"""Cost optimisation: each recommendation kind, the target, and never adding a high or critical finding."""

from __future__ import annotations

from typing import Any

import pytest

from aicdn_project.errors import ValidationFailed
from blueprints.analysis import audit_document, estimate_cost, list_templates, optimize, render_template
from blueprints.validation import validate_document
from tests.analysis.conftest import bp, res


def blocking(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (f["rule_id"], f["resource"])
        for f in audit_document(document)["findings"]
        if f["severity"] in ("critical", "high")
    }


def kinds(result: dict[str, Any]) -> list[str]:
    return [r["kind"] for r in result["recommendations"]]


def test_development_blueprint_reaches_the_target(book: dict) -> None:
    document = render_template("data-pipeline", {"environment": "development"})
    result = optimize(document, 0.3, book)
    assert result["target_reached"] is True
    assert result["reduction"] >= 0.3
    assert result["optimized_monthly"] < result["current_monthly"]
    assert validate_document(result["optimized_document"]) == []
    assert result["optimized_monthly"] == estimate_cost(result["optimized_document"], book)["monthly_total"]
    saved = sum(r["monthly_saving"] for r in result["recommendations"])
    assert saved == pytest.approx(result["current_monthly"] - result["optimized_monthly"], abs=0.05)
    for rec in result["recommendations"]:
        assert rec["id"].startswith("OPT-") and rec["rationale"] and rec["monthly_saving"] > 0
        assert rec["change"] and all(set(v) == {"old", "new"} for v in rec["change"].values())
    assert document != result["optimized_document"]  # the input is not modified in place
    assert render_template("data-pipeline", {"environment": "development"}) == document


def test_stops_once_the_target_is_reached(book: dict) -> None:
    document = render_template("data-pipeline", {"environment": "development"})
    small = optimize(document, 0.02, book)
    large = optimize(document, 0.9, book)
    assert small["target_reached"] and len(small["recommendations"]) < len(large["recommendations"])
    assert large["target_reached"] is False  # says so honestly when it cannot get there


def test_production_keeps_redundancy(book: dict) -> None:
    document = render_template("ha-web-app", {})
    result = optimize(document, 0.5, book)
    assert "fewer_replicas" not in kinds(result) and "rightsize" not in kinds(result)
    web = next(r for r in result["optimized_document"]["resources"] if r["name"] == "web")
    db = next(r for r in result["optimized_document"]["resources"] if r["name"] == "db")
    assert web["count"] == 3 and db["specs"]["ha"] is True and db["specs"]["replicas"] == 1
    assert result["target_reached"] is False


@pytest.mark.parametrize("template_id", [t["id"] for t in list_templates()])
def test_never_adds_high_or_critical_findings(template_id: str, book: dict) -> None:
    template_envs = next(t for t in list_templates() if t["id"] == template_id)["parameters"]["environment"]["enum"]
    for environment in template_envs:
        document = render_template(template_id, {"environment": environment})
        result = optimize(document, 0.6, book)
        assert blocking(result["optimized_document"]) <= blocking(document), (template_id, environment)
        assert validate_document(result["optimized_document"]) == []


def test_each_recommendation_kind(book: dict) -> None:
    dev = bp(
        res("ci", "compute", {"cpu": 8, "memory": "32GB", "storage": "200GB", "storage_tier": "nvme"}),
        res("db", "database", {"engine": "postgresql", "cpu": 4, "memory": "16GB", "ha": True, "replicas": 1}),
        res("farm", "compute", {"cpu": 1, "memory": "2GB", "storage": "20GB"}, count=6),
        environment="development",
        provider="proxmox",
    )
    result = optimize(dev, 0.95, book)
    found = set(kinds(result))
    assert found == {"storage_tier", "consolidate", "rightsize", "fewer_replicas", "scheduled_shutdown"}
    ci = next(r for r in result["optimized_document"]["resources"] if r["name"] == "ci")
    assert ci["specs"]["storage_tier"] == "standard"  # nvme -> ssd -> standard outside production
    assert ci["specs"]["cpu"] == 4 and ci["specs"]["memory"] == "16GB"
    assert ci["specs"]["schedule"]["weekdays_only"] is True
    consolidated = next(r for r in result["recommendations"] if r["kind"] == "consolidate")
    assert consolidated["change"]["count"] == {"old": 6, "new": 3}
    assert consolidated["change"]["specs.cpu"] == {"old": 1, "new": 2}


def test_consolidation_in_production_keeps_two_and_capacity(book: dict) -> None:
    document = bp(
        res("net", "network", {"cidr": "10.0.0.0/24"}),
        res("small", "compute", {"cpu": 1, "memory": "2GB", "backups": True}, count=4, network="net"),
        environment="production",
    )
    result = optimize(document, 0.01, book)
    small = next(r for r in result["optimized_document"]["resources"] if r["name"] == "small")
    assert (small["count"], small["specs"]["cpu"], small["specs"]["memory"]) == (2, 2, "4GB")
    assert blocking(result["optimized_document"]) == set()


def test_nothing_to_do(book: dict) -> None:
    document = bp(res("net", "network", {"cidr": "10.0.0.0/24"}))
    result = optimize(document, 0.3, book)
    assert result["recommendations"] == [] and result["target_reached"] is False
    assert result["optimized_document"] == document


@pytest.mark.parametrize("bad", [0, 1, -0.2, 1.5, "0.3", True, None])
def test_target_must_be_a_fraction(bad: Any, book: dict) -> None:
    with pytest.raises(ValidationFailed) as info:
        optimize(bp(res("x", "compute")), bad, book)
    assert info.value.details["errors"][0]["path"] == "$.target_reduction"
