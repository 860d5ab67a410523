"""The deploy lock and the deploy task: enqueue after commit, run through the engines executor, record outcomes.

(The executor itself is tested in tests/deployments; here only what the IPR side does with it.)"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from aicdn_project.errors import Conflict
from aicdn_project.models import AuditEvent
from engines.models import Deployment, SimulatedObject
from iprs import services, tasks
from iprs.models import IPR, EnvironmentLock, IPRState
from iprs.selectors import environment_lock_get
from tests.iprs.conftest import WEB, set_state

S = IPRState


@pytest.fixture
def queued(open_ipr, users, enqueued):
    def make(**kwargs):
        ipr = open_ipr(**kwargs)
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
        return services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)

    return make


@pytest.fixture
def instant(env):
    """The simulator environment without latencies; faults as given."""

    def configure(**faults):
        config = {"latency_scale": 0, **({"faults": faults} if faults else {})}
        type(env).objects.filter(pk=env.pk).update(config=config)

    return configure


def test_deploy_enqueues_only_after_commit(open_ipr, users, enqueued, django_capture_on_commit_callbacks):
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
    assert enqueued == []  # nothing leaves before the transaction commits
    assert len(callbacks) == 2  # the ipr.state event for ipr-<id> and the enqueue
    for callback in callbacks:
        callback()
    assert enqueued == [ipr.pk]
    assert IPR.objects.get(pk=ipr.pk).state == S.QUEUED


def test_a_refused_deploy_enqueues_nothing(open_ipr, users, enqueued, django_capture_on_commit_callbacks):
    ipr = open_ipr()
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(Conflict):
        services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
    assert callbacks == []
    assert enqueued == []


def test_a_duplicate_deploy_message_for_a_finished_ipr_does_nothing(queued, env):
    ipr = queued()
    services.ipr_mark_failed(ipr_id=ipr.pk, reason="gave up")
    assert tasks.deploy_ipr.apply(args=[ipr.pk]).get() == "failed"
    assert not Deployment.objects.filter(ipr_id=ipr.pk).exists()
    assert not AuditEvent.objects.filter(object_type="ipr", object_id=str(ipr.pk), action="ipr.deploying").exists()


# The executor runs operations in threads with their own connections: these tests commit their data.
@pytest.mark.django_db(transaction=True)
def test_the_task_runs_the_engines_executor_and_records_success(queued, instant, env):
    instant()
    ipr = queued()
    assert tasks.deploy_ipr.apply(args=[ipr.pk]).get() == "deployed"
    ipr.refresh_from_db()
    assert ipr.state == S.DEPLOYED
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    assert ipr.deployment_result == deployment.result
    assert (deployment.status, ipr.deployment_result["operations"]) == ("succeeded", {"succeeded": 1})
    assert SimulatedObject.objects.filter(environment=env.name, resource_name="web").count() == 2
    env.refresh_from_db()
    assert env.deployed_version_id == ipr.blueprint_version_id
    assert environment_lock_get(environment=env) is None
    actions = list(
        AuditEvent.objects.filter(object_type="environment", object_id=str(env.pk)).values_list("action", flat=True)
    )
    assert actions[-2:] == ["environment.lock_acquired", "environment.lock_released"]
    deploying = AuditEvent.objects.get(object_type="ipr", object_id=str(ipr.pk), action="ipr.deploying")
    assert deploying.channel == "worker"


@pytest.mark.django_db(transaction=True)
def test_an_executor_failure_marks_the_ipr_failed_and_frees_the_lock(queued, instant, env):
    instant(resources={"web": "permanent"})
    ipr = queued()
    assert tasks.deploy_ipr.apply(args=[ipr.pk]).get() == "failed"
    ipr.refresh_from_db()
    assert ipr.state == S.FAILED
    assert "simulated permanent failure: create web" in ipr.failure_reason
    assert Deployment.objects.get(ipr_id=ipr.pk).status == "failed"
    assert environment_lock_get(environment=env) is None
    env.refresh_from_db()
    assert env.deployed_version_id is None


def test_the_lock_shows_its_holder_refuses_others_and_expires(queued, open_ipr, users, env):
    first = queued()
    services.ipr_mark_deploying(ipr_id=first.pk, worker="worker-1")
    lock = environment_lock_get(environment=env)
    assert (lock.holder_ipr_id, lock.holder_name) == (first.pk, "worker-1")
    assert lock.acquired_at <= timezone.now() < lock.expires_at
    other = set_state(open_ipr({**WEB, "count": 3}), S.QUEUED)
    with pytest.raises(Conflict) as err:
        services.environment_lock_acquire(environment=env, ipr=other)
    assert err.value.code == "environment_locked"
    assert err.value.details["holder_ipr"] == first.pk
    assert "worker-1" in err.value.message
    with pytest.raises(Conflict) as err:
        services.environment_lock_heartbeat(environment=env, ipr=other)
    assert err.value.code == "lock_lost"
    # The holder dies: no heartbeat until the lease runs out. The lock is then free and can be taken over.
    EnvironmentLock.objects.filter(environment=env).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert environment_lock_get(environment=env) is None
    with pytest.raises(Conflict):
        services.environment_lock_heartbeat(environment=env, ipr=first)
    taken = services.environment_lock_acquire(environment=env, ipr=other, holder_name="worker-2")
    assert taken.holder_ipr_id == other.pk
    event = AuditEvent.objects.filter(action="environment.lock_acquired").order_by("-seq").first()
    assert event.after["took_over_expired_lock_of_ipr"] == first.pk


def test_heartbeat_extends_the_lease(queued, env):
    ipr = queued()
    services.ipr_mark_deploying(ipr_id=ipr.pk)
    EnvironmentLock.objects.filter(environment=env).update(expires_at=timezone.now() + timedelta(seconds=5))
    lock = services.environment_lock_heartbeat(environment=env, ipr=ipr, lease_seconds=600)
    assert lock.expires_at > timezone.now() + timedelta(seconds=590)


def test_an_admin_releases_a_held_lock_and_it_is_audited(queued, users, env):
    ipr = queued()
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="stuck-worker")
    assert services.environment_lock_release(environment=env, actor=users["admin"], reason="worker host lost")
    assert environment_lock_get(environment=env) is None
    event = AuditEvent.objects.filter(action="environment.lock_released").order_by("-seq").first()
    assert event.actor.username == users["admin"].username
    assert event.before["holder_ipr"] == ipr.pk
    assert event.after == {"released": True, "forced": True, "reason": "worker host lost"}
    assert not services.environment_lock_release(environment=env, actor=users["admin"])


def test_a_second_worker_cannot_claim_a_deploying_ipr(queued):
    ipr = queued()
    services.ipr_mark_deploying(ipr_id=ipr.pk, worker="w1")
    with pytest.raises(Conflict) as err:
        services.ipr_mark_deploying(ipr_id=ipr.pk, worker="w2")
    assert err.value.details["current_state"] == "deploying"


def test_deploy_puts_one_message_on_the_real_broker(open_ipr, users, django_capture_on_commit_callbacks):
    import redis

    from aicdn_project.celery import app

    # A queue of this test's own: a Celery worker another test package started must not consume the message first.
    app.conf.task_default_queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-broker-test"

    broker = settings.CELERY_BROKER_URL
    if broker.startswith("redis+socket://"):  # the embedded Redis on its unix socket
        client = redis.Redis(unix_socket_path=broker.removeprefix("redis+socket://"))
    else:
        client = redis.Redis.from_url(broker)
    queue = app.conf.task_default_queue
    client.delete(queue)
    try:
        ipr = open_ipr()
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
        with django_capture_on_commit_callbacks(execute=True):
            services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
        messages = client.lrange(queue, 0, -1)
        assert len(messages) == 1
        message = json.loads(messages[0])
        assert message["headers"]["task"] == "iprs.deploy_ipr"
        assert message["headers"]["argsrepr"] == f"({ipr.pk},)"
    finally:
        client.delete(queue)
        app.conf.task_default_queue = settings.CELERY_TASK_DEFAULT_QUEUE


def test_a_dead_workers_ipr_stops_blocking_the_environment(queued, open_ipr, users, env):
    stuck = queued()
    services.ipr_mark_deploying(ipr_id=stuck.pk, worker="dead-worker")
    nxt = open_ipr({**WEB, "count": 3})
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=nxt.pk)
    with pytest.raises(Conflict) as err:  # the holder is alive: its lease has not run out
        services.ipr_deploy(actor=users["operator"], ipr_id=nxt.pk)
    assert err.value.details == {"ipr": stuck.pk, "state": "deploying"}
    EnvironmentLock.objects.filter(environment=env).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.ipr_deploy(actor=users["operator"], ipr_id=nxt.pk)
    services.ipr_mark_deploying(ipr_id=nxt.pk, worker="w2")
    stuck.refresh_from_db()
    assert stuck.state == S.FAILED
    assert f"IPR #{nxt.pk} took the environment over" in stuck.failure_reason
    assert environment_lock_get(environment=env).holder_ipr_id == nxt.pk


def test_a_queued_ipr_whose_base_moved_fails_instead_of_deploying_blind(queued, env, open_ipr, make_version):
    ipr = queued()
    other = make_version({**WEB, "count": 9})
    type(env).objects.filter(pk=env.pk).update(deployed_version=other)  # e.g. a reconcile applied elsewhere
    assert tasks.deploy_ipr.apply(args=[ipr.pk]).get() == "failed"
    assert not Deployment.objects.filter(ipr_id=ipr.pk).exists()  # nothing was applied
    assert "no longer deployed" in IPR.objects.get(pk=ipr.pk).failure_reason


def test_admins_abort_a_stuck_queued_ipr(queued, users, open_ipr):
    from aicdn_project.errors import PermissionDenied, ValidationFailed

    ipr = queued()
    with pytest.raises(PermissionDenied):
        services.ipr_abort(admin=users["operator"], ipr_id=ipr.pk, reason="stuck")
    with pytest.raises(ValidationFailed):
        services.ipr_abort(admin=users["admin"], ipr_id=ipr.pk, reason=" ")
    services.ipr_abort(admin=users["admin"], ipr_id=ipr.pk, reason="no executor yet")
    ipr.refresh_from_db()
    assert (ipr.state, ipr.failure_reason) == (S.FAILED, "aborted by ada: no executor yet")
    nxt = open_ipr({**WEB, "count": 3})
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=nxt.pk)
    assert services.ipr_deploy(actor=users["operator"], ipr_id=nxt.pk).state == S.QUEUED  # no longer blocked


def test_the_task_retries_while_another_run_holds_the_environment(queued, open_ipr, monkeypatch):
    from iprs.services import deployment

    holder = queued()
    services.ipr_mark_deploying(ipr_id=holder.pk, worker="w1")
    waiting = set_state(open_ipr({**WEB, "count": 3}), S.QUEUED)
    attempts = []
    real = deployment.ipr_run_deployment

    def counting(**kwargs):
        attempts.append(kwargs["ipr_id"])
        return real(**kwargs)

    monkeypatch.setattr(deployment, "ipr_run_deployment", counting)
    monkeypatch.setattr(services, "ipr_run_deployment", counting)
    # Eagerly, Celery runs each retry at once (no countdown), so the retries are used up within this call.
    result = tasks.deploy_ipr.apply(args=[waiting.pk])
    assert result.state == "FAILURE"
    assert isinstance(result.result, Conflict) and result.result.code == "environment_locked"
    assert attempts == [waiting.pk] * (tasks.deploy_ipr.max_retries + 1)
    assert not Deployment.objects.filter(ipr_id=waiting.pk).exists()
    assert IPR.objects.get(pk=waiting.pk).state == S.QUEUED  # still waiting for its turn, not failed
