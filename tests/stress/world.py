"""A small seeded world for the stress tests and the load benchmark: users per role with tokens, an environment,
blueprints with versions and IPRs in several states, all made through the real services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token

from aicdn_project import roles

WEB = {"name": "web", "type": "compute", "count": 2, "specs": {"cpu": 2, "memory": "4GB", "storage": "20GB"}}
DB = {
    "name": "db",
    "type": "database",
    "specs": {"engine": "postgresql", "engine_version": "16", "cpu": 2, "memory": "8GB", "storage": "100GB"},
}


def document(*resources: dict[str, Any], name: str = "shop") -> dict[str, Any]:
    return {"version": "1.0", "name": name, "resources": [dict(r) for r in resources]}


@dataclass
class World:
    users: dict[str, User]
    tokens: dict[str, str]
    environment: str
    blueprint_ids: list[int]
    version_ids: list[int]
    commit_ids: list[str]
    ipr_ids: list[int]
    template_ids: list[str] = field(default_factory=list)


def _user(username: str, role: str | None, *, superuser: bool = False) -> User:
    user, _ = User.objects.get_or_create(username=username, defaults={"is_staff": True, "is_superuser": superuser})
    user.set_password("pw-" + username)
    user.save()
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def seed_world(*, iprs: int = 3, prefix: str = "stress") -> World:
    """Create the world; `iprs` open IPRs by the requester against the environment."""
    from blueprints.analysis import list_templates
    from blueprints.services import blueprint_create, blueprint_version_create
    from iprs import services as ipr_services

    users = {
        "admin": _user(f"{prefix}-admin", roles.ADMINS, superuser=True),
        "reviewer": _user(f"{prefix}-reviewer", roles.REVIEWERS),
        "reviewer2": _user(f"{prefix}-reviewer2", roles.REVIEWERS),
        "requester": _user(f"{prefix}-requester", roles.REQUESTERS),
        "operator": _user(f"{prefix}-operator", roles.OPERATORS),
    }
    tokens = {name: Token.objects.get_or_create(user=user)[0].key for name, user in users.items()}
    env_name = f"{prefix}-staging"
    from engines.models import Environment

    environment = Environment.objects.filter(name=env_name).first() or ipr_services.environment_create(
        actor=users["admin"], name=env_name, engine="simulator", kind="staging"
    )
    requester = users["requester"]
    first = blueprint_create(owner=requester, document=document(WEB))
    second, _ = blueprint_version_create(blueprint_id=first.blueprint_id, author=requester, document=document(WEB, DB))
    other = blueprint_create(owner=users["admin"], document=document(DB, name="ledger"))
    ipr_ids = [
        ipr_services.ipr_open(
            author=requester, blueprint_version=second, environment=environment, title=f"stress change {n}"
        ).pk
        for n in range(iprs)
    ]
    versions = [first, second, other]
    return World(
        users=users,
        tokens=tokens,
        environment=env_name,
        blueprint_ids=[first.blueprint_id, other.blueprint_id],
        version_ids=[v.pk for v in versions],
        commit_ids=[v.commit_id for v in versions],
        ipr_ids=ipr_ids,
        template_ids=[t["id"] for t in list_templates()],
    )


def row_counts() -> dict[str, int]:
    """Rows of every model that has a table (the "writes no row" check); a model whose migration is not written
    yet has no table to write to."""
    from django.db import connection

    tables = set(connection.introspection.table_names())
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if model._meta.db_table in tables
    }
