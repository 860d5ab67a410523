"""The executor on the simulator through the real IPR flow: faults, DAG order, bounded parallelism, events."""

from __future__ import annotations

from typing import Any

import pytest

from engines.models import (
    Deployment,
    DeploymentStatus,
    OperationStatus,
    ResourceOperation,
    ResourceState,
    ResourceStatus,
    SimulatedObject,
)
from iprs import services
from iprs.models import IPR, IPRState
from iprs.selectors import environment_lock_get
from tests.deployments.conftest import FAST, compute, doc

pytestmark = pytest.mark.django_db(transaction=True)


def ops_by_name(ipr: IPR) -> dict[str, ResourceOperation]:
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    return {op.resource: op for op in deployment.operations.all()}


def objects(env: Any, name: str) -> list[SimulatedObject]:
    return list(SimulatedObject.objects.filter(cluster=env.config["cluster"], environment=env.name, resource_name=name))


def test_a_deployment_creates_everything_and_records_the_state(make_env, deploy):
    env = make_env()
    stack = doc(
        {"name": "net", "type": "network", "specs": {"cidr": "10.9.0.0/24"}},
        compute("web", count=2, network="net"),
        {"name": "data", "type": "volume", "specs": {"storage": "1GB"}},
        compute("worker", depends_on=["data"]),
    )
    ipr = deploy(env, stack)
    assert ipr.state == IPRState.DEPLOYED, ipr.failure_reason
    env.refresh_from_db()
    assert env.deployed_version_id == ipr.blueprint_version_id
    assert environment_lock_get(environment=env) is None
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    assert (deployment.status, deployment.attempt, deployment.lease_owner) == (DeploymentStatus.SUCCEEDED, 1, "")
    ops = ops_by_name(ipr)
    assert {name: (op.action, op.status, op.attempts) for name, op in ops.items()} == {
        "net": ("create", "succeeded", 1),
        "web": ("create", "succeeded", 1),
        "data": ("create", "succeeded", 1),
        "worker": ("create", "succeeded", 1),
    }
    assert all(op.duration_ms and op.duration_ms >= 40 for op in ops.values())  # 50 ms simulated latency each
    web = sorted(objects(env, "web"), key=lambda o: o.instance)
    assert ops["web"].output["object_ids"] == [o.object_id for o in web]
    states = {s.name: s for s in ResourceState.objects.filter(environment=env)}
    assert {n: s.status for n, s in states.items()} == dict.fromkeys(("net", "web", "data", "worker"), "ready")
    assert states["web"].spec == stack["resources"][1]
    assert len(objects(env, "web")) == 2
    assert ipr.deployment_result["operations"] == {"succeeded": 4}

    # The next plan diffs against the recorded state: the same version again is all no-ops.
    again = services.ipr_open(
        author=ipr.author, blueprint_version=ipr.blueprint_version, environment=env, title="again"
    )
    assert again.plan["counts"]["noop"] == 4 and again.plan["summary"].startswith("0 to add, 0 to change")


def test_transient_faults_are_retried_and_a_permanent_one_stops_scheduling(
    make_env, make_version, users, approve_and_deploy, fast_retries, listener
):
    latencies = {**FAST, "database": 0.8}  # "slow" is still running when "broken" fails
    env = make_env(
        config={
            "latency_scale": 1,
            "latencies": latencies,
            "jitter": 0,
            "seed": 5,
            "faults": {"resources": {"flaky": "transient", "broken": "permanent"}, "transient_failures": 2},
        }
    )
    stack = doc(
        {"name": "net", "type": "network"},
        compute("flaky", network="net"),
        compute("broken", depends_on=["net"]),
        {"name": "slow", "type": "database", "specs": {"engine": "postgresql", "engine_version": "16"}},
        compute("after", depends_on=["broken"]),
        compute("later", depends_on=["slow"]),
    )
    version = make_version(stack)
    ipr = services.ipr_open(author=users["author"], blueprint_version=version, environment=env, title="faults")
    listener.join(f"ipr-{ipr.pk}")
    ipr = approve_and_deploy(ipr)

    assert ipr.state == IPRState.FAILED
    assert ipr.failure_reason.startswith("create broken failed: simulated permanent failure")
    assert "1 operation(s) not run" not in ipr.failure_reason  # both never-run ones are counted
    assert "2 operation(s) not run" in ipr.failure_reason
    ops = ops_by_name(ipr)
    assert {n: op.status for n, op in ops.items()} == {
        "net": "succeeded",
        "flaky": "succeeded",
        "broken": "failed",
        "slow": "succeeded",  # in flight when "broken" failed: waited for, not abandoned
        "after": "skipped",
        "later": "skipped",  # its dependency finished after the failure: nothing new was scheduled
    }
    assert ops["flaky"].attempts == 3  # two injected transient failures, then success
    assert ops["broken"].attempts == 1  # permanent: never retried
    assert ops["slow"].finished_at > ops["broken"].finished_at
    assert ops["later"].started_at is None and ops["after"].started_at is None
    # Partial state is recorded as it is: what succeeded is ready, the failure is failed, the rest absent.
    states = {s.name: s.status for s in ResourceState.objects.filter(environment=env)}
    assert states == {"net": "ready", "flaky": "ready", "slow": "ready", "broken": "failed"}
    assert sorted(SimulatedObject.objects.filter(environment=env.name).values_list("resource_name", flat=True)) == [
        "flaky",
        "net",
        "slow",
    ]
    env.refresh_from_db()
    assert env.deployed_version_id is None
    assert environment_lock_get(environment=env) is None
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    assert deployment.status == DeploymentStatus.FAILED
    assert ipr.deployment_result["failed"] == ["broken"]

    # Every operation was published to the IPR's group after commit, with its attempts.
    events = [e for e in listener.drain() if not e["type"].startswith("ipr.")]  # ipr.state events are the IPR's
    kinds = [e["type"] for e in events]
    assert kinds[0] == "deployment.started" and kinds[-1] == "deployment.finished"
    assert events[-1]["status"] == "failed"
    flaky = [(e["status"], e["attempt"]) for e in events if e.get("resource") == "flaky"]
    assert flaky == [("running", 1), ("retrying", 1), ("retrying", 2), ("succeeded", 3)]
    broken = [e for e in events if e.get("resource") == "broken"]
    assert [e["status"] for e in broken] == ["running", "failed"]
    assert "simulated permanent failure" in broken[-1]["error"]
    assert all(e["ipr"] == ipr.pk for e in events)

    # The next plan starts from the partial state: the failed resource is replaced, the others are kept.
    retry = services.ipr_open(author=users["author"], blueprint_version=version, environment=env, title="retry")
    actions = {a["name"]: a["action"] for a in retry.plan["actions"]}
    assert actions == {
        "net": "noop",
        "flaky": "noop",
        "broken": "replace",
        "slow": "noop",
        "after": "create",
        "later": "create",
    }


