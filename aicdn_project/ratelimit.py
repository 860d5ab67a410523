"""Rate limits for every API request and websocket message: groups by path prefix, django-ratelimit counters in Redis.

One middleware covers every view under the configured prefixes, including views added later: the request path picks
a rate group from ``settings.RATELIMIT_RULES`` (longest prefix wins) and the group's rate from
``settings.RATELIMIT_RATES``. Counters are django-ratelimit's fixed windows (its keys, windows and stored integers) in
the Django cache's Redis, so every web process shares them. Websocket consumers call :func:`check_rate` per message
with the same groups and counters.

Most requests cost no Redis round trip: a process reserves slots of a client's budget from the shared counter in
blocks sized to the client's pace and spends them from memory (see "Counting" below for what that keeps exact);
slow clients and clients near their limit are counted in Redis request by request, on a process-wide connection pool
(SET NX + INCRBY in one script). Token clients cost no database query once the token was seen (token -> user id is
kept in memory for TOKEN_CACHE_SECONDS; DRF's authentication still checks the token on every request, so a revoked
token is refused at once: only the counter it is charged to can lag). Measured under daphne: django-ratelimit's
`get_usage` through the Django cache took three round trips, and under ASGI the cache object (hence its Redis
connection pool) is per request context, so every request also opened a new Redis connection.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache.backends.base import get_key_func
from django.core.signals import setting_changed
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django_ratelimit.core import EXPIRATION_FUDGE, _get_window, _make_cache_key, _split_rate, get_usage

from aicdn_project import metrics

logger = logging.getLogger(__name__)

_TOKEN_SCHEMES = ("token", "bearer")


# --- Client identity --------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def ip_in_networks(ip: str, entries: list[str] | tuple[str, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in _networks(tuple(entries)))


def client_ip_from(remote_addr: str, forwarded_for: str) -> str:
    """The client address: REMOTE_ADDR, or the X-Forwarded-For hop before the trusted proxies when REMOTE_ADDR is one.

    X-Forwarded-For is read right to left (each proxy appends the address it saw), skipping addresses that are
    themselves trusted proxies; anything a client wrote further left is never believed.
    """
    trusted = settings.TRUSTED_PROXIES
    if not forwarded_for or not trusted or not ip_in_networks(remote_addr, trusted):
        return remote_addr
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return remote_addr  # a malformed chain: believe only the peer we can see
        if not ip_in_networks(hop, trusted):
            return hop
    return hops[0] if hops else remote_addr


def client_ip(request: HttpRequest) -> str:
    return client_ip_from(request.META.get("REMOTE_ADDR", "") or "", request.META.get("HTTP_X_FORWARDED_FOR", ""))


def _ip_key(ip: str) -> str:
    # IPv6 clients usually hold a whole /64: count per /64 or one client rotates through 2^64 addresses.
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "ip:unknown"
    if addr.version == 6:
        return "ip:" + str(ipaddress.ip_network(f"{addr}/64", strict=False).network_address)
    return f"ip:{addr}"


TOKEN_CACHE_SECONDS = 30.0
TOKEN_CACHE_SIZE = 4096
_token_users: dict[str, tuple[int, float]] = {}  # token key -> (user id, monotonic expiry); valid tokens only
_token_users_lock = threading.Lock()


def _token_user_id(request: HttpRequest) -> int | None:
    """DRF authenticates tokens inside the view, after middleware: resolve the token here to key by its user.

    Valid tokens are remembered for TOKEN_CACHE_SECONDS (the key only picks the counter; DRF still checks the token
    on every request). Unknown tokens are never remembered: guesses cannot fill the memory, and a new token is
    recognised on its first request.
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() not in _TOKEN_SCHEMES:
        return None
    key = parts[1]
    now = time.monotonic()
    cached = _token_users.get(key)
    if cached is not None and cached[1] > now:
        return cached[0]
    from rest_framework.authtoken.models import Token

    row = Token.objects.filter(key=key).values_list("user_id", "user__is_active").first()
    if row is None or not row[1]:
        _token_users.pop(key, None)
        return None  # a wrong token is counted against the client's address, which is what limits guessing
    with _token_users_lock:
        if len(_token_users) >= TOKEN_CACHE_SIZE:
            for stale in [k for k, (_uid, expiry) in _token_users.items() if expiry <= now] or list(_token_users):
                del _token_users[stale]
        _token_users[key] = (int(row[0]), now + TOKEN_CACHE_SECONDS)
    return int(row[0])


