"""50 simultaneous approve / deploy requests on one IPR, each on its own database connection.

PostgreSQL is where this matters (row locks); CI runs these tests there. On a SQLite file database every write
transaction takes the database write lock at BEGIN (transaction_mode IMMEDIATE), so the same outcome must hold there
too. A CI run (CI set) that is not on PostgreSQL fails loudly rather than passing on the weaker database.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest
from django.db import OperationalError, connection, connections
from rest_framework.test import APIClient

from aicdn_project import roles
from aicdn_project.models import AuditEvent
from iprs import services
from iprs.models import IPR, IPRState, Review
from tests.iprs.conftest import UserFactory

N = 50
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_in_ci():
    if os.environ.get("CI") and connection.vendor != "postgresql":
        pytest.fail("CI must run the concurrency tests on PostgreSQL: set DATABASE_URL")
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        # tests/iprs/conftest.py asks for a file database; another package set the session's database up first.
        pytest.skip("threads cannot share an in-memory SQLite database; run tests/iprs alone or on PostgreSQL")


def _race(work) -> list[object]:
    """Run work(i) for i in range(N) in N threads released together; each thread uses and closes its connection."""
    barrier = threading.Barrier(N)
    results: list[object] = [None] * N

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # collected and asserted on below
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


def _transitions(ipr: IPR, to_state: str) -> int:
    return AuditEvent.objects.filter(object_type="ipr", object_id=str(ipr.pk), action=f"ipr.{to_state}").count()


def test_50_reviewers_approving_at_once_make_exactly_one_transition(open_ipr):
    ipr = open_ipr()
    reviewers = [UserFactory(username=f"rev{i}", roles=[roles.REVIEWERS]) for i in range(N)]
    results = _race(lambda i: services.ipr_approve(reviewer=reviewers[i], ipr_id=ipr.pk).state)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    ipr.refresh_from_db()
    assert ipr.state == IPRState.APPROVED
    assert _transitions(ipr, "approved") == 1
    assert Review.objects.filter(ipr=ipr, decision="approve").count() == N


def test_50_deploy_requests_at_once_queue_exactly_one_deployment(open_ipr, users, monkeypatch):
    from iprs import tasks

    enqueued: list[int] = []
    lock = threading.Lock()

    def record(ipr_id: int) -> None:
        with lock:
            enqueued.append(ipr_id)

    monkeypatch.setattr(tasks.deploy_ipr, "delay", record)
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    operators = [UserFactory(username=f"op{i}", roles=[roles.OPERATORS]) for i in range(N)]
    # One request first: django_prometheus creates its metrics singleton on first use, and that is not thread-safe.
    warm = APIClient()
    warm.force_authenticate(operators[0])
    assert warm.get(f"/api/v1/iprs/{ipr.pk}").status_code == 200

    def deploy(i: int) -> int:
        client = APIClient()
        client.force_authenticate(operators[i])
        response = client.post(f"/api/v1/iprs/{ipr.pk}/deploy", {}, format="json")
        return response.status_code

    results = _race(deploy)
    assert [r for r in results if isinstance(r, Exception | OperationalError)] == []
    assert Counter(results) == {200: 1, 409: N - 1}
    ipr.refresh_from_db()
    assert ipr.state == IPRState.QUEUED
    assert _transitions(ipr, "queued") == 1
    assert enqueued == [ipr.pk]


def test_approvals_and_deploys_racing_each_other_move_the_ipr_once_each_way(open_ipr, users, monkeypatch):
    from iprs import tasks

    enqueued: list[int] = []
    monkeypatch.setattr(tasks.deploy_ipr, "delay", enqueued.append)
    ipr = open_ipr()
    people = [UserFactory(username=f"p{i}", roles=[roles.REVIEWERS if i % 2 else roles.OPERATORS]) for i in range(N)]

    def act(i: int) -> str:
        if i % 2:
            return services.ipr_approve(reviewer=people[i], ipr_id=ipr.pk).state
        return services.ipr_deploy(actor=people[i], ipr_id=ipr.pk).state

    _race(act)
    ipr.refresh_from_db()
    assert _transitions(ipr, "approved") == 1
    assert _transitions(ipr, "queued") <= 1
    assert len(enqueued) == _transitions(ipr, "queued")
    assert ipr.state == (IPRState.QUEUED if enqueued else IPRState.APPROVED)
