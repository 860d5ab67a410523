"""Claiming a deployment: a conditional update that exactly one worker wins; leases expire; a run resumes from the
persisted state without repeating finished work or duplicating what an interrupted operation made."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from engines import executor
from engines.models import Deployment, DeploymentStatus, OperationStatus, ResourceOperation, SimulatedObject
from engines.selectors import environment_engine
from iprs import services, tasks
from iprs.models import IPR, EnvironmentLock, IPRState
from tests.deployments.conftest import compute, doc

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued_ipr(make_env, make_version, users, monkeypatch):
    """An approved, queued IPR whose deploy message is held back (the test plays the workers)."""
    monkeypatch.setattr(tasks.deploy_ipr, "delay", lambda ipr_id: None)

    def make(document, env=None):
        env = env or make_env()
        version = make_version(document)
        ipr = services.ipr_open(author=users["author"], blueprint_version=version, environment=env, title="t")
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
        services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)
        return services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)

    return make


def test_concurrent_claims_have_exactly_one_winner(queued_ipr):
    ipr = queued_ipr(doc(compute("web")))
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="starter")
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    assert deployment.status == DeploymentStatus.QUEUED and deployment.operations.count() == 1
    workers = 8
    barrier = threading.Barrier(workers)
    winners: list[str] = []
    errors: list[BaseException] = []

    def claim(name: str) -> None:
        try:
            barrier.wait()
            if executor.deployment_claim(deployment_id=deployment.pk, owner=name) is not None:
                winners.append(name)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(winners) == 1
    deployment.refresh_from_db()
    assert (deployment.status, deployment.lease_owner, deployment.attempt) == ("running", winners[0], 1)
    # While the lease is live nobody else gets it, and only the holder can renew it.
    assert executor.deployment_claim(deployment_id=deployment.pk, owner="late") is None
    executor.deployment_heartbeat(deployment_id=deployment.pk, owner=winners[0])
    with pytest.raises(executor.LeaseLost):
        executor.deployment_heartbeat(deployment_id=deployment.pk, owner="late")


def test_an_expired_lease_is_taken_over_and_fences_the_old_holder(queued_ipr):
    ipr = queued_ipr(doc(compute("web")))
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="w1")
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    assert executor.deployment_claim(deployment_id=deployment.pk, owner="w1") is not None
    assert executor.deployments_stalled() == []
    Deployment.objects.filter(pk=deployment.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert executor.deployments_stalled() == [ipr.pk]
    taken = executor.deployment_claim(deployment_id=deployment.pk, owner="w2")
    assert taken is not None and (taken.lease_owner, taken.attempt) == ("w2", 2)
    with pytest.raises(executor.LeaseLost):
        executor.deployment_heartbeat(deployment_id=deployment.pk, owner="w1")
    with pytest.raises(executor.LeaseLost):
        executor.deployment_execute(deployment_id=deployment.pk, owner="w1")
    assert ResourceOperation.objects.get(deployment=deployment).status == OperationStatus.PENDING


def test_a_run_resumes_after_a_dead_worker_without_redoing_or_duplicating(queued_ipr, eager_tasks, monkeypatch):
    """Worker w1 applied `a` (recorded), made `b`'s objects but died before recording them, never started `c`."""
    ipr = queued_ipr(doc(compute("a", count=2), compute("b", count=3), compute("c", depends_on=["a", "b"])))
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="w1")
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    executor.deployment_claim(deployment_id=deployment.pk, owner="w1")
    env = ipr.environment
    engine, ctx = environment_engine(env, deployment_id=f"dep-{deployment.pk}")
    ops = {op.resource: op for op in deployment.operations.all()}
    a_result = engine.create(ops["a"].spec, ctx)
    ResourceOperation.objects.filter(pk=ops["a"].pk).update(status="succeeded", attempts=1, output={"x": 1})
    b_first = engine.create(ops["b"].spec, ctx)
    ResourceOperation.objects.filter(pk=ops["b"].pk).update(status="running", attempts=1)
    # w1 is SIGKILLed: its leases on the deployment and on the environment run out.
    Deployment.objects.filter(pk=deployment.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    EnvironmentLock.objects.filter(environment=env).update(expires_at=timezone.now() - timedelta(seconds=1))

    # Beat finds it and re-enqueues the deploy task, which (eagerly here) claims and resumes it.
    monkeypatch.undo()  # deploy_ipr.delay is real again
    assert tasks.resume_stalled_deployments.apply().get() == [ipr.pk]

    ipr.refresh_from_db()
    assert ipr.state == IPRState.DEPLOYED, ipr.failure_reason
    deployment.refresh_from_db()
    assert (deployment.status, deployment.attempt) == (DeploymentStatus.SUCCEEDED, 2)
    after = {op.resource: op for op in deployment.operations.all()}
    assert (after["a"].attempts, after["a"].output) == (1, {"x": 1})  # finished work is not redone
    assert after["b"].attempts == 2 and after["b"].output["adopted"] is True
    assert after["b"].output["object_ids"] == b_first.object_ids  # the interrupted create adopted, not duplicated
    assert after["c"].status == "succeeded"
    for name, count, ids in (("a", 2, a_result.object_ids), ("b", 3, b_first.object_ids), ("c", 1, None)):
        rows = SimulatedObject.objects.filter(environment=env.name, resource_name=name)
        assert rows.count() == count
        if ids is not None:
            assert sorted(rows.values_list("object_id", flat=True)) == sorted(ids)
    assert executor.deployments_stalled() == []


def test_an_aborted_deployment_is_cancelled_and_its_worker_stops(queued_ipr, users):
    ipr = queued_ipr(doc(compute("web")))
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="w1")
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    executor.deployment_claim(deployment_id=deployment.pk, owner="w1")
    services.ipr_abort(admin=users["admin"], ipr_id=ipr.pk, reason="wrong window")
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.CANCELLED
    assert ResourceOperation.objects.get(deployment=deployment).status == OperationStatus.SKIPPED
    with pytest.raises(executor.LeaseLost):
        executor.deployment_heartbeat(deployment_id=deployment.pk, owner="w1")
    # A late redelivery of the deploy message finds a failed IPR and does nothing.
    assert services.ipr_run_deployment(ipr_id=ipr.pk, worker="w2").state == IPRState.FAILED
    assert not SimulatedObject.objects.filter(environment=ipr.environment.name).exists()
    assert IPR.objects.get(pk=ipr.pk).failure_reason == "aborted by ada: wrong window"