def test_transient_errors_that_never_clear_fail_after_the_configured_attempts(make_env, deploy, fast_retries):
    fast_retries.AICDN_DEPLOY_MAX_ATTEMPTS = 3
    env = make_env(
        config={
            "latency_scale": 0,
            "faults": {"resources": {"web": "transient"}, "transient_failures": 10},
        }
    )
    ipr = deploy(env, doc(compute("web")))
    assert ipr.state == IPRState.FAILED
    assert "gave up after 3 attempts" in ipr.failure_reason
    assert ops_by_name(ipr)["web"].attempts == 3
    assert ResourceState.objects.get(environment=env, name="web").status == ResourceStatus.FAILED


def _max_concurrency(ops: list[ResourceOperation]) -> int:
    points = []
    for op in ops:
        points.append((op.started_at, 1))
        points.append((op.finished_at, -1))
    running = peak = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start at the same instant
        running += delta
        peak = max(peak, running)
    return peak


def test_dependencies_first_with_bounded_parallelism_and_deletes_in_reverse(make_env, deploy, settings):
    settings.AICDN_DEPLOY_PARALLELISM = 3
    env = make_env(config={"latency_scale": 1, "latencies": dict.fromkeys(FAST, 0.15), "jitter": 0})
    apps = [compute(f"app-{i}", network="net") for i in range(6)]
    stack = doc(
        {"name": "net", "type": "network"},
        *apps,
        {"name": "lb", "type": "loadbalancer", "specs": {"targets": ["app-0", "app-1", "app-2"]}},
        compute("edge", depends_on=["lb"]),
    )
    ipr = deploy(env, stack)
    assert ipr.state == IPRState.DEPLOYED, ipr.failure_reason
    ops = ops_by_name(ipr)
    for op in ops.values():
        for dep in op.depends_on:
            assert op.started_at >= ops[dep].finished_at, f"{op.resource} started before {dep} finished"
    assert set(ops["lb"].depends_on) == {"app-0", "app-1", "app-2"}
    # Never more than 3 at once, and 3 at once when 6 independent apps were ready.
    assert _max_concurrency(list(ops.values())) == 3

    # Remove everything but the network: deletes run dependents first (edge, then lb, then the apps it targeted).
    ipr2 = deploy(env, doc({"name": "net", "type": "network"}))
    assert ipr2.state == IPRState.DEPLOYED, ipr2.failure_reason
    deletes = ops_by_name(ipr2)
    assert {op.action for name, op in deletes.items() if name != "net"} == {"delete"}
    assert deletes["edge"].finished_at <= deletes["lb"].started_at
    for target in ("app-0", "app-1", "app-2"):
        assert deletes["lb"].finished_at <= deletes[target].started_at
    assert _max_concurrency([op for op in deletes.values() if op.action == "delete"]) <= 3
    assert set(ResourceState.objects.filter(environment=env).values_list("name", flat=True)) == {"net"}
    assert list(SimulatedObject.objects.filter(environment=env.name).values_list("resource_name", flat=True)) == ["net"]
    assert deletes["edge"].status == OperationStatus.SUCCEEDED