def request_key(request: HttpRequest) -> str:
    """``user:<id>`` for a token or session user, otherwise ``ip:<client address>``. A token is looked at first:
    an API client sends no session cookie, and asking `request.user` would build the anonymous session user."""
    user_id = _token_user_id(request)
    if user_id is not None:
        return f"user:{user_id}"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return _ip_key(client_ip(request))


def scope_key(scope: dict[str, Any]) -> str:
    """The same identity for a channels websocket scope (user when authenticated, else client address)."""
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    remote = (scope.get("client") or ("", 0))[0] or ""
    forwarded = ""
    for name, value in scope.get("headers") or []:
        if name.lower() == b"x-forwarded-for":
            forwarded = value.decode("latin-1")
    return _ip_key(client_ip_from(remote, forwarded))


# --- Groups and rates -------------------------------------------------------------------------------------------
def group_for_path(path: str) -> str | None:
    """The rate group of a request path: the longest matching prefix in RATELIMIT_RULES, or None (not limited)."""
    best: tuple[int, str] | None = None
    for prefix, group in settings.RATELIMIT_RULES:
        if path.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), group)
    return best[1] if best else None


def rate_for_group(group: str) -> str | None:
    """The group's rate ("60/m"); None or "" means unlimited. Unknown groups get the default rate."""
    rates = settings.RATELIMIT_RATES
    if group in rates:
        return rates[group] or None
    return settings.RATELIMIT_DEFAULT_RATE


class Decision(NamedTuple):
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds until the window resets; 0 when allowed


# --- Counting: slots reserved from the shared Redis counter in blocks ----------------------------------------------
# A round trip to Redis per request was the largest part of what this layer cost (bench/load.py). Instead, a process
# reserves slots of a client's budget from the shared counter in blocks (INCRBY n: django-ratelimit's key, window
# and stored integer, so the count in Redis is still the total taken) and hands them out from memory. Exactness:
# - never more than the limit, across all processes: a slot is used only after the shared counter granted it;
# - within one process, exactly the limit: it refuses only when it holds no slot and the shared count has reached
#   the limit (then it refuses from memory until the window ends, without asking Redis);
# - across processes a client can get fewer than the limit: slots one process reserved and its client no longer uses
#   there (the client moved to another process) are lost until the window ends. A block is at most about
#   settings.RATELIMIT_BLOCK_SECONDS (0.1 s) of the client's recent traffic in this process, at most 1/LEASE_SHARE
#   of what is left of the budget, and at most LEASE_MAX, so near the limit, and for any client slower than one
#   request per RATELIMIT_BLOCK_SECONDS, every request is counted in Redis one by one as before.
LEASE_SHARE = 8
LEASE_MAX = 256
LEASES_MAX_ENTRIES = 20_000


class _Lease:
    """This process's slots in one client's current window: `free` unused, `top` the highest shared count it was
    told; valid up to `window_end` (django-ratelimit's window, a Unix time) inclusive."""

    __slots__ = ("free", "limit", "top", "window_end")

    def __init__(self, limit: int, window_end: int) -> None:
        self.free, self.top, self.limit, self.window_end = 0, 0, limit, window_end


_leases: dict[tuple[str, str, str], _Lease] = {}  # (group, rate, client key) -> lease for the current window
_pace: dict[tuple[str, str, str], tuple[int, float]] = {}  # same key -> (last block size, monotonic time)
_leases_lock = threading.Lock()


def _decide(key: str, group: str, rate: str) -> Decision:
    """Count one request for `key` in `group` at `rate`. Raises RedisError when Redis is needed and unreachable."""
    if not settings.RATELIMIT_ENABLE:
        return Decision(True, 0, 0, 0)
    lease_key = (group, rate, key)
    now = int(time.time())
    with _leases_lock:
        lease = _leases.get(lease_key)
        if lease is not None and now <= lease.window_end:
            taken = _take(lease, now)
            if taken is not None:
                return taken
    return _reserve(lease_key)


