"""Fixtures every test package may use: users per role and authenticated API clients."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

SEED_BLUEPRINT = """\
version: "1.0"
name: "production-cluster"
resources:
  - type: compute
    name: web-server-01
    provider: proxmox
    specs:
      cpu: 4
      memory: 8GB
      storage: 100GB
"""


def make_user(username: str, *roles: str, superuser: bool = False) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=True)
    if superuser:
        user.is_superuser = True
        user.save(update_fields=["is_superuser"])
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])  # transactional tests flush groups
    return user


@pytest.fixture
def requester(db) -> User:
    return make_user("req", "requesters")


@pytest.fixture
def other_requester(db) -> User:
    return make_user("req2", "requesters")


@pytest.fixture
def reviewer(db) -> User:
    return make_user("rev", "reviewers")


@pytest.fixture
def admin_user(db) -> User:
    return make_user("boss", "admins")


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def requester_api(requester: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(requester)
    return client


@pytest.fixture
def seed_yaml() -> str:
    return SEED_BLUEPRINT
