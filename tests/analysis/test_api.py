"""Analysis API: wiring, authentication, permissions and error mapping (400 with what and where, never 500)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from aicdn_project.models import AuditEvent
from blueprints.models import BlueprintVersion
from tests.analysis.conftest import make_user, parse_svg

pytestmark = pytest.mark.django_db


def test_anonymous_is_refused() -> None:
    client = APIClient()
    for url in ("/api/v1/templates", "/api/v1/templates/ha-web-app", "/api/v1/blueprints/versions/1/cost"):
        assert client.get(url).status_code in (401, 403)
    assert client.post("/api/v1/blueprints/security-audit", {"blueprint_id": 1}, format="json").status_code in (
        401,
        403,
    )


def test_template_catalog(owner_api) -> None:  # type: ignore[no-untyped-def]
    listing = owner_api.get("/api/v1/templates")
    assert listing.status_code == 200 and len(listing.json()) == 10
    detail = owner_api.get("/api/v1/templates/simple-web-app")
    assert detail.status_code == 200 and "web_servers" in detail.json()["parameters"]
    missing = owner_api.get("/api/v1/templates/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "template_not_found"


def test_customize_preview_save_and_bad_parameter(owner_api, owner) -> None:  # type: ignore[no-untyped-def]
    url = "/api/v1/templates/ha-web-app/customize"
    preview = owner_api.post(url, {"parameters": {"instance_count": 3, "environment": "production"}}, format="json")
    assert preview.status_code == 200
    assert preview.json()["document"]["environment"] == "production" and preview.json()["version"] is None
    bad = owner_api.post(url, {"parameters": {"instance_count": 50}}, format="json")
    assert bad.status_code == 400
    assert "instance_count" in bad.json()["message"]
    assert bad.json()["details"]["errors"][0]["path"] == "$.parameters.instance_count"
    not_object = owner_api.post(url, {"parameters": [1, 2]}, format="json")
    assert not_object.status_code == 400
    saved = owner_api.post(url, {"parameters": {}, "save": True, "name": "my-shop"}, format="json")
    assert saved.status_code == 201
    assert BlueprintVersion.objects.get(pk=saved.json()["version"]["id"]).blueprint.owner == owner


def test_version_analysis_endpoints(owner_api, stored) -> None:  # type: ignore[no-untyped-def]
    base = f"/api/v1/blueprints/versions/{stored.commit_id}"
    cost = owner_api.get(f"{base}/cost")
    assert cost.status_code == 200 and cost.json()["monthly_total"] > 0 and cost.json()["currency"] == "USD"
    security = owner_api.get(f"{base}/security")
    assert security.status_code == 200 and "findings" in security.json()
    plan = owner_api.get(f"/api/v1/blueprints/versions/{stored.pk}/plan")
    assert plan.status_code == 200 and plan.json()["summary"] == "4 to add, 0 to change, 0 to destroy"
    svg = owner_api.get(f"{base}/topology.svg")
    assert svg.status_code == 200 and svg["Content-Type"].startswith("image/svg+xml")
    root = parse_svg(svg.content)
    assert {"db", "web", "lb", "net"} <= {"".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    # The plain version detail route still answers.
    assert owner_api.get(f"/api/v1/blueprints/versions/{stored.pk}").status_code == 200


def test_version_errors(owner_api, stored) -> None:  # type: ignore[no-untyped-def]
    assert owner_api.get("/api/v1/blueprints/versions/99999/cost").status_code == 404
    bad_ref = owner_api.get("/api/v1/blueprints/versions/not-a-ref/security")
    assert bad_ref.status_code == 400 and bad_ref.json()["error"] == "invalid_ref"
    stranger = APIClient()
    stranger.force_authenticate(make_user("api-stranger", "requesters"))
    assert stranger.get(f"/api/v1/blueprints/versions/{stored.pk}/topology.svg").status_code == 404


def test_cost_delta(owner_api, stored) -> None:  # type: ignore[no-untyped-def]
    ok = owner_api.get(f"/api/v1/blueprints/cost-delta?to={stored.pk}")
    assert ok.status_code == 200 and ok.json()["old_total"] == 0
    same = owner_api.get(f"/api/v1/blueprints/cost-delta?from={stored.pk}&to={stored.commit_id}")
    assert same.json()["delta"] == 0
    missing = owner_api.get("/api/v1/blueprints/cost-delta")
    assert missing.status_code == 400 and missing.json()["details"]["errors"][0]["path"] == "$.to"


def test_optimize_endpoints(owner_api, stored) -> None:  # type: ignore[no-untyped-def]
    url = f"/api/v1/blueprints/{stored.blueprint_id}/optimize"
    preview = owner_api.post(url, {"target_reduction": 0.3}, format="json")
    assert preview.status_code == 200 and preview.json()["recommendations"]
    for bad in ({"target_reduction": 3}, {"target_reduction": "lots"}, {}):
        response = owner_api.post(url, bad, format="json")
        assert response.status_code == 400, bad
        assert response.json()["details"]["errors"][0]["path"] == "$.target_reduction"
    seed = owner_api.post(
        "/api/v1/blueprints/optimize-costs",
        {"blueprint_id": stored.blueprint_id, "target_reduction": 0.3, "save": True},
        format="json",
    )
    assert seed.status_code == 201 and seed.json()["version"]["number"] == 2
    no_id = owner_api.post("/api/v1/blueprints/optimize-costs", {"target_reduction": 0.3}, format="json")
    assert no_id.status_code == 400 and no_id.json()["details"]["errors"][0]["path"] == "$.blueprint_id"


def test_security_audit_and_suppressions(owner_api, stored) -> None:  # type: ignore[no-untyped-def]
    audit = owner_api.post("/api/v1/blueprints/security-audit", {"blueprint_id": stored.blueprint_id}, format="json")
    assert audit.status_code == 200 and audit.json()["version"]["id"] == stored.pk
    fired = {f["rule_id"] for f in audit.json()["findings"]}
    rule = sorted(fired)[0]
    url = f"/api/v1/blueprints/{stored.blueprint_id}/suppressions"
    missing_reason = owner_api.post(url, {"rule_id": rule}, format="json")
    assert missing_reason.status_code == 400
    assert missing_reason.json()["details"]["errors"][0]["path"] == "$.justification"
    created = owner_api.post(url, {"rule_id": rule, "justification": "accepted for the demo lab"}, format="json")
    assert created.status_code == 201 and created.json()["rule_id"] == rule
    assert AuditEvent.objects.filter(action="blueprint.finding_suppressed").count() == 1
    assert owner_api.get(url).json()[0]["justification"] == "accepted for the demo lab"
    again = owner_api.post("/api/v1/blueprints/security-audit", {"blueprint_id": stored.blueprint_id}, format="json")
    assert rule not in {f["rule_id"] for f in again.json()["findings"]}
    assert rule in {f["rule_id"] for f in again.json()["suppressed"]}
    reviewer = APIClient()
    reviewer.force_authenticate(make_user("api-reviewer", "reviewers"))
    denied = reviewer.post(url, {"rule_id": rule, "justification": "reviewers cannot do this"}, format="json")
    assert denied.status_code == 403


def test_rule_catalog(owner_api) -> None:  # type: ignore[no-untyped-def]
    rules = owner_api.get("/api/v1/blueprints/security-rules").json()
    assert len(rules) >= 30 and rules[0]["rule_id"] == "AICDN-SEC-001"


def test_schema_generation_includes_analysis_paths(owner_api) -> None:  # type: ignore[no-untyped-def]
    response = owner_api.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v1/templates/{template_id}/customize" in paths
    assert "/api/v1/blueprints/versions/{ref}/topology.svg" in paths