def _take(lease: _Lease, now: int) -> Decision | None:
    """Use a free slot (allowed), or refuse when none is free and the window's budget is spent; None: ask Redis.
    Called under _leases_lock."""
    if lease.free > 0:
        lease.free -= 1
        return Decision(True, lease.limit, max(0, lease.limit - (lease.top - lease.free)), 0)
    if lease.top >= lease.limit:
        return Decision(False, lease.limit, 0, max(1, lease.window_end - now))
    return None


def _reserve(lease_key: tuple[str, str, str]) -> Decision:
    """Reserve a block of slots from the shared counter (one Redis round trip) and take one of them."""
    group, rate, key = lease_key
    cache_name = settings.RATELIMIT_USE_CACHE
    limit, period = _split_rate(rate)
    if settings.CACHES[cache_name]["BACKEND"] != "django.core.cache.backends.redis.RedisCache":
        return _decide_by_get_usage(key, group, rate, limit)
    window = _get_window(key, period)
    counter = _cache_key(cache_name, _make_cache_key(group, window, rate, key, get_usage.ALL))
    with _leases_lock:
        lease = _leases.get(lease_key)
        block = _block_size(lease_key, limit, lease if lease is not None and lease.window_end == window else None)
    script = _incr_script(_counter_client(cache_name))
    total = int(script(keys=[counter], args=[period + EXPIRATION_FUDGE, block]))
    granted = max(0, min(block, limit - (total - block)))
    with _leases_lock:
        lease = _leases.get(lease_key)
        if lease is None or lease.window_end != window:
            if len(_leases) >= LEASES_MAX_ENTRIES:
                _prune()
            lease = _leases[lease_key] = _Lease(limit, window)
        lease.top = max(lease.top, total)
        lease.free += granted
        _pace[lease_key] = (block, time.monotonic())
        now = int(time.time())
        # Nothing free and the shared count at the limit: refused (another thread may have taken the last slot).
        return _take(lease, now) or Decision(False, limit, 0, max(1, window - now))


