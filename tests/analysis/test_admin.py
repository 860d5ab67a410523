"""Admin: price books are edited by admins only, validated, and saved through the audited service."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from aicdn_project.models import AuditEvent
from blueprints.models import PriceBook
from tests.analysis.conftest import make_user

pytestmark = pytest.mark.django_db
ADD = "/admin/blueprints/pricebook/add/"


def login(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def test_admin_adds_and_activates_a_price_book(admin, book) -> None:  # type: ignore[no-untyped-def]
    client = login(admin)
    page = client.get(ADD)
    assert page.status_code == 200 and book["version"] in page.content.decode()
    data = {**book, "version": "admin-edit-1"}
    response = client.post(ADD, {"name": "q3", "is_active": "on", "data": json.dumps(data), "notes": ""})
    assert response.status_code == 302
    stored = PriceBook.objects.get(name="q3")
    assert stored.is_active and stored.updated_by == admin
    assert AuditEvent.objects.filter(object_type="pricebook", action="pricebook.created").exists()


def test_invalid_price_book_is_shown_as_a_form_error(admin, book) -> None:  # type: ignore[no-untyped-def]
    broken = {**book, "reference_sheet": "moon"}
    response = login(admin).post(ADD, {"name": "bad", "data": json.dumps(broken), "notes": ""})
    assert response.status_code == 200
    assert "no sheet named" in response.content.decode()
    assert not PriceBook.objects.exists()


def test_non_admin_staff_cannot_edit(book) -> None:  # type: ignore[no-untyped-def]
    client = login(make_user("staff-requester", "requesters"))
    assert client.get(ADD).status_code == 403
    assert client.get("/admin/blueprints/pricebook/").status_code == 200


def test_suppressions_are_read_only(admin) -> None:  # type: ignore[no-untyped-def]
    client = login(admin)
    assert client.get("/admin/blueprints/securitysuppression/").status_code == 200
    assert client.get("/admin/blueprints/securitysuppression/add/").status_code == 403
