"""Conversation fixtures: the scripted and the real model server (from tests/llm), an environment, a stored
blueprint, an open IPR, session cookies for websocket tests, and helpers that script whole agent turns."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from aicdn_project.models import AuditEvent
from blueprints.services import blueprint_create
from engines.models import Environment, EnvironmentKind
from iprs.models import IPR, Review
from iprs.services import ipr_open
from tests.llm.conftest import (  # noqa: F401  (fixtures re-used by name)
    ScriptedServer,
    completion,
    dead_url,
    free_port,
    scripted,
)

WEB_DOC = {
    "version": "1.0",
    "name": "shop",
    "resources": [
        {"name": "web", "type": "compute", "count": 2, "specs": {"cpu": 2, "memory": "4GB", "storage": "20GB"}}
    ],
}
GENERATE_REQUEST = "Create a web app with 2 servers behind a load balancer and a postgres database"
REPLY_PIECES = ["Your ", "blueprint ", "is ", "ready."]
# Audit actions that would mean something was approved, queued or deployed.
FORBIDDEN_ACTIONS = ("ipr.approved", "ipr.queued", "ipr.deploying", "ipr.deployed", "ipr.review")


def action(tool: str, **arguments: Any) -> dict[str, Any]:
    """A scripted answer to the agent's next-action request."""
    return completion(json.dumps({"tool": tool, "arguments": arguments}, separators=(",", ":")))


def native_call(name: str, arguments: Any, call_id: str = "call_1") -> dict[str, Any]:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return completion(
        "", tool_calls=[{"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}]
    )


def script_generate_turn(server: ScriptedServer, pieces: list[str] | None = None) -> None:
    """A routed generation turn: the intent request, then the streamed reply."""
    server.reply_intent(web_servers=2, load_balancer=True, database="postgresql", database_instances=1)
    server.reply_stream(pieces or REPLY_PIECES)


@pytest.fixture
def environment(db) -> Environment:
    return Environment.objects.create(name="staging", kind=EnvironmentKind.STAGING, engine="simulator")


@pytest.fixture
def stored_blueprint(requester) -> Any:
    """A blueprint of `requester` (the head version is returned)."""
    return blueprint_create(owner=requester, document=WEB_DOC, message="seed")


@pytest.fixture
def open_ipr(requester, stored_blueprint, environment) -> IPR:
    return ipr_open(author=requester, blueprint_version=stored_blueprint, environment=environment, title="seed change")


def forbidden_audit_events() -> list[str]:
    return list(AuditEvent.objects.filter(action__in=FORBIDDEN_ACTIONS).values_list("action", flat=True)) + [
        f"review:{r.decision}" for r in Review.objects.all()
    ]


@pytest.fixture
def session_headers() -> Any:
    """Headers a browser of `user` sends with a websocket handshake: its session cookie and a same-site Origin."""

    def make(user: Any | None) -> list[tuple[bytes, bytes]]:
        headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
        if user is not None:
            client = Client()
            client.force_login(user)
            headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
        return headers

    return make


@pytest.fixture
def chat_limits(settings) -> Iterator[Any]:
    """Rate limits on for the chat group only, with counters of their own."""
    from aicdn_project import ratelimit

    run = uuid.uuid4().hex[:10]
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_CACHE_PREFIX = f"rl-conv-{run}:"
    settings.KEY_PREFIX = f"{settings.KEY_PREFIX}-{run}"
    settings.RATELIMIT_RATES = {**settings.RATELIMIT_RATES, "chat": "1/m"}
    yield settings
    ratelimit.reset_stats()


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
