"""Benchmark: the DAG executor on a 200-resource plan on the simulator, 100 ms per operation, parallelism 16.

Prints makespan / max(critical path, total work / parallelism) per run; the goal is at most 1.10. "Work" is the
simulated latency (every operation takes exactly --latency seconds: jitter 0; the simulator writes its own rows
within that time, as a cloud API's latency includes its own bookkeeping), so the bound is what an ideal scheduler
with free bookkeeping would reach; the ratio shows the executor's scheduling and persistence overhead (operation
rows, recorded state, events to Redis) and the threads' contention for the interpreter. The engines are loaded
before the first run, as in a worker process that has run a task before.

Run: .venv/bin/python bench/deploy.py [--resources 200] [--parallelism 16] [--latency 0.1] [--runs 5]
(DATABASE_URL / REDIS_URL as in bench/_django.py; not a test, no assertions.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _django import machine, scratch_django

TYPES = ("compute", "container", "database", "cache", "loadbalancer", "network", "volume")


def generate(size: int) -> dict[str, Any]:
    """Groups of 20: a network, two volumes, a database and a cache on it, eleven VMs depending on them, two load
    balancers over the VMs and a container behind each balancer: five levels of dependencies."""
    resources: list[dict[str, Any]] = []
    for g in range(size // 20):
        net, db, cache = f"net-{g}", f"db-{g}", f"cache-{g}"
        vols = [f"vol-{g}-{i}" for i in range(2)]
        resources.append({"name": net, "type": "network"})
        resources += [{"name": v, "type": "volume", "specs": {"storage": "10GB"}} for v in vols]
        resources.append({"name": db, "type": "database", "network": net, "specs": {"engine": "postgresql"}})
        resources.append({"name": cache, "type": "cache", "network": net, "specs": {"engine": "redis"}})
        vms = [f"vm-{g}-{i}" for i in range(11)]
        for i, vm in enumerate(vms):
            deps = [db, cache, vols[i % 2]]
            resources.append({"name": vm, "type": "compute", "network": net, "depends_on": deps, "specs": {"cpu": 2}})
        for half in range(2):
            lb = f"lb-{g}-{half}"
            resources.append({"name": lb, "type": "loadbalancer", "specs": {"targets": vms[half * 5 : half * 5 + 6]}})
            resources.append({"name": f"edge-{g}-{half}", "type": "container", "depends_on": [lb]})
    return {"version": "1.0", "name": "bench-deploy", "resources": resources}


def critical_path(plan: dict[str, Any]) -> int:
    """Operations on the longest dependency chain of the plan."""
    depth: dict[str, int] = {}
    for action in plan["actions"]:  # topological order
        depth[action["name"]] = 1 + max((depth[d] for d in action["depends_on"]), default=0)
    return max(depth.values())


def ideal_schedule(plan: dict[str, Any], parallelism: int, latency: float) -> float:
    """Makespan of the executor's own scheduling rule (its DAG and critical-path priorities) with zero overhead:
    what the executor would reach if persistence, events and the simulator's bookkeeping cost nothing."""
    import heapq

    from engines.executor import _Op, _prerequisites, _priorities

    ops = {
        a["name"]: _Op(0, a["name"], a["type"], a["action"], a["order"], a["depends_on"], {}, "pending", 0)
        for a in plan["actions"]
    }
    _prerequisites(ops)
    _priorities(ops)
    now, running, done = 0.0, [], set()
    pending = set(ops)
    while pending or running:
        ready = sorted(
            (ops[n] for n in pending if all(p in done for p in ops[n].prerequisites)),
            key=lambda o: (-o.priority, o.position),
        )
        for op in ready[: parallelism - len(running)]:
            pending.discard(op.resource)
            heapq.heappush(running, (now + latency, op.resource))
        now, name = heapq.heappop(running)
        done.add(name)
    return now


def run_once(run: int, args: argparse.Namespace, version: Any, plan: dict[str, Any]) -> dict[str, Any]:
    from engines import executor
    from engines.models import Environment, ResourceOperation

    env = Environment.objects.create(
        name=f"bench-{run}",
        engine="simulator",
        config={
            "cluster": f"bench-{run}",
            "latency_scale": 1,
            "latencies": dict.fromkeys(TYPES, args.latency),
            "jitter": 0,
        },
    )
    deployment = executor.deployment_open(ipr_id=run, environment=env, target_version=version, plan=plan)
    executor.deployment_claim(deployment_id=deployment.pk, owner="bench")
    started = time.perf_counter()
    outcome = executor.deployment_execute(deployment_id=deployment.pk, owner="bench", parallelism=args.parallelism)
    makespan = time.perf_counter() - started
    ops = list(ResourceOperation.objects.filter(deployment=deployment))
    if not outcome.succeeded or any(op.status != "succeeded" for op in ops):
        raise SystemExit(f"run {run} failed: {outcome.error}")
    n = len(ops)
    work = n * args.latency
    bound = max(critical_path(plan) * args.latency, work / args.parallelism)
    measured_work = sum(op.duration_ms for op in ops) / 1000
    return {
        "operations": n,
        "makespan": makespan,
        "bound": bound,
        "ratio": makespan / bound,
        "mean_op": measured_work / n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with scratch_django("bench-deploy") as db_url:
        from django.conf import settings
        from django.contrib.auth.models import Group, User

        from blueprints.analysis import compute_plan
        from blueprints.services import blueprint_create
        from engines.registry import get_engine_class

        get_engine_class("simulator")  # loads every built-in engine (the Kubernetes client alone took ~1.4 s)

        owner = User.objects.create_user("bench", password="x")
        owner.groups.add(Group.objects.get_or_create(name="requesters")[0])
        document = generate(args.resources)
        version = blueprint_create(owner=owner, document=document)
        plan = compute_plan(document, {})
        cp = critical_path(plan)
        bound = max(cp * args.latency, len(plan["actions"]) * args.latency / args.parallelism)
        ideal = ideal_schedule(plan, args.parallelism, args.latency)
        print(machine())
        print(f"database {db_url.split('@')[-1]}, channel layer {settings.CHANNEL_LAYERS['default']['BACKEND']}")
        print(
            f"{len(plan['actions'])} operations, critical path {cp} operations, {args.latency * 1000:g} ms each, "
            f"parallelism {args.parallelism}"
        )
        print(
            f"bound {bound:.3f} s; the executor's scheduling rule with zero overhead: {ideal:.3f} s "
            f"(ratio {ideal / bound:.3f})"
        )
        results = []
        for run in range(1, args.runs + 1):
            r = run_once(run, args, version, plan)
            results.append(r)
            print(
                f"run {run}: makespan {r['makespan']:.3f} s, bound {r['bound']:.3f} s, "
                f"ratio {r['ratio']:.3f}, mean operation {r['mean_op'] * 1000:.1f} ms"
            )
        ratios = [r["ratio"] for r in results]
        print(f"ratio: best {min(ratios):.3f}, median {statistics.median(ratios):.3f}, worst {max(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