def test_a_queued_ipr_whose_message_died_with_its_worker_is_enqueued_again(queued_ipr, eager_tasks, monkeypatch):
    """The worker took the message and was killed before starting: the IPR is queued, nothing holds its lock."""
    lost = queued_ipr(doc(compute("web")))
    assert tasks.resume_stalled_deployments.apply().get() == []  # not yet: it has not waited a whole lease
    IPR.objects.filter(pk=lost.pk).update(queued_at=timezone.now() - timedelta(seconds=61))
    # In another environment an IPR waits for the lock of a live holder: it has its own retrying task.
    holder = queued_ipr(doc(compute("api")))
    IPR.objects.filter(pk=holder.pk).update(state=IPRState.DEPLOYING)
    waiting = queued_ipr(doc(compute("db")), env=holder.environment)
    IPR.objects.filter(pk=waiting.pk).update(queued_at=timezone.now() - timedelta(seconds=61))
    EnvironmentLock.objects.update_or_create(
        environment=holder.environment,
        defaults={"holder_ipr": holder, "expires_at": timezone.now() + timedelta(seconds=60)},
    )
    monkeypatch.undo()  # deploy_ipr.delay is real (and eager) again
    assert tasks.resume_stalled_deployments.apply().get() == [lost.pk]
    assert IPR.objects.get(pk=lost.pk).state == IPRState.DEPLOYED
    assert IPR.objects.get(pk=waiting.pk).state == IPRState.QUEUED
