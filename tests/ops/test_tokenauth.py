"""Remembered API tokens (aicdn_project.tokenauth): served from memory, and refused at once after any change."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from aicdn_project import tokenauth
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

URL = "/api/v1/templates"


@pytest.fixture
def api_user() -> tuple[User, Token]:
    user = make_user("token-user", "requesters")
    return user, Token.objects.get_or_create(user=user)[0]


def _client(token: Token | str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_a_known_token_is_answered_from_memory(api_user, django_assert_num_queries) -> None:
    user, token = api_user
    client = _client(token.key)
    assert client.get(URL).status_code == 200  # read from the database, then remembered
    with django_assert_num_queries(0):
        response = client.get(URL)
    assert response.status_code == 200
    assert response.wsgi_request.user.pk == user.pk


def test_a_deleted_token_is_refused_with_the_next_request(api_user) -> None:
    _user, token = api_user
    client = _client(token.key)
    assert client.get(URL).status_code == 200
    token.delete()
    assert client.get(URL).status_code == 401


def test_a_deactivated_user_is_refused_with_the_next_request(api_user) -> None:
    user, token = api_user
    client = _client(token.key)
    assert client.get(URL).status_code == 200
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert client.get(URL).status_code == 401


def test_another_process_change_is_seen_through_the_epoch(api_user) -> None:
    """Another process's change reaches this one only through the epoch in Redis."""
    _user, token = api_user
    client = _client(token.key)
    assert client.get(URL).status_code == 200
    Token.objects.filter(pk=token.pk)._raw_delete(using="default")  # the row goes, no signal here: as elsewhere
    assert client.get(URL).status_code == 200  # still remembered: nothing said it changed
    tokenauth.publish_bump()  # what the other process's signal does
    assert client.get(URL).status_code == 401


def test_without_redis_every_request_goes_to_the_database(api_user, monkeypatch, django_assert_num_queries) -> None:
    _user, token = api_user
    client = _client(token.key)
    assert client.get(URL).status_code == 200
    monkeypatch.setattr(tokenauth, "current_epoch", lambda: None)  # what it answers when Redis cannot be read
    with django_assert_num_queries(1):  # DRF's own token query, as without the cache
        assert client.get(URL).status_code == 200


def test_an_unknown_token_is_refused_and_not_remembered(db) -> None:
    assert _client("0" * 40).get(URL).status_code == 401
    assert "0" * 40 not in tokenauth._entries


def test_a_change_published_by_another_process_is_seen_by_the_next_request(api_user, settings) -> None:
    """The epoch arrives by the subscription, not by a read per request: a real second process publishes it."""
    _user, token = api_user
    client = _client(token.key)
    assert client.get(URL).status_code == 200
    Token.objects.filter(pk=token.pk)._raw_delete(using="default")  # gone, and nothing in this process said so
    assert client.get(URL).status_code == 200  # remembered
    script = (
        "import django, sys; django.setup(); from django.conf import settings; settings.KEY_PREFIX = sys.argv[1];"
        "from aicdn_project.tokenauth import publish_bump; publish_bump()"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aicdn_project.test_settings"}
    subprocess.run([sys.executable, "-c", script, settings.KEY_PREFIX], env=env, check=True, capture_output=True)
    assert client.get(URL).status_code == 401


def test_a_lost_subscription_sends_every_request_to_the_database_until_it_is_made_again(
    api_user, monkeypatch, django_assert_num_queries
) -> None:
    _user, token = api_user
    client = _client(token.key)
    assert client.get(URL).status_code == 200
    with django_assert_num_queries(0):
        assert client.get(URL).status_code == 200
    # The connection ends under the subscription (as when Redis restarts): a publication could have been missed.
    tokenauth.watcher._pubsub.connection._sock.shutdown(socket.SHUT_RDWR)
    with django_assert_num_queries(1):  # DRF's own token query: nothing is taken from memory
        assert client.get(URL).status_code == 200
    assert tokenauth.watcher._pubsub is None
    with django_assert_num_queries(1):  # still within RESUBSCRIBE_SECONDS of the failure
        assert client.get(URL).status_code == 200
    monkeypatch.setattr(tokenauth.watcher, "_retry_at", 0.0)
    with django_assert_num_queries(1):  # subscribed again: memory starts empty, so one read
        assert client.get(URL).status_code == 200
    with django_assert_num_queries(0):
        assert client.get(URL).status_code == 200


def test_a_remembered_user_is_a_new_object_for_every_request(api_user) -> None:
    user, token = api_user
    client = _client(token.key)
    first = client.get(URL).wsgi_request.user
    second, third = client.get(URL).wsgi_request.user, client.get(URL).wsgi_request.user
    assert second is not third and second._state is not third._state
    assert (second.pk, second.username, second.is_active, second.password) == (
        user.pk,
        user.username,
        user.is_active,
        user.password,
    )
    assert first.pk == second.pk and second._state.adding is False and second._state.db == "default"
    second.marker = True  # anything one request sets on its user
    assert not hasattr(third, "marker")
    assert list(second.groups.values_list("name", flat=True)) == ["requesters"]


def test_a_subscription_that_cannot_be_polled_sends_requests_to_the_database(
    api_user, monkeypatch, django_assert_num_queries
) -> None:
    _user, token = api_user
    client = _client(token.key)

    def no_poll(sock: object) -> None:
        raise OSError("poll(2) unavailable")

    tokenauth.watcher._close()  # the next request subscribes again, and cannot set up its poll
    monkeypatch.setattr(tokenauth, "_poller", no_poll)
    for _ in range(2):
        with django_assert_num_queries(1):  # DRF's own token query, and no 500
            assert client.get(URL).status_code == 200
    assert tokenauth.current_epoch() is None
