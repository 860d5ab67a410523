"""Blueprint API: authentication, create from YAML or JSON, content-addressed versions, diff, hostile input."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from aicdn_project.models import AuditEvent
from blueprints.models import Blueprint, BlueprintVersion
from tests.blueprints.test_parsing import BILLION_LAUGHS

pytestmark = pytest.mark.django_db

V2 = """\
version: "1.0"
name: production-cluster
environment: staging
resources:
  - type: compute
    name: web-server-01
    provider: proxmox
    specs: {cpu: 8, memory: 16GB, storage: 100GB}
  - type: database
    name: db
    specs: {engine: postgresql, engine_version: "16"}
"""


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/blueprints"),
        ("post", "/api/v1/blueprints"),
        ("get", "/api/v1/blueprints/schema"),
        ("post", "/api/v1/blueprints/validate"),
        ("get", "/api/v1/blueprints/versions"),
        ("get", "/api/v1/blueprints/1"),
        ("get", "/api/v1/blueprints/diff?to=1"),
    ],
)
def test_api_requires_authentication(api: APIClient, method: str, path: str) -> None:
    response = getattr(api, method)(path)
    assert response.status_code == 401


def test_health_needs_no_auth(api: APIClient) -> None:
    assert api.get("/api/v1/monitoring/health").json() == {"status": "ok"}


def test_token_authentication(api: APIClient, requester) -> None:  # type: ignore[no-untyped-def]
    token = Token.objects.create(user=requester)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get("/api/v1/blueprints").status_code == 200


def test_create_from_raw_yaml_body(requester_api: APIClient, seed_yaml: str) -> None:
    response = requester_api.post("/api/v1/blueprints", seed_yaml, content_type="application/yaml")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["number"] == 1
    assert len(body["commit_id"]) == 12 and body["sha256"].startswith(body["commit_id"])
    assert body["document"]["resources"][0]["name"] == "web-server-01"
    assert Blueprint.objects.get().head_id == body["id"]
    assert AuditEvent.objects.filter(action="blueprint.version_created").count() == 1


def test_create_from_json_document_and_identical_content(requester_api: APIClient, seed_yaml: str) -> None:
    first = requester_api.post("/api/v1/blueprints", {"source": seed_yaml}, format="json").json()
    bp_id = first["blueprint"]
    # The same content as a JSON object: same canonical JSON, so the same version, not a duplicate.
    doc = first["document"]
    again = requester_api.post(f"/api/v1/blueprints/{bp_id}/versions", {"document": doc}, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert BlueprintVersion.objects.count() == 1


def test_second_blueprint_with_same_name_conflicts(requester_api: APIClient, seed_yaml: str) -> None:
    requester_api.post("/api/v1/blueprints", {"source": seed_yaml}, format="json")
    response = requester_api.post("/api/v1/blueprints", {"source": seed_yaml}, format="json")
    assert response.status_code == 409
    assert response.json()["error"] == "blueprint_exists"


def test_add_version_and_diff(requester_api: APIClient, seed_yaml: str) -> None:
    v1 = requester_api.post("/api/v1/blueprints", {"source": seed_yaml}, format="json").json()
    response = requester_api.post(
        f"/api/v1/blueprints/{v1['blueprint']}/versions", {"source": V2, "message": "bigger"}, format="json"
    )
    assert response.status_code == 201
    v2 = response.json()
    assert v2["number"] == 2 and v2["parent"] == v1["id"]

    by_commit = requester_api.get(f"/api/v1/blueprints/versions/{v2['commit_id']}")
    assert by_commit.status_code == 200 and by_commit.json()["id"] == v2["id"]

    diff = requester_api.get(f"/api/v1/blueprints/diff?to={v2['commit_id']}").json()
    structured = diff["structured"]
    assert structured["added"] == [{"name": "db", "type": "database"}]
    changed = {c["field"]: c for c in structured["changed"][0]["changes"]}
    assert changed["specs.cpu"]["old"] == 4 and changed["specs.cpu"]["new"] == 8
    assert any(c["field"] == "environment" for c in structured["blueprint"])
    assert "-    cpu: 4" in diff["unified"] and "+    cpu: 8" in diff["unified"]

    versions = requester_api.get(f"/api/v1/blueprints/{v1['blueprint']}/versions").json()
    assert [v["number"] for v in versions["results"]] == [2, 1]


def test_invalid_blueprint_lists_every_error_and_stores_nothing(requester_api: APIClient) -> None:
    bad = 'version: "1.0"\nname: x\nresources:\n  - {name: a, type: compute, specs: {cpu: 999}}\n'
    bad += "  - {name: b, type: database, specs: {engine: oracle}}\n"
    response = requester_api.post("/api/v1/blueprints", {"source": bad}, format="json")
    assert response.status_code == 400
    paths = {e["path"] for e in response.json()["details"]["errors"]}
    assert {"$.resources[0].specs.cpu", "$.resources[1].specs.engine"} <= paths
    assert Blueprint.objects.count() == 0 and BlueprintVersion.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (BILLION_LAUGHS, "application/yaml", 400, "alias"),
        ("a: " + "[" * 100 + "]" * 100, "application/yaml", 400, "deeper"),
        ('version: "1.0"\nname: a\nname: b\n', "application/yaml", 400, "duplicate key"),
        ("x: " + "y" * (1024 * 1024 + 10), "application/yaml", 400, "limit"),
        (b"name: \xff\n", "application/yaml", 400, "UTF-8"),
    ],
    ids=["billion-laughs", "deep-nesting", "duplicate-keys", "oversized", "invalid-utf8"],
)
def test_hostile_yaml_gets_4xx_and_writes_nothing(
    requester_api: APIClient, body: str | bytes, content_type: str, status: int, needle: str
) -> None:
    response = requester_api.post("/api/v1/blueprints", body, content_type=content_type)
    assert response.status_code == status, response.content[:300]
    assert needle in response.json()["message"]
    assert Blueprint.objects.count() == 0 and AuditEvent.objects.count() == 0


def test_ten_mebibyte_body_is_refused(requester_api: APIClient) -> None:
    response = requester_api.post("/api/v1/blueprints", {"source": "a: " + "x" * (10 * 1024 * 1024)}, format="json")
    assert response.status_code in (400, 413)
    assert Blueprint.objects.count() == 0


def test_validate_endpoint_does_not_save(requester_api: APIClient, seed_yaml: str) -> None:
    ok = requester_api.post("/api/v1/blueprints/validate", seed_yaml, content_type="application/yaml").json()
    assert ok["valid"] is True and ok["summary"]["instances"] == {"compute": 1}
    bad = requester_api.post("/api/v1/blueprints/validate", {"source": "version: '1.0'\n"}, format="json").json()
    assert bad["valid"] is False
    assert any("name" in e["message"] for e in bad["errors"])
    assert Blueprint.objects.count() == 0


def test_schema_endpoint_serves_json_schema(requester_api: APIClient) -> None:
    schema = requester_api.get("/api/v1/blueprints/schema").json()
    assert schema["properties"]["version"] == {
        "const": "1.0",
        "description": schema["properties"]["version"]["description"],
    }
    assert "kubernetes_cluster" in schema["$defs"]["resource"]["properties"]["type"]["enum"]


def test_owner_isolation(requester_api: APIClient, other_requester, seed_yaml: str) -> None:  # type: ignore[no-untyped-def]
    v1 = requester_api.post("/api/v1/blueprints", {"source": seed_yaml}, format="json").json()
    other = APIClient()
    other.force_authenticate(other_requester)
    assert other.get(f"/api/v1/blueprints/{v1['blueprint']}").status_code == 404
    assert other.get(f"/api/v1/blueprints/versions/{v1['commit_id']}").status_code == 404
    denied = other.post(f"/api/v1/blueprints/{v1['blueprint']}/versions", {"source": V2}, format="json")
    assert denied.status_code == 403
    assert BlueprintVersion.objects.count() == 1


def test_reviewer_reads_everyones_blueprints(requester_api: APIClient, reviewer, seed_yaml: str) -> None:  # type: ignore[no-untyped-def]
    v1 = requester_api.post("/api/v1/blueprints", {"source": seed_yaml}, format="json").json()
    client = APIClient()
    client.force_authenticate(reviewer)
    assert client.get(f"/api/v1/blueprints/{v1['blueprint']}").status_code == 200


def test_user_without_role_cannot_create(api: APIClient, seed_yaml: str, django_user_model) -> None:  # type: ignore[no-untyped-def]
    nobody = django_user_model.objects.create_user(username="nobody", password="x")
    api.force_authenticate(nobody)
    assert api.post("/api/v1/blueprints", {"source": seed_yaml}, format="json").status_code == 403


def test_openapi_schema_and_docs(requester_api: APIClient) -> None:
    schema = requester_api.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/blueprints" in schema.content
    assert requester_api.get("/api/docs/").status_code == 200


def test_browsable_api_renders(requester_api: APIClient) -> None:
    response = requester_api.get("/api/v1/blueprints", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and b"<html" in response.content.lower()


@pytest.mark.parametrize(("trusted", "expected"), [([], "127.0.0.1"), (["127.0.0.1"], "203.0.113.9")])
def test_audit_records_the_client_ip_behind_trusted_proxies_only(
    requester_api: APIClient, seed_yaml: str, settings, trusted: list[str], expected: str
) -> None:  # type: ignore[no-untyped-def]
    settings.TRUSTED_PROXIES = trusted
    response = requester_api.post(
        "/api/v1/blueprints",
        {"source": seed_yaml},
        format="json",
        REMOTE_ADDR="127.0.0.1",
        HTTP_X_FORWARDED_FOR="203.0.113.9",
    )
    assert response.status_code == 201
    assert set(AuditEvent.objects.values_list("client_ip", flat=True)) == {expected}
