"""Deployment test fixtures: users per role, environments made through the services, blueprint versions, and a
helper that takes a document through the whole IPR flow (open, two approvals, deploy, the deploy task).

The executor runs operations in threads with their own database connections, so these tests use committed data
(`transactional_db`); the deploy task runs eagerly in this process unless a test starts real workers.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from aicdn_project import realtime, roles
from aicdn_project.celery import app as celery_app
from blueprints.models import Blueprint, BlueprintVersion
from blueprints.services import blueprint_create, blueprint_version_create
from engines.models import Environment
from engines.simulator import reset_attempts
from iprs import services
from iprs.models import IPR
from tests.conftest import make_user
from tests.engines.conftest import docker_config, dockerd  # noqa: F401 - the session dockerd fixture, reused

_names = itertools.count(1)

# Simulator latencies for tests: 50 ms per operation unless a test says otherwise, no jitter.
FAST = dict.fromkeys(("compute", "container", "database", "cache", "loadbalancer", "network", "volume"), 0.05)


def doc(*resources: dict[str, Any], name: str = "stack") -> dict[str, Any]:
    return {"version": "1.0", "name": name, "resources": [copy.deepcopy(r) for r in resources]}


def compute(name: str, count: int = 1, **extra: Any) -> dict[str, Any]:
    specs = {"cpu": 1, "memory": "64MB", **extra.pop("specs", {})}
    return {"name": name, "type": "compute", "count": count, "specs": specs, **extra}


@pytest.fixture
def users(transactional_db: None) -> dict[str, Any]:
    return {
        "author": make_user("alice", roles.REQUESTERS),
        "reviewer": make_user("rita", roles.REVIEWERS),
        "reviewer2": make_user("rob", roles.REVIEWERS),
        "operator": make_user("otto", roles.OPERATORS),
        "admin": make_user("ada", roles.ADMINS),
    }


@pytest.fixture(autouse=True)
def _fresh_simulator_attempts() -> None:
    reset_attempts()


@pytest.fixture
def fast_retries(settings: Any) -> Any:
    settings.AICDN_DEPLOY_RETRY_BACKOFF = 0.01
    settings.AICDN_DEPLOY_RETRY_BACKOFF_MAX = 0.05
    return settings


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """deploy_ipr.delay (sent after commit by ipr_deploy) runs the real task in this process."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = previous


@pytest.fixture
def make_env(users: dict[str, Any]) -> Any:
    """make_env(engine="simulator", config=None, **policy) -> an Environment created by an admin: two approvals,
    no cost rule, and only critical findings block (these tests are about deploying, not about the audit)."""

    def make(engine: str = "simulator", config: dict[str, Any] | None = None, **policy: Any) -> Environment:
        if config is None:
            config = {"latency_scale": 1, "latencies": FAST, "jitter": 0, "seed": 3}
        if engine == "simulator":
            config = {"cluster": f"deployments-{next(_names)}", **config}
        return services.environment_create(
            actor=users["admin"],
            name=f"{engine[:3]}-{next(_names)}",
            engine=engine,
            config=config,
            policy={
                "required_approvals": 2,
                "cost_increase_threshold": None,
                "blocking_severity": "critical",
                **policy,
            },
        )

    return make


@pytest.fixture
def make_version(users: dict[str, Any]) -> Any:
    def make(document: dict[str, Any]) -> BlueprintVersion:
        owner = users["author"]
        existing = Blueprint.objects.filter(owner=owner, name=document["name"]).first()
        if existing is None:
            return blueprint_create(owner=owner, document=document)
        return blueprint_version_create(blueprint_id=existing.pk, author=owner, document=document)[0]

    return make


@pytest.fixture
def approve_and_deploy(users: dict[str, Any], eager_tasks: None) -> Any:
    """Two reviewers approve, an operator deploys; the deploy task runs (eagerly) once the deploy commits."""

    def run(ipr: IPR) -> IPR:
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
        services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)
        services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
        return IPR.objects.get(pk=ipr.pk)

    return run


@pytest.fixture
def deploy(users: dict[str, Any], make_version: Any, approve_and_deploy: Any) -> Any:
    """deploy(env, document, **ipr_kwargs) -> the IPR after the deploy task ran."""

    def run(environment: Environment, document: dict[str, Any], **kwargs: Any) -> IPR:
        version = make_version(document)
        ipr = services.ipr_open(
            author=kwargs.pop("author", users["author"]),
            blueprint_version=version,
            environment=environment,
            title=kwargs.pop("title", f"deploy {version.commit_id}"),
            **kwargs,
        )
        return approve_and_deploy(ipr)

    return run


class GroupListener:
    """A channel in an `ipr-<id>` group on the real channel layer, as the chat page and the CLI would have."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        self.groups: list[str] = []

    def join(self, group: str) -> None:
        async_to_sync(self.layer.group_add)(group, self.channel)
        self.groups.append(group)

    def drain(self, timeout: float = 0.5) -> list[dict[str, Any]]:
        import asyncio

        assert realtime.flush(), "the publisher did not send its queued events in time"

        async def receive_all() -> list[dict[str, Any]]:
            events = []
            while True:
                try:
                    events.append(await asyncio.wait_for(self.layer.receive(self.channel), timeout))
                except TimeoutError:
                    return events

        return async_to_sync(receive_all)()

    def close(self) -> None:
        for group in self.groups:
            async_to_sync(self.layer.group_discard)(group, self.channel)


@pytest.fixture
def listener() -> Iterator[GroupListener]:
    found = GroupListener()
    try:
        yield found
    finally:
        found.close()


__all__ = ["FAST", "GroupListener", "compute", "doc", "docker_config"]
