"""Stress fixtures: a seeded world, and the Django WSGI application called in-process inside the test transaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections

from tests.stress.world import World, seed_world


@pytest.fixture
def world(db, settings) -> World:
    # The detailed health check probes the model server and Celery: keep those probes short when fuzzing hits it.
    settings.HEALTH_CHECK_TIMEOUT = 0.2
    settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens, refused at once
    return seed_world()


@pytest.fixture
def wsgi_app(db) -> Iterator[WSGIHandler]:
    """Django's real WSGI handler (every middleware), sharing the test's connection and transaction.

    The handler's request_started/finished signals close "obsolete" connections, and a connection inside the test
    transaction looks obsolete (autocommit off): Django's own test client unhooks them for the same reason.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
