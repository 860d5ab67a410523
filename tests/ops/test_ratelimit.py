"""Rate limits: groups by path, keys by user or client address, 429 shape, shared counters, stats, websockets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from aicdn_project import ratelimit
from tests.conftest import make_user

SCHEMA = "/api/v1/blueprints/schema"


def test_longest_prefix_picks_the_group(settings):
    assert ratelimit.group_for_path("/api/v1/monitoring/health") == "health"
    assert ratelimit.group_for_path("/api/v1/monitoring/health/detailed") == "monitoring"
    assert ratelimit.group_for_path("/api/v1/monitoring/rate-limit/stats") == "monitoring"
    assert ratelimit.group_for_path("/api/v1/conversation/chat/stream") == "chat"
    assert ratelimit.group_for_path("/api/v1/blueprints/generate-blueprint") == "generation"
    assert ratelimit.group_for_path("/api/v1/auth/token") == "auth"
    assert ratelimit.group_for_path("/api/v1/iprs/3/approve") == "api"
    assert ratelimit.group_for_path("/admin/") is None

    # Chat and generation are stricter than the default for reads.
    def per_minute(group: str) -> int:
        count, _, unit = ratelimit.rate_for_group(group).partition("/")
        return int(count) * {"s": 60, "m": 1, "h": 1 / 60}[unit]

    assert per_minute("chat") < per_minute("api") and per_minute("generation") < per_minute("api")
    assert settings.RATELIMIT_RATES["api"] == "60/m"


def test_forwarded_for_is_believed_only_from_trusted_proxies(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.7"]
    # An untrusted peer: its header is ignored whatever it says.
    assert ratelimit.client_ip_from("198.51.100.9", "1.2.3.4") == "198.51.100.9"
    # Behind a trusted proxy: the hop it saw.
    assert ratelimit.client_ip_from("10.1.2.3", "203.0.113.5") == "203.0.113.5"
    # Client-written entries further left are not believed; trusted hops are skipped from the right.
    assert ratelimit.client_ip_from("10.1.2.3", "6.6.6.6, 203.0.113.5, 192.0.2.7") == "203.0.113.5"
    assert ratelimit.client_ip_from("10.1.2.3", "garbage") == "10.1.2.3"
    settings.TRUSTED_PROXIES = []
    assert ratelimit.client_ip_from("10.1.2.3", "203.0.113.5") == "10.1.2.3"


def test_anonymous_clients_are_limited_per_address_with_a_429_body(limits, db):
    limits.RATELIMIT_RATES = {**limits.RATELIMIT_RATES, "api": "3/m"}
    client = APIClient(REMOTE_ADDR="203.0.113.10")
    statuses = [client.get(SCHEMA).status_code for _ in range(3)]
    assert 429 not in statuses
    refused = client.get(SCHEMA)
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "rate_limited"
    assert body["message"]
    assert body["details"]["limit"] == 3
    retry = int(refused["Retry-After"])
    assert 1 <= retry <= 60 and body["details"]["retry_after"] == retry
    # Another address has its own budget; the liveness probe is a separate, generous group.
    assert APIClient(REMOTE_ADDR="203.0.113.11").get(SCHEMA).status_code != 429
    assert client.get("/api/v1/monitoring/health").status_code == 200


def test_token_users_are_limited_per_user_whatever_their_address(limits, token_for):
    limits.RATELIMIT_RATES = {**limits.RATELIMIT_RATES, "api": "2/m"}
    alice, bob = make_user("alice", "requesters"), make_user("bob", "requesters")
    alice_token, bob_token = token_for(alice), token_for(bob)
    first = APIClient(REMOTE_ADDR="198.51.100.1", HTTP_AUTHORIZATION=f"Token {alice_token}")
    assert first.get(SCHEMA).status_code == 200
    assert first.get(SCHEMA)["X-RateLimit-Remaining"] == "0"
    moved = APIClient(REMOTE_ADDR="198.51.100.2", HTTP_AUTHORIZATION=f"Token {alice_token}")
    assert moved.get(SCHEMA).status_code == 429  # a new address does not reset alice's budget
    assert APIClient(REMOTE_ADDR="198.51.100.1", HTTP_AUTHORIZATION=f"Token {bob_token}").get(SCHEMA).status_code == 200


def test_session_users_are_keyed_by_user(limits, db):
    limits.RATELIMIT_RATES = {**limits.RATELIMIT_RATES, "api": "1/m"}
    carol = make_user("carol", "requesters")
    client = APIClient(REMOTE_ADDR="198.51.100.3")
    client.force_login(carol)
    assert client.get(SCHEMA).status_code == 200
    assert client.get(SCHEMA).status_code == 429
    assert APIClient(REMOTE_ADDR="198.51.100.3").get(SCHEMA).status_code == 401  # anonymous: the address's budget


def test_disabled_limits_never_refuse(limits, db):
    limits.RATELIMIT_RATES = {**limits.RATELIMIT_RATES, "api": "1/m"}
    limits.RATELIMIT_ENABLE = False
    client = APIClient(REMOTE_ADDR="203.0.113.20")
    assert [client.get(SCHEMA).status_code for _ in range(3)] == [401, 401, 401]


def test_stats_count_rejections_by_group_and_route(limits, token_for):
    limits.RATELIMIT_RATES = {**limits.RATELIMIT_RATES, "api": "1/m"}
    anon = APIClient(REMOTE_ADDR="203.0.113.30")
    anon.get(SCHEMA)
    for _ in range(2):
        assert anon.get(SCHEMA).status_code == 429
    assert anon.get("/api/v1/blueprints/7").status_code == 429
    assert anon.get("/api/v1/monitoring/rate-limit/stats").status_code == 401  # authenticated only
    viewer = make_user("viewer", "operators")
    stats = APIClient(HTTP_AUTHORIZATION=f"Token {token_for(viewer)}").get("/api/v1/monitoring/rate-limit/stats")
    assert stats.status_code == 200
    data = stats.json()
    assert data["by_group"] == {"api": 3}
    assert data["total"] == 3
    endpoints = {row["endpoint"]: row["rejections"] for row in data["by_endpoint"]}
    assert endpoints == {"/api/v1/blueprints/schema": 2, "/api/v1/blueprints/<int:pk>": 1}
    assert {"group": "chat", "rate": "10/m"} in [{k: g[k] for k in ("group", "rate")} for g in data["limits"]]


def test_websocket_check_rate_shares_counters_and_metrics(limits):
    before = (
        REGISTRY.get_sample_value("aicdn_rate_limit_rejections_total", {"group": "chat", "channel": "websocket"}) or 0.0
    )
    key = "user:4242"
    results = [ratelimit.check_rate(key, "chat", "2/m") for _ in range(3)]
    assert [allowed for allowed, _ in results] == [True, True, False]
    assert results[0][1] == 0 and 1 <= results[2][1] <= 60
    assert ratelimit.check_rate("user:4243", "chat", "2/m")[0] is True  # another user
    after = REGISTRY.get_sample_value("aicdn_rate_limit_rejections_total", {"group": "chat", "channel": "websocket"})
    assert after == before + 1
    assert ratelimit.rejection_stats()["by_channel"] == {"websocket": 1}
    body = ratelimit.rejection_body("chat", results[2][1])
    assert body["error"] == "rate_limited" and body["details"]["retry_after"] == results[2][1]


def test_scope_key_prefers_the_user_then_the_trusted_forwarded_address(settings, db):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    user = make_user("dave", "requesters")
    assert ratelimit.scope_key({"user": user, "client": ("127.0.0.1", 5)}) == f"user:{user.pk}"
    scope = {"client": ("127.0.0.1", 5), "headers": [(b"x-forwarded-for", b"203.0.113.40")]}
    assert ratelimit.scope_key(scope) == "ip:203.0.113.40"
    assert ratelimit.scope_key({"client": ("2001:db8::1:2", 5)}) == "ip:2001:db8::"


def test_counters_are_shared_with_another_process(limits):
    key = "user:777"
    # An hour-long window: the subprocess takes a second or two to start, and a minute window could roll over.
    assert ratelimit.check_rate(key, "chat", "2/h")[0]
    assert ratelimit.check_rate(key, "chat", "2/h")[0]
    script = (
        "import django, sys; django.setup();"
        "from django.conf import settings; settings.RATELIMIT_ENABLE = True;"
        "settings.RATELIMIT_CACHE_PREFIX = sys.argv[1];"
        "from aicdn_project.ratelimit import check_rate;"
        "allowed, retry = check_rate('user:777', 'chat', '2/h'); print('allowed' if allowed else f'refused {retry}')"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aicdn_project.test_settings"}
    result = subprocess.run(
        [sys.executable, "-c", script, limits.RATELIMIT_CACHE_PREFIX],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip().startswith("refused"), result.stdout + result.stderr


@pytest.mark.parametrize(("fail_open", "status"), [(True, 401), (False, 503)])
def test_cache_outage_follows_the_fail_open_setting(limits, db, fail_open, status):
    closed = f"redis://127.0.0.1:{_closed_port()}/0"
    limits.CACHES = {"default": {**limits.CACHES["default"], "LOCATION": closed}}
    limits.RATELIMIT_FAIL_OPEN = fail_open
    response = APIClient(REMOTE_ADDR="203.0.113.50").get(SCHEMA)
    assert response.status_code == status
    if status == 503:
        assert response.json()["error"] == "service_unavailable" and response["Retry-After"] == "5"


def _closed_port() -> int:
    from tests.ops.conftest import free_port

    return free_port()  # bound and released: nothing listens there


def test_limits_are_on_by_default_outside_the_test_settings():
    script = "import django; django.setup(); from django.conf import settings; print(settings.RATELIMIT_ENABLE)"
    env = {k: v for k, v in os.environ.items() if k != "RATELIMIT_ENABLE"}
    env["DJANGO_SETTINGS_MODULE"] = "aicdn_project.settings"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


def _counter_value(key: str, group: str, rate: str) -> int:
    """The shared count in Redis for this client's current window (django-ratelimit's key)."""
    from django_ratelimit.core import _get_window, _make_cache_key, _split_rate, get_usage

    window = _get_window(key, _split_rate(rate)[1])
    counter = ratelimit._cache_key("default", _make_cache_key(group, window, rate, key, get_usage.ALL))
    return int(ratelimit.redis_client().get(counter) or 0)


def test_a_fast_client_is_counted_in_blocks_and_gets_exactly_its_limit(limits, monkeypatch):
    reservations = []
    reserve = ratelimit._reserve
    monkeypatch.setattr(ratelimit, "_reserve", lambda lease_key: reservations.append(1) or reserve(lease_key))
    key, rate = "user:9001", "400/h"
    results = [ratelimit.check_rate(key, "api", rate) for _ in range(450)]
    assert [allowed for allowed, _ in results] == [True] * 400 + [False] * 50
    assert len(reservations) < 100  # most requests were answered from reserved slots, not by a round trip each
    assert 400 <= _counter_value(key, "api", rate) <= 400 + ratelimit.LEASE_MAX  # reserved slots are counted
    assert all(1 <= retry <= 3600 for _allowed, retry in results[400:])


def test_a_slow_client_and_a_client_near_its_limit_are_counted_one_by_one(limits):
    key, rate = "user:9002", "12/h"  # a twelfth of it is not even two slots: every request is its own INCR
    for n in range(1, 13):
        assert ratelimit.check_rate(key, "api", rate)[0]
        assert _counter_value(key, "api", rate) == n
    assert ratelimit.check_rate(key, "api", rate)[0] is False


def test_threads_of_one_process_share_its_slots_exactly(limits):
    key, rate = "user:9003", "300/h"
    allowed = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(60):
            ok = ratelimit.check_rate(key, "api", rate)[0]
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 300 and len(allowed) == 480


def test_processes_sharing_a_limit_never_exceed_it_together(limits):
    """Three processes reserve blocks from one counter at once: together they get exactly the limit, no more (each
    makes more calls than the limit, so it uses every slot it was granted before it refuses)."""
    script = (
        "import django, sys; django.setup();"
        "from django.conf import settings; settings.RATELIMIT_ENABLE = True;"
        "settings.RATELIMIT_CACHE_PREFIX = sys.argv[1];"
        "from aicdn_project.ratelimit import check_rate;"
        "print(sum(check_rate('user:9004', 'api', '500/h')[0] for _ in range(600)))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aicdn_project.test_settings"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, limits.RATELIMIT_CACHE_PREFIX], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    allowed = [int(proc.communicate(timeout=120)[0].strip()) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert sum(allowed) == 500, allowed


def test_slots_end_with_their_window(limits):
    key, rate = "user:9005", "2/s"
    deadline = time.time() + 5
    while time.time() % 1 > 0.5 and time.time() < deadline:  # start early in a second: both calls in one window
        time.sleep(0.05)
    assert [ratelimit.check_rate(key, "api", rate)[0] for _ in range(3)] == [True, True, False]
    time.sleep(1.1)
    assert ratelimit.check_rate(key, "api", rate)[0] is True


def test_blocks_can_be_turned_off(limits):
    limits.RATELIMIT_BLOCK_SECONDS = 0
    key, rate = "user:9006", "1000/h"
    for n in range(1, 41):
        assert ratelimit.check_rate(key, "api", rate)[0]
        assert _counter_value(key, "api", rate) == n  # a round trip, and one count, for every request
