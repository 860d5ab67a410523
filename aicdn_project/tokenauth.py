"""API token authentication that keeps each token's user row in process memory, dropped everywhere at once when any
token or user changes.

DRF's TokenAuthentication reads the token and its user from the database on every request: under daphne that was
~1.4 ms of a ~5 ms request (measured with bench/load.py's view: the ORM, the query, and a request thread's first use
of a pooled connection). Here a token seen once is answered from memory while the **auth epoch** in Redis is
unchanged. Every save or delete of a token or a user increments the epoch when it happens and again when its
transaction commits, so a revoked token, a deactivated user or a changed password stops authenticating in every
process with the next request: each request reads the epoch (with the rate limiter's count, in the same Redis round
trip, or else with a GET) and a remembered entry counts only under the epoch it was read at. When Redis cannot be
read, nothing is taken from memory (every request goes to the database, as DRF's does). An entry also expires after
MAX_AGE seconds, which bounds what a lost epoch increment (Redis down at that moment) could leave valid.

What is remembered is the user row's field values; every request gets a new User object built from them, so nothing
a request caches on its user (permissions, groups) reaches another request."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

logger = logging.getLogger(__name__)

MAX_AGE = 60.0  # seconds an entry may be used at all
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class _Entry:
    epoch: bytes
    fields: dict[str, Any]
    created: Any
    expires: float


_entries: dict[str, _Entry] = {}
_lock = threading.Lock()


def epoch_key() -> str:
    return f"{settings.KEY_PREFIX}:auth-epoch"


def _redis() -> redis.Redis:
    from aicdn_project.ratelimit import redis_client  # the process-wide client on the cache's Redis

    return redis_client()


def current_epoch() -> bytes | None:
    """The auth epoch (b"" before the first change), or None when Redis cannot be read."""
    try:
        value = _redis().get(epoch_key())
    except redis.exceptions.RedisError:
        logger.warning("auth epoch unreadable: tokens are checked against the database", exc_info=True)
        return None
    return value if isinstance(value, bytes) else b""


def epoch_bump() -> None:
    """Invalidate every process's remembered tokens: at once (this process's memory and the epoch), and again once
    the changing transaction commits, so that nothing read from the database before the commit outlives it."""

    def bump() -> None:
        forget_all()
        try:
            _redis().incr(epoch_key())
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


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's TokenAuthentication (same header, same answers) with the remembered-token fast path above. The epoch is
    the one the rate limiter read with its count for this request, when it did (same Redis round trip)."""

    _epoch: bytes | None = None

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        self._epoch = getattr(getattr(request, "_request", request), "aicdn_auth_epoch", None)
        try:
            return super().authenticate(request)  # type: ignore[no-any-return]
        finally:
            self._epoch = None

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        epoch = self._epoch if self._epoch is not None else current_epoch()
        now = time.monotonic()
        if epoch is not None:
            entry = _entries.get(key)
            if entry is not None and entry.epoch == epoch and entry.expires > now:
                user = get_user_model()(**entry.fields)
                user._state.adding = False
                user._state.db = "default"
                return user, Token(key=key, user=user, created=entry.created)
        user, token = super().authenticate_credentials(key)  # the database; raises AuthenticationFailed
        if epoch is not None:
            fields = {f.attname: getattr(user, f.attname) for f in user._meta.concrete_fields}
            with _lock:
                if len(_entries) >= MAX_ENTRIES:
                    _entries.clear()
                _entries[key] = _Entry(epoch, fields, token.created, now + MAX_AGE)
        return user, token
