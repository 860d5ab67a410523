"""API token authentication that keeps each token's user row in process memory, dropped everywhere at once when any
token or user changes.

DRF's TokenAuthentication reads the token and its user from the database on every request: under daphne that was
~1.4 ms of a ~5 ms request (measured with bench/load.py's view: the ORM, the query, and a request thread's first use
of a pooled connection). Here a token seen once is answered from memory while the **auth epoch** is unchanged.

The epoch is a counter in Redis. Every save or delete of a token or a user increments it, when it happens and again
when its transaction commits, and publishes the new value on a Redis channel of the same name (one script: INCR +
PUBLISH). Each process subscribes to that channel (:class:`EpochWatcher`) and, before answering a token from memory,
reads whatever the subscription has received without waiting for it (a non-blocking poll of its socket, no round
trip). Redis queues a publication for its subscribers before it answers the publisher and writes both out in the same
pass of its event loop, microseconds apart, while the changing request still has to finish and answer its client:
so the new epoch is in every subscribed process's socket buffer before that client can send its next request, and
that request sees it wherever it lands. A remembered entry counts only under the epoch it was read at.

Whenever the subscription is not known to be live (Redis down, the connection lost, not yet subscribed), nothing is
taken from memory: every request goes to the database, as DRF's does, and a new subscription starts by forgetting
everything and reading the epoch afresh. An entry also expires after MAX_AGE seconds, which bounds what a lost
increment (Redis down at the moment of the change) could leave valid.

What is remembered is the user row's field values; every request gets a new User object built from them, so nothing
a request caches on its user (permissions, groups) reaches another request."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.base import ModelState
from redis.backoff import NoBackoff
from redis.retry import Retry
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

logger = logging.getLogger(__name__)

MAX_AGE = 60.0  # seconds an entry may be used at all
MAX_ENTRIES = 10_000
RESUBSCRIBE_SECONDS = 1.0  # after a failure, how long requests go to the database before the next attempt
SUBSCRIBE_TIMEOUT = 2.0  # seconds to wait for Redis to confirm the subscription


@dataclass(frozen=True)
class _Entry:
    epoch: bytes
    fields: dict[str, Any]  # the user row: attname -> value
    created: Any
    expires: float


_entries: dict[str, _Entry] = {}
_lock = threading.Lock()


def epoch_key() -> str:
    """The Redis key of the auth epoch, and the name of the channel its new values are published on."""
    return f"{settings.KEY_PREFIX}:auth-epoch"


def _redis() -> redis.Redis:
    from aicdn_project.ratelimit import redis_client  # the process-wide client on the cache's Redis

    return redis_client()


# INCR + PUBLISH in one script: every increment is announced, in order, with the value it produced.
_BUMP = "local v = redis.call('INCR', KEYS[1]) redis.call('PUBLISH', KEYS[1], v) return v"


def publish_bump() -> None:
    """Increment the epoch and announce it to every process (raises RedisError when Redis cannot be reached)."""
    _redis().eval(_BUMP, 1, epoch_key())


def epoch_bump() -> None:
    """Invalidate every process's remembered tokens: at once (this process's memory and the epoch), and again once
    the changing transaction commits, so that nothing read from the database before the commit outlives it."""

    def bump() -> None:
        forget_all()
        try:
            publish_bump()
        except redis.exceptions.RedisError:
            logger.error("could not increment the auth epoch: remembered tokens stay valid up to %ss", MAX_AGE)

    bump()
    transaction.on_commit(bump)


def on_auth_change(sender: Any, **kwargs: Any) -> None:
    """Signal receiver (post_save / post_delete of tokens and users, wired in apps.py)."""
    epoch_bump()


def forget_all() -> None:
    with _lock:
        _entries.clear()


class EpochWatcher:
    """This process's view of the auth epoch, kept by a subscription to its channel.

    :meth:`current` polls the subscription's socket without waiting (no round trip; one poll(2) call when nothing
    arrived, redis-py's reader only when something did, drained each time so that redis-py's own buffer is empty
    whenever the socket has nothing) and returns the newest epoch it has, or None whenever the subscription is not
    known to be live. The subscription is made on first use (and anew after a fork, or a change of the Redis location
    or key prefix): subscribe, wait for Redis to confirm it, then read the epoch, so that no increment can fall
    between the read and the subscription. Any error closes it; the next attempt comes RESUBSCRIBE_SECONDS later, and
    until then callers get None.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pubsub: Any = None
        self._target: tuple[int, str, str] | None = None  # (pid, Redis location, channel) subscribed to
        self._value: bytes | None = None
        self._failed: tuple[int, str, str] | None = None  # the target of the last failure, and until when
        self._retry_at = 0.0
        self._connects = 0  # connections the subscription made; more than one means it reconnected
        self._poll: Any = None  # select.poll on the subscription's socket: anything to read (or an error)?
        self._names: tuple[str, str] | None = None  # (Redis location, channel) from the settings, until they change

    def current(self) -> bytes | None:
        names = self._names
        if names is None:
            names = self._names = (_location(), epoch_key())
        target = (os.getpid(), *names)
        with self._lock:
            if self._target != target:
                self._close()
                if self._failed == target and time.monotonic() < self._retry_at:
                    return None
                self._subscribe(target)
                return self._value
            if not self._poll.poll(0):
                return self._value  # nothing arrived (and redis-py holds nothing read: it was drained last time)
            try:
                while (message := self._pubsub.get_message(timeout=0)) is not None:
                    if message["type"] == "message":
                        self._value = bytes(message["data"])
                if self._connects != 1:
                    raise redis.exceptions.ConnectionError("the subscription reconnected: publications may be lost")
            except (redis.exceptions.RedisError, OSError):
                logger.warning("auth epoch subscription lost: tokens are checked against the database", exc_info=True)
                self._fail(target)
                return None
            return self._value

    def _subscribe(self, target: tuple[int, str, str]) -> None:
        _pid, location, channel = target
        self._connects = 0
        pubsub = _watch_client(location).pubsub()
        try:
            pubsub.subscribe(channel)  # connects: the callback below counts reconnections from here on
            pubsub.connection.register_connect_callback(self._on_connect)
            self._connects = 1
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
            while True:
                message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message["type"] == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    raise redis.exceptions.TimeoutError("Redis did not confirm the auth epoch subscription")
            value = _watch_client(location).get(channel)
            sock = getattr(pubsub.connection, "_sock", None)  # redis-py's socket, to poll without its reader
            if sock is None:
                raise redis.exceptions.ConnectionError("the subscription's socket cannot be polled")
            poll = _poller(sock)
        except (redis.exceptions.RedisError, OSError):
            logger.warning("auth epoch unreadable: tokens are checked against the database", exc_info=True)
            self._pubsub = pubsub
            self._fail(target)
            return
        forget_all()  # anything remembered before may predate a change this process did not hear of
        self._poll, self._pubsub, self._target, self._failed = poll, pubsub, target, None
        self._value = value if isinstance(value, bytes) else b""

    def _on_connect(self, connection: Any) -> None:
        self._connects += 1

    def _fail(self, target: tuple[int, str, str]) -> None:
        self._close()
        self._failed, self._retry_at = target, time.monotonic() + RESUBSCRIBE_SECONDS

    def _close(self) -> None:
        pubsub, self._pubsub, self._target, self._value = self._pubsub, None, None, None
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis.exceptions.RedisError, OSError):
                logger.debug("closing the auth epoch subscription failed", exc_info=True)