def _block_size(lease_key: tuple[str, str, str], limit: int, lease: _Lease | None) -> int:
    """How many slots to reserve: about RATELIMIT_BLOCK_SECONDS of this client's pace here (at most double the last
    block), capped by LEASE_MAX and 1/LEASE_SHARE of the budget still free in the shared count."""
    cap = min(LEASE_MAX, (limit - (lease.top if lease else 0)) // LEASE_SHARE)
    last = _pace.get(lease_key)
    if cap <= 1 or last is None:
        return 1
    size, at = last
    pace = size / max(time.monotonic() - at, 1e-3)  # requests per second through the last block
    return max(1, min(int(pace * settings.RATELIMIT_BLOCK_SECONDS), 2 * size, cap))


def _prune() -> None:
    """Drop leases of ended windows and paces older than a second (their unused slots are lost, never over-granted);
    if that is not enough, drop them all. Called under _leases_lock."""
    now, clock = int(time.time()), time.monotonic()
    for lease_key in [k for k, lease in _leases.items() if lease.window_end < now]:
        del _leases[lease_key]
    for lease_key in [k for k, (_size, at) in _pace.items() if clock - at > 1.0]:
        del _pace[lease_key]
    if len(_leases) >= LEASES_MAX_ENTRIES:
        _leases.clear()
        _pace.clear()


def forget_leases(**kwargs: Any) -> None:
    """Drop every slot this process holds: when a setting changes (tests; keys and counters depend on them)."""
    with _leases_lock:
        _leases.clear()
        _pace.clear()


setting_changed.connect(forget_leases, dispatch_uid="aicdn-ratelimit-forget-leases")


def _decide_by_get_usage(key: str, group: str, rate: str, limit: int) -> Decision:
    """Other cache backends: django-ratelimit's `get_usage` itself, one count per request."""
    # django-ratelimit's core passes `request` only to key/rate callables: a constant key needs no request.
    usage = get_usage(None, group=group, key=lambda _group, _request: key, rate=rate, increment=True)
    if usage is None or (usage["limit"] == 0 and usage["time_left"] == -1):
        # django-ratelimit's answer when the cache refused the count (e.g. Redis evicted or read-only).
        raise redis.exceptions.ConnectionError("rate-limit counter could not be read from the cache")
    retry_after = max(1, int(usage["time_left"])) if usage["should_limit"] else 0
    return Decision(not usage["should_limit"], limit, max(0, limit - usage["count"]), retry_after)


# SET NX EX + INCRBY as one script: one command and one reply per reservation (MULTI/EXEC has four replies).
_INCR = "redis.call('SET', KEYS[1], 0, 'EX', ARGV[1], 'NX') return redis.call('INCRBY', KEYS[1], ARGV[2])"


@lru_cache(maxsize=8)
def _incr_script(client: redis.Redis) -> Any:
    return client.register_script(_INCR)  # EVALSHA, loading the script when Redis lacks it


def _cache_key(cache_name: str, key: str) -> str:
    """The Django cache's own key for `key` (its KEY_FUNCTION, KEY_PREFIX and VERSION), without the cache object:
    `caches[name]` is per request context under ASGI, so it built a new cache object on every request."""
    config = settings.CACHES[cache_name]
    return str(get_key_func(config.get("KEY_FUNCTION"))(key, config.get("KEY_PREFIX", ""), config.get("VERSION", 1)))


def check_rate(key: str, group: str, rate: str | None = None, *, channel: str = "websocket") -> tuple[bool, int]:
    """Count one event for `key` in `group`; return (allowed, retry_after_seconds). Shares the HTTP counters.

    For websocket consumers: ``allowed, retry_after = check_rate(scope_key(self.scope), "chat")`` per message
    (``await acheck_rate(...)`` from an async consumer); refuse with :func:`rejection_body` when not allowed.
    Cache failures follow RATELIMIT_FAIL_OPEN.
    """
    if not settings.RATELIMIT_ENABLE:
        return True, 0
    rate = rate if rate is not None else rate_for_group(group)
    if not rate:
        return True, 0
    try:
        decision = _decide(key, group, rate)
    except redis.exceptions.RedisError:
        logger.warning("rate-limit cache unavailable for group %s", group, exc_info=True)
        return bool(settings.RATELIMIT_FAIL_OPEN), 0 if settings.RATELIMIT_FAIL_OPEN else 5
    if not decision.allowed:
        record_rejection(group=group, endpoint=channel, channel=channel)
    return decision.allowed, decision.retry_after


acheck_rate = sync_to_async(check_rate)


def rejection_body(group: str, retry_after: int, limit: int | str | None = None) -> dict[str, Any]:
    """The one 429 shape, for HTTP responses and websocket error messages alike."""
    rate = rate_for_group(group)
    return {
        "error": "rate_limited",
        "message": f"Too many requests for {group}: limit {rate}. Retry in {retry_after} s.",
        "details": {"limit": limit if limit is not None else rate, "group": group, "retry_after": retry_after},
    }


# --- Rejection statistics (shared across processes in Redis) ----------------------------------------------------
_STATS_SEP = "|"


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    """The client for the rejection statistics (and the monitoring probe)."""
    return _counter_client(settings.RATELIMIT_USE_CACHE)


def _counter_client(cache_name: str) -> redis.Redis:
    """A process-wide client (thread-safe connection pool) for the rate-limit cache's Redis, for its location now.
    Not the Django cache's own client: under ASGI that one is per request context, which meant a new Redis
    connection per request."""
    location = settings.CACHES[cache_name]["LOCATION"]
    if isinstance(location, list | tuple):
        location = location[0]
    return _client_for(location)


@lru_cache(maxsize=8)
def _client_for(location: str) -> redis.Redis:
    return redis.Redis.from_url(location, socket_timeout=2, socket_connect_timeout=2)


def _stats_key() -> str:
    return f"{settings.KEY_PREFIX}:ratelimit:rejections"


def record_rejection(*, group: str, endpoint: str, channel: str) -> None:
    metrics.RATE_LIMIT_REJECTIONS.labels(group=group, channel=channel).inc()
    try:
        client = redis_client()
        pipe = client.pipeline()
        pipe.hsetnx(_stats_key(), "_since", str(int(time.time())))
        pipe.hincrby(_stats_key(), _STATS_SEP.join((group, endpoint, channel)), 1)
        pipe.execute()
    except redis.exceptions.RedisError:
        logger.warning("could not record a rate-limit rejection", exc_info=True)


def rejection_stats() -> dict[str, Any]:
    """Rejections since the counters started, by group, by endpoint (URL route) and by channel."""
    raw = redis_client().hgetall(_stats_key())
    since = None
    by_group: dict[str, int] = {}
    by_endpoint: list[dict[str, Any]] = []
    by_channel: dict[str, int] = {}
    for field, value in raw.items():
        name = field.decode()
        if name == "_since":
            since = int(value)
            continue
        group, endpoint, channel = name.split(_STATS_SEP, 2)
        count = int(value)
        by_group[group] = by_group.get(group, 0) + count
        by_channel[channel] = by_channel.get(channel, 0) + count
        by_endpoint.append({"group": group, "endpoint": endpoint, "channel": channel, "rejections": count})
    by_endpoint.sort(key=lambda row: (-row["rejections"], row["group"], row["endpoint"]))
    return {
        "since": since,
        "total": sum(by_group.values()),
        "by_group": dict(sorted(by_group.items())),
        "by_channel": dict(sorted(by_channel.items())),
        "by_endpoint": by_endpoint,
    }


def reset_stats() -> None:
    redis_client().delete(_stats_key())


def configured_limits() -> list[dict[str, Any]]:
    groups: dict[str, list[str]] = {}
    for prefix, group in settings.RATELIMIT_RULES:
        groups.setdefault(group, []).append(prefix)
    for group in settings.RATELIMIT_RATES:
        groups.setdefault(group, [])
    return [{"group": g, "rate": rate_for_group(g), "path_prefixes": sorted(p)} for g, p in sorted(groups.items())]


# --- HTTP middleware ----------------------------------------------------------------------------------------------
def _endpoint(request: HttpRequest) -> str:
    """The URL route (bounded cardinality: ids stay route parameters), or the path prefix group for unknown paths."""
    try:
        route = resolve(request.path_info).route
    except Resolver404:
        return "(no route)"
    return "/" + route if route else request.path_info


def _too_many(group: str, decision: Decision) -> JsonResponse:
    response = JsonResponse(rejection_body(group, decision.retry_after, decision.limit), status=429)
    response["Retry-After"] = str(decision.retry_after)
    return response


def _unavailable(service: str = "rate limiting") -> JsonResponse:
    if service == "database":
        from aicdn_project.api import outage_body

        body = outage_body("database")
    else:
        body = {
            "error": "service_unavailable",
            "message": "Rate limiting is unavailable; retry shortly.",
            "details": {},
        }
    response = JsonResponse(body, status=503)
    response["Retry-After"] = "5"
    return response


class RateLimitMiddleware:
    """Counts each request under its path's group and refuses with 429 once the group's rate is spent.

    Synchronous only, and last in MIDDLEWARE: under ASGI Django runs a middleware chain in async mode up to the first
    sync-only layer from the inside, and in async mode every MiddlewareMixin layer (sessions, CSRF, messages,
    Prometheus...) runs each of its hooks through its own sync_to_async thread switch. A sync-only innermost layer
    makes Django run the whole chain in one thread, with one switch to the event loop for the view (async views,
    e.g. the chat, still run on the loop).
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        refused = self._check(request)
        if refused is not None:
            return refused
        response = self.get_response(request)
        self._annotate(request, response)
        return response

    @staticmethod
    def _annotate(request: HttpRequest, response: HttpResponse) -> None:
        decision: Decision | None = getattr(request, "_aicdn_ratelimit", None)
        if decision is not None and decision.limit:
            response["X-RateLimit-Limit"] = str(decision.limit)
            response["X-RateLimit-Remaining"] = str(decision.remaining)

    def _check(self, request: HttpRequest) -> HttpResponse | None:
        if not settings.RATELIMIT_ENABLE or request.method == "OPTIONS":
            return None
        group = group_for_path(request.path_info)
        if group is None:
            return None
        rate = rate_for_group(group)
        if not rate:
            return None
        try:
            key = request_key(request)
        except (OperationalError, InterfaceError):
            # Resolving a token or session needs the database; the view could not serve this request either.
            logger.warning("database unavailable while identifying the client of %s", request.path)
            return _unavailable("database")
        try:
            decision = _decide(key, group, rate)
        except redis.exceptions.RedisError:
            logger.warning(
                "rate-limit cache unavailable; failing %s", "open" if settings.RATELIMIT_FAIL_OPEN else "closed"
            )
            return None if settings.RATELIMIT_FAIL_OPEN else _unavailable()
        request._aicdn_ratelimit = decision  # type: ignore[attr-defined]
        if decision.allowed:
            return None
        record_rejection(group=group, endpoint=_endpoint(request), channel="http")
        return _too_many(group, decision)
