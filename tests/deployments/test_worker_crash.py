"""Kill and resume with real Celery worker processes: worker A is SIGKILLed in the middle of a deployment on the
simulator; after its lease expires, beat (in worker B) re-enqueues the deployment and B finishes it from the
persisted state. Nothing is lost, nothing is duplicated, finished operations are not run again."""

from __future__ import annotations

import os
import uuid

import pytest
from django.conf import settings

from engines.models import Deployment, OperationStatus, ResourceOperation, ResourceState, SimulatedObject
from iprs import services, tasks
from iprs.models import IPR, IPRState
from tests.deployments.conftest import compute, doc
from tests.deployments.workers import Worker, database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

APPS = 8


def test_a_sigkilled_worker_is_resumed_by_another_after_lease_expiry(
    make_env, make_version, users, tmp_path, monkeypatch
):
    env = make_env(config={"latency_scale": 1, "latencies": dict.fromkeys(("network", "compute"), 0.5), "jitter": 0})
    stack = doc(
        {"name": "net", "type": "network"},
        *[compute(f"app-{i}", count=2, network="net") for i in range(APPS)],
        compute("tail", depends_on=[f"app-{i}" for i in range(APPS)]),
    )
    version = make_version(stack)
    # A queue of their own: other workers of this session (tests/ops starts one) must not take these messages.
    prefix = f"{settings.KEY_PREFIX}-crash-{uuid.uuid4().hex[:8]}"
    queue = f"{prefix}-default"  # what the workers' settings make of AICDN_KEY_PREFIX
    monkeypatch.setattr(tasks.deploy_ipr, "delay", lambda ipr_id: tasks.deploy_ipr.apply_async([ipr_id], queue=queue))
    worker_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "aicdn_project.test_settings",
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "SECRET_KEY": "crash-test-" + "k" * 40,
        "AICDN_KEY_PREFIX": prefix,
        "AICDN_DEPLOY_PARALLELISM": "2",
        "AICDN_DEPLOY_LEASE_SECONDS": "3",
        "AICDN_DEPLOY_REAPER_INTERVAL": "1",
    }
    a = Worker("crash-a", tmp_path / "worker-a.log", worker_env)
    b = None
    try:
        a.wait_ready()
        ipr = services.ipr_open(author=users["author"], blueprint_version=version, environment=env, title="crash")
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
        services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)
        services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)  # the message goes to the broker on commit

        def mid_run() -> bool:
            ops = ResourceOperation.objects.filter(deployment__ipr_id=ipr.pk)
            done = ops.filter(status=OperationStatus.SUCCEEDED).count()
            return done >= 3 and ops.filter(status=OperationStatus.RUNNING).exists()

        wait_for(mid_run, 60, "worker A to be in the middle of the deployment")
        a.kill()
        before = {op.resource: op for op in ResourceOperation.objects.filter(deployment__ipr_id=ipr.pk)}
        finished_before = {n for n, op in before.items() if op.status == OperationStatus.SUCCEEDED}
        interrupted = {n for n, op in before.items() if op.status == OperationStatus.RUNNING}
        assert finished_before and interrupted
        assert len(finished_before) < len(before)
        deployment = Deployment.objects.get(ipr_id=ipr.pk)
        assert deployment.status == "running" and f":{a.pid}:" in deployment.lease_owner
        assert IPR.objects.get(pk=ipr.pk).state == IPRState.DEPLOYING
        objects_before = {
            name: sorted(
                SimulatedObject.objects.filter(environment=env.name, resource_name=name).values_list(
                    "object_id", flat=True
                )
            )
            for name in finished_before
        }

        b = Worker("crash-b", tmp_path / "worker-b.log", worker_env, beat=True)
        b.wait_ready()
        wait_for(
            lambda: IPR.objects.get(pk=ipr.pk).state not in (IPRState.QUEUED, IPRState.DEPLOYING),
            90,
            "worker B to finish the deployment",
            interval=0.2,
        )
    finally:
        a.kill()
        if b is not None:
            b.stop()

    ipr = IPR.objects.get(pk=ipr.pk)
    assert ipr.state == IPRState.DEPLOYED, f"{ipr.failure_reason}\n--- B ---\n{b.log()[-4000:]}"
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    assert (deployment.status, deployment.attempt) == ("succeeded", 2)
    assert "resuming the deployment" in b.log()
    after = {op.resource: op for op in deployment.operations.all()}
    assert all(op.status == OperationStatus.SUCCEEDED for op in after.values())
    for name in finished_before:  # not run again
        assert after[name].attempts == before[name].attempts == 1
        assert after[name].finished_at == before[name].finished_at
    for name in interrupted:  # run again by B
        assert after[name].attempts == 2
    # No duplicated and no lost resources: exactly `count` objects each, and the ones made before the crash kept.
    expected = {"net": 1, "tail": 1, **{f"app-{i}": 2 for i in range(APPS)}}
    found: dict[str, list[str]] = {}
    for obj in SimulatedObject.objects.filter(environment=env.name):
        found.setdefault(obj.resource_name, []).append(obj.object_id)
    assert {name: len(ids) for name, ids in found.items()} == expected
    for name, ids in objects_before.items():
        assert sorted(found[name]) == ids
    states = dict(ResourceState.objects.filter(environment=env).values_list("name", "status"))
    assert states == dict.fromkeys(expected, "ready")
