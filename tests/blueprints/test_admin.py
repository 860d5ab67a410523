"""Blueprint admin pages: read-only, highlighted source, diff to the parent."""

from __future__ import annotations

import pytest
from django.test import Client

from blueprints import services
from tests.blueprints.test_api import V2

pytestmark = pytest.mark.django_db


def test_version_page_shows_highlighted_source_and_diff(requester, admin_user, seed_yaml: str) -> None:  # type: ignore[no-untyped-def]
    v1 = services.blueprint_create(owner=requester, source=seed_yaml)
    v2, _ = services.blueprint_version_create(blueprint_id=v1.blueprint_id, author=requester, source=V2)
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/admin/blueprints/blueprintversion/{v2.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "1 added, 1 changed, 0 removed" in html
    assert "engine_version" in html and "<span" in html  # pygments markup around the source
    first = client.get(f"/admin/blueprints/blueprintversion/{v1.pk}/change/").content.decode()
    assert "first version: no parent" in first
    listing = client.get("/admin/blueprints/blueprint/")
    assert listing.status_code == 200 and "production-cluster" in listing.content.decode()


def test_versions_cannot_be_changed_or_deleted_in_admin(requester, admin_user, seed_yaml: str) -> None:  # type: ignore[no-untyped-def]
    v1 = services.blueprint_create(owner=requester, source=seed_yaml)
    client = Client()
    client.force_login(admin_user)
    assert client.get(f"/admin/blueprints/blueprintversion/{v1.pk}/delete/").status_code == 403
    assert client.get("/admin/blueprints/blueprintversion/add/").status_code == 403
    response = client.post(f"/admin/blueprints/blueprintversion/{v1.pk}/change/", {"message": "edited"})
    assert response.status_code == 403
    v1.refresh_from_db()
    assert v1.message == ""
