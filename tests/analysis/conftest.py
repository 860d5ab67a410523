"""Fixtures for the analysis tests: blueprint builders, the shipped price book, users per role, API clients."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

# blueprints/admin.py must import this module for the admin site to show these pages (autodiscover only loads
# `admin`); importing it here, before any URLconf is built, keeps the admin tests independent of that wiring.
from blueprints import admin_analysis  # noqa: F401
from blueprints.analysis.cost import SHIPPED_PRICE_BOOK, load_price_book_file


def bp(*resources: dict[str, Any], environment: str = "development", provider: str | None = None) -> dict[str, Any]:
    """A blueprint document around the given resources."""
    document: dict[str, Any] = {"version": "1.0", "name": "t", "environment": environment, "resources": list(resources)}
    if provider:
        document["provider"] = provider
    return document


def res(name: str, rtype: str, specs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A resource entry."""
    entry: dict[str, Any] = {"name": name, "type": rtype, **extra}
    if specs is not None:
        entry["specs"] = specs
    return entry


def web_stack(environment: str = "development") -> dict[str, Any]:
    """network <- db <- web (x2) <- lb: a small valid blueprint with every kind of dependency edge."""
    return bp(
        res("net", "network", {"cidr": "10.0.0.0/24"}),
        res(
            "db",
            "database",
            {"engine": "postgresql", "engine_version": "16", "cpu": 2, "memory": "8GB", "storage": "100GB"},
            network="net",
        ),
        res(
            "web", "compute", {"cpu": 2, "memory": "4GB", "storage": "40GB"}, count=2, network="net", depends_on=["db"]
        ),
        res("lb", "loadbalancer", {"targets": ["web"], "exposure": "public", "tls": True}, network="net"),
        environment=environment,
    )


def parse_svg(svg: str | bytes) -> ET.Element:
    """Parse an SVG we generated (the standard library parser is the point of the test: it must be plain XML)."""
    return ET.fromstring(svg)  # noqa: S314 - our own output, not untrusted input


def make_user(username: str, *roles: str) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=True)
    for role in roles:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def book() -> dict[str, Any]:
    return load_price_book_file(SHIPPED_PRICE_BOOK)


@pytest.fixture
def owner(db) -> User:
    return make_user("an-owner", "requesters")


@pytest.fixture
def stranger(db) -> User:
    return make_user("an-stranger", "requesters")


@pytest.fixture
def reviewer_user(db) -> User:
    return make_user("an-reviewer", "reviewers")


@pytest.fixture
def admin(db) -> User:
    return make_user("an-admin", "admins")


@pytest.fixture
def owner_api(owner: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(owner)
    return client


@pytest.fixture
def stored(owner: User):  # type: ignore[no-untyped-def]
    """A saved blueprint (the small web stack, development) owned by `owner`; returns its first version."""
    from blueprints.services import blueprint_create

    return blueprint_create(owner=owner, document=web_stack())
