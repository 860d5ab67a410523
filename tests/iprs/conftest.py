"""IPR test fixtures: one user per role, an environment, blueprint versions made through the real services."""

from __future__ import annotations

import copy
import os
from typing import Any

import factory
import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from aicdn_project import roles
from blueprints.services import blueprint_create, blueprint_version_create
from engines.models import Environment, EnvironmentKind
from iprs import services
from iprs.models import IPR

WEB = {"name": "web", "type": "compute", "count": 2, "specs": {"cpu": 2, "memory": "4GB", "storage": "20GB"}}
# A database reachable from the whole internet: a "high" finding (AICDN-SEC-006) plus a "low" one.
PUBLIC_DB = {
    "name": "db",
    "type": "database",
    "specs": {
        "engine": "postgres",
        "cpu": 2,
        "memory": "8GB",
        "storage": "100GB",
        "ports": [{"port": 5432, "source": "0.0.0.0/0"}],
    },
}
# About 4,700 USD a month: far above the default 100 USD increase threshold.
BIG_WEB = {"name": "web", "type": "compute", "count": 20, "specs": {"cpu": 16, "memory": "64GB", "storage": "200GB"}}


def doc(*resources: dict[str, Any], name: str = "shop") -> dict[str, Any]:
    return {"version": "1.0", "name": name, "resources": [copy.deepcopy(r) for r in resources]}


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    is_staff = True
    password = factory.django.Password("pw")

    @factory.post_generation
    def roles(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        for role in extracted or ():
            self.groups.add(Group.objects.get_or_create(name=role)[0])


class EnvironmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Environment
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"env{n}")
    kind = EnvironmentKind.STAGING
    engine = "simulator"


@pytest.fixture
def users(db) -> dict[str, User]:
    return {
        "author": UserFactory(username="alice", roles=[roles.REQUESTERS]),
        "requester": UserFactory(username="randy", roles=[roles.REQUESTERS]),
        "reviewer": UserFactory(username="rita", roles=[roles.REVIEWERS]),
        "reviewer2": UserFactory(username="rob", roles=[roles.REVIEWERS]),
        "reviewer3": UserFactory(username="ruth", roles=[roles.REVIEWERS]),
        "operator": UserFactory(username="otto", roles=[roles.OPERATORS]),
        "admin": UserFactory(username="ada", roles=[roles.ADMINS]),
        "nobody": UserFactory(username="nora", roles=[]),
    }


@pytest.fixture
def env(db) -> Environment:
    return EnvironmentFactory(name="staging")


@pytest.fixture
def make_version(users):
    """make_version(*resources, author=None) -> a BlueprintVersion of blueprint "shop" (created on first use)."""

    def make(*resources: dict[str, Any], author: User | None = None) -> Any:
        owner = author or users["author"]
        from blueprints.models import Blueprint

        existing = Blueprint.objects.filter(owner=owner, name="shop").first()
        if existing is None:
            return blueprint_create(owner=owner, document=doc(*resources))
        return blueprint_version_create(blueprint_id=existing.pk, author=owner, document=doc(*resources))[0]

    return make


@pytest.fixture
def open_ipr(users, env, make_version):
    """open_ipr(*resources, **kwargs) -> an open IPR by the author against `env` (default: the WEB blueprint)."""

    def make(*resources: dict[str, Any], environment: Environment | None = None, **kwargs: Any) -> IPR:
        author = kwargs.pop("author", users["author"])
        version = make_version(*(resources or (WEB,)), author=author)
        return services.ipr_open(
            author=author,
            blueprint_version=version,
            environment=environment or env,
            title=kwargs.pop("title", "add web tier"),
            **kwargs,
        )

    return make


def set_state(ipr: IPR, state: str) -> IPR:
    """Put an IPR in any state for a test (a direct write, bypassing the state machine on purpose)."""
    IPR.objects.filter(pk=ipr.pk).update(state=state)
    ipr.refresh_from_db()
    return ipr


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    """Records deploy_ipr.delay calls instead of sending them to a broker."""
    from iprs import tasks

    calls: list[int] = []
    monkeypatch.setattr(tasks.deploy_ipr, "delay", lambda ipr_id: calls.append(ipr_id))
    return calls


@pytest.fixture
def api_as():
    def make(user: User) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """SQLite: a file test database instead of the shared in-memory one, so threads get real file locking.

    An in-memory shared-cache database answers a second writer with "table is locked" at once (the busy timeout
    does not apply to shared-cache locks); a file database with BEGIN IMMEDIATE makes writers wait their turn, as
    PostgreSQL's row locks do. Only takes effect when the IPR tests are the first to set the database up.
    """
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3" and not db.get("TEST", {}).get("NAME"):
        db.setdefault("TEST", {})["NAME"] = str(settings.VAR_DIR / f"test-iprs-{os.getpid()}.sqlite3")


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    # Rate limits count per user per minute in the shared Redis; these tests send hundreds of requests as a few
    # users, and the limiter has its own tests. Leaving it on would make results depend on test order.
    settings.RATELIMIT_ENABLE = False
