"""Redis and PostgreSQL outages under a live daphne: clean 503 JSON (never a 500, never a hang), recovery without
restarting daphne, and nothing lost: IPRs opened before the outage are still there and the audit chain verifies.

The services are private instances this module starts (tests/stress/live.py) on free loopback ports; the machine's
shared PostgreSQL and Redis are never touched. Each outage is a crash: SIGKILL for Redis, `pg_ctl -m immediate` for
PostgreSQL.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.stress import live


@pytest.fixture(autouse=True, scope="module")
def _tools_present() -> None:
    # ./run test installs them (scripts/test-prereqs.sh); a missing one is a failure, never a silent skip.
    if live.missing_tools():
        pytest.fail(f"the outage tests need {', '.join(live.missing_tools())}", pytrace=False)


TIMEOUT = 15.0  # seconds: an answer slower than this during an outage counts as a hang


@dataclass
class Stack:
    redis: live.PrivateRedis
    postgres: live.PrivatePostgres
    daphne: live.Daphne
    world: dict[str, Any]
    http: httpx.Client

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Token {self.world['tokens'][who]}"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    workdir = live.workdir("aicdn-outage-")
    var_dir = workdir / "var"
    var_dir.mkdir()
    redis, postgres = live.PrivateRedis(workdir), live.PrivatePostgres(workdir)
    daphne = None
    try:
        redis.start()
        postgres.init()
        # The rate limiter stays on (it is part of every request), with a rate these few hundred requests never hit.
        env = live.project_env(
            database_url=postgres.url, redis_url=redis.url, var_dir=var_dir, RATELIMIT_RATES="api=100000/m"
        )
        world = live.migrate_and_seed(env)
        daphne = live.Daphne(env, workdir)
        daphne.start()
        with httpx.Client(base_url=daphne.base, timeout=TIMEOUT) as http:
            yield Stack(redis, postgres, daphne, world, http)
    finally:
        if daphne is not None:
            daphne.stop()
        redis.stop()
        postgres.stop("fast")
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Traffic:
    """Requests sent in a loop from a thread while a service goes down and comes back."""

    stack: Stack
    statuses: Counter[int] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        ipr = self.stack.world["ipr_ids"][0]
        requests = [
            ("GET", "/api/v1/blueprints", None),
            ("GET", f"/api/v1/iprs/{ipr}", None),
            ("GET", f"/api/v1/blueprints/versions/{self.stack.world['commit_ids'][1]}/cost", None),
            ("POST", "/api/v1/blueprints/validate", {"document": {"version": "1.0", "name": "x", "resources": []}}),
        ]
        n = 0
        while not self.stop.is_set():
            method, path, body = requests[n % len(requests)]
            n += 1
            started = time.monotonic()
            try:
                response = self.stack.http.request(method, path, json=body, headers=self.stack.as_("admin"))
            except httpx.HTTPError as exc:
                self.bad.append(f"{method} {path}: {type(exc).__name__} after {time.monotonic() - started:.1f} s")
                continue
            self.statuses[response.status_code] += 1
            if response.status_code >= 500 and not _clean_503(response):
                self.bad.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            time.sleep(0.02)


def _clean_503(response: httpx.Response) -> bool:
    if response.status_code != 503 or not response.headers.get("Retry-After"):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return body.get("error") == "service_unavailable" and bool(body.get("message"))


def _during(stack: Stack, outage: Any, recover: Any, seconds: float = 3.0) -> Traffic:
    traffic = Traffic(stack)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    time.sleep(0.5)
    outage()
    time.sleep(seconds)
    recover()
    time.sleep(1.0)
    traffic.stop.set()
    thread.join(TIMEOUT + 5)
    assert not thread.is_alive(), "the traffic thread hung"
    return traffic


def _recovered(stack: Stack, path: str = "/api/v1/blueprints", within: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            if stack.http.get(path, headers=stack.as_("admin")).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} did not recover within {within} s of the service coming back")


def _open_ipr(stack: Stack, title: str) -> int:
    body = {
        "blueprint_version": stack.world["commit_ids"][1],
        "environment": stack.world["environment"],
        "title": title,
    }
    response = stack.http.post("/api/v1/iprs", json=body, headers=stack.as_("requester"))
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _audit_ok(stack: Stack) -> int:
    response = stack.http.get("/api/v1/audit/verify", headers=stack.as_("admin"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is True, report
    return int(report["checked"])


def test_redis_outage_answers_cleanly_and_recovers(stack: Stack) -> None:
    pid = stack.daphne.proc.pid  # type: ignore[union-attr]
    before_ipr = _open_ipr(stack, "before the redis outage")
    events_before = _audit_ok(stack)

    seen: dict[str, Any] = {}

    def outage() -> None:
        stack.redis.stop()
        # Writes that need no Redis still work: the rate limiter fails open and realtime events are dropped.
        seen["open"] = stack.http.post(
            "/api/v1/iprs",
            json={
                "blueprint_version": stack.world["commit_ids"][1],
                "environment": stack.world["environment"],
                "title": "during the redis outage",
            },
            headers=stack.as_("requester"),
        )
        seen["stats"] = stack.http.get("/api/v1/monitoring/rate-limit/stats", headers=stack.as_("admin"))

    traffic = _during(stack, outage, stack.redis.start)
    assert not traffic.bad, (traffic.bad[:5], stack.daphne.log_tail())
    assert traffic.statuses[200] > 20, traffic.statuses
    assert seen["open"].status_code == 201, seen["open"].text
    # The one endpoint that reads Redis itself answers 503 while Redis is down, not 500.
    assert _clean_503(seen["stats"]), (seen["stats"].status_code, seen["stats"].text)

    _recovered(stack, "/api/v1/monitoring/rate-limit/stats")
    assert stack.daphne.proc.pid == pid and stack.daphne.proc.poll() is None  # type: ignore[union-attr]
    assert stack.http.get(f"/api/v1/iprs/{before_ipr}", headers=stack.as_("admin")).status_code == 200
    assert _audit_ok(stack) > events_before


def _admin_session(stack: Stack) -> httpx.Client:
    """A client logged in to the Django admin through its login form (session cookie + CSRF)."""
    client = httpx.Client(base_url=stack.daphne.base, timeout=TIMEOUT)
    client.get("/admin/login/")
    username = "stress-admin"
    response = client.post(
        "/admin/login/?next=/admin/",
        data={"username": username, "password": "pw-" + username, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": stack.daphne.base + "/admin/login/"},
    )
    assert response.status_code == 302 and "sessionid" in client.cookies, response.text[:300]
    assert client.get("/admin/iprs/ipr/").status_code == 200
    return client


def test_postgres_outage_answers_503_and_loses_nothing(stack: Stack) -> None:
    pid = stack.daphne.proc.pid  # type: ignore[union-attr]
    admin_page = _admin_session(stack)
    before_ipr = _open_ipr(stack, "before the database outage")
    events_before = _audit_ok(stack)

    seen: dict[str, httpx.Response] = {}

    def outage() -> None:
        stack.postgres.stop("immediate")
        seen["read"] = stack.http.get("/api/v1/blueprints", headers=stack.as_("admin"))
        seen["write"] = stack.http.post(
            "/api/v1/iprs",
            json={"blueprint_version": "1", "environment": stack.world["environment"], "title": "lost?"},
            headers=stack.as_("requester"),
        )
        seen["admin"] = admin_page.get("/admin/iprs/ipr/")
        seen["health"] = stack.http.get("/api/v1/monitoring/health")

    traffic = _during(stack, outage, stack.postgres.start)
    assert not traffic.bad, (traffic.bad[:5], stack.daphne.log_tail())
    assert traffic.statuses[503] > 5, traffic.statuses
    for name in ("read", "write"):
        assert _clean_503(seen[name]), (name, seen[name].status_code, seen[name].text[:300])
    # A page outside the API (the admin, with its session in the database) also answers a clean 503, not a 500 page.
    assert _clean_503(seen["admin"]), (seen["admin"].status_code, seen["admin"].text[:300])
    assert seen["health"].status_code == 200  # liveness touches no dependency

    recovery = _recovered(stack)
    assert recovery < 20
    assert stack.daphne.proc.pid == pid and stack.daphne.proc.poll() is None  # type: ignore[union-attr]
    assert stack.http.get(f"/api/v1/iprs/{before_ipr}", headers=stack.as_("admin")).status_code == 200
    for ipr in stack.world["ipr_ids"]:
        assert stack.http.get(f"/api/v1/iprs/{ipr}", headers=stack.as_("admin")).status_code == 200
    assert _audit_ok(stack) >= events_before
    after_ipr = _open_ipr(stack, "after the database outage")
    assert after_ipr > before_ipr
    assert admin_page.get("/admin/iprs/ipr/").status_code == 200  # the session outlived the outage
    admin_page.close()