watcher = EpochWatcher()


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in {"CACHES", "KEY_PREFIX", "RATELIMIT_USE_CACHE"}:
        watcher._names = None  # the next call subscribes where the settings now point


setting_changed.connect(_on_setting_changed, dispatch_uid="aicdn-tokenauth-settings")


def current_epoch() -> bytes | None:
    """The auth epoch (b"" before the first change), or None when the subscription is not live."""
    return watcher.current()


def _location() -> str:
    location = settings.CACHES[settings.RATELIMIT_USE_CACHE]["LOCATION"]
    return str(location[0] if isinstance(location, list | tuple) else location)


def _poller(sock: Any) -> Any:
    """A poll(2) set on the subscription's socket: data, an error or a hang-up all make it ready."""
    poll = select.poll()
    poll.register(sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    return poll


@lru_cache(maxsize=8)
def _watch_client(location: str) -> redis.Redis:
    """The subscription's own client: no silent retries, so a lost connection (and so possibly a lost publication)
    always reaches :class:`EpochWatcher` as an error."""
    return redis.Redis.from_url(location, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))


def _rebuilt(model: Any, fields: dict[str, Any]) -> Any:
    """A model instance from remembered field values, the way unpickling builds one (no __init__, no init signals),
    with a fresh ModelState: nothing one request caches on it reaches another."""
    instance = model.__new__(model)
    instance.__dict__.update(fields)
    state = instance._state = ModelState()
    state.adding, state.db = False, "default"
    return instance


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's TokenAuthentication (same header, same answers) with the remembered-token fast path above."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        epoch = current_epoch()
        now = time.monotonic()
        if epoch is not None:
            entry = _entries.get(key)
            if entry is not None and entry.epoch == epoch and entry.expires > now:
                user = _rebuilt(_user_model(), entry.fields)
                token = _rebuilt(Token, {"key": key, "user_id": user.pk, "created": entry.created})
                _TOKEN_USER.set_cached_value(token, user)
                return user, token
        user, token = super().authenticate_credentials(key)  # the database; raises AuthenticationFailed
        if epoch is not None:
            fields = {f.attname: getattr(user, f.attname) for f in user._meta.concrete_fields}
            with _lock:
                if len(_entries) >= MAX_ENTRIES:
                    _entries.clear()
                _entries[key] = _Entry(epoch, fields, token.created, now + MAX_AGE)
        return user, token


_TOKEN_USER = Token._meta.get_field("user")


@lru_cache(maxsize=1)
def _user_model() -> Any:
    return get_user_model()
