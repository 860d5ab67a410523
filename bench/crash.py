"""Benchmark: SIGKILL the Celery worker at a random point during each of 20 deployments against a real dockerd, let
another worker resume after the lease expires, then count containers by label. Goal: 0 duplicated, 0 lost.

Each deployment changes the stack (web containers 1-3 with alternating memory limits, a database and a cache that
come and go), so creates, updates (Docker replaces changed containers) and deletes are all interrupted. A worker
runs the deploy task; the benchmark kills its whole process group at a uniformly random moment within
--max-kill-after seconds of the deploy request, starts a replacement (with beat, which re-enqueues deployments whose
lease expired), and waits for the IPR to finish. Then, for every resource of the deployed version, the containers
carrying `ai-cdn.env=<env>` and `ai-cdn.resource=<name>` must number exactly its `count`, and no container may
carry a resource name the version does not have.

Run: .venv/bin/python bench/crash.py [--deployments 20] [--seed 1] [--max-kill-after 1.5]
(DATABASE_URL / REDIS_URL as in bench/_django.py; starts its own dockerd via tests/engines/dockerd.py.)
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _django import machine, scratch_django

LEASE_SECONDS = 3


def stack(i: int) -> dict[str, Any]:
    resources: list[dict[str, Any]] = [
        {"name": "backend", "type": "network", "specs": {"cidr": "172.31.9.0/24"}},
        {
            "name": "web",
            "type": "compute",
            "count": 1 + i % 3,
            "network": "backend",
            "specs": {"cpu": 1, "memory": "64MB" if i % 2 == 0 else "96MB"},
        },
    ]
    if i % 2 == 0:
        resources.append({"name": "db", "type": "database", "network": "backend", "specs": {"engine": "postgresql"}})
    if i % 3 != 1:
        resources.append({"name": "cache", "type": "cache", "network": "backend", "specs": {"engine": "redis"}})
    return {"version": "1.0", "name": "crash", "resources": resources}


def count_containers(client: Any, env: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for c in client.containers.list(all=True, filters={"label": [f"ai-cdn.env={env}"]}):
        found[c.labels.get("ai-cdn.resource", "?")] += 1
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-kill-after", type=float, default=1.5)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    from tests.engines.dockerd import LONG_RUNNING, TEST_IMAGE, Dockerd

    daemon = Dockerd().start()
    daemon.import_busybox_image(TEST_IMAGE)
    workers: list[Any] = []
    try:
        with scratch_django("bench-crash") as db_url:
            from django.conf import settings
            from django.contrib.auth.models import Group, User

            from blueprints.services import blueprint_create, blueprint_version_create
            from engines.drift import drift_check
            from engines.models import Deployment, OperationStatus, ResourceOperation
            from iprs import services
            from iprs.models import IPR, IPRState
            from tests.deployments.workers import Worker, wait_for

            def user(name: str, role: str) -> Any:
                u = User.objects.create_user(name, password="x")
                u.groups.add(Group.objects.get_or_create(name=role)[0])
                return u

            author, reviewer = user("author", "requesters"), user("reviewer", "reviewers")
            operator, admin = user("operator", "operators"), user("admin", "admins")
            engine_images = "aicdn-test/busybox:1"
            env = services.environment_create(
                actor=admin,
                name="crash",
                engine="docker",
                config={
                    "base_url": daemon.base_url,
                    "timeout": 30,
                    "default_image": TEST_IMAGE,
                    "image_map": {"postgres:16": engine_images, "redis:7": engine_images},
                    "commands": {TEST_IMAGE: LONG_RUNNING},
                },
                policy={"required_approvals": 1, "cost_increase_threshold": None, "blocking_severity": "critical"},
            )
            worker_env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "aicdn_project.settings",
                "DATABASE_URL": db_url,
                "AICDN_KEY_PREFIX": settings.KEY_PREFIX,
                "AICDN_DEPLOY_LEASE_SECONDS": str(LEASE_SECONDS),
                "AICDN_DEPLOY_REAPER_INTERVAL": "1",
                "AICDN_DEPLOY_PARALLELISM": "4",
            }
            logs = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).parent

            def start(n: int) -> Any:
                w = Worker(f"crash-{n}", logs / f"worker-{n}.log", worker_env, beat=True)
                w.wait_ready()
                workers.append(w)
                return w

            print(machine())
            print(f"database {db_url.split('@')[-1]}, dockerd {daemon.base_url}, lease {LEASE_SECONDS} s")
            worker = start(0)
            blueprint_id = None
            totals = {"duplicated": 0, "lost": 0, "mid_run_kills": 0, "resumed": 0}
            for i in range(args.deployments):
                document = stack(i)
                if blueprint_id is None:
                    version = blueprint_create(owner=author, document=document)
                    blueprint_id = version.blueprint_id
                else:
                    version = blueprint_version_create(blueprint_id=blueprint_id, author=author, document=document)[0]
                ipr = services.ipr_open(author=author, blueprint_version=version, environment=env, title=f"step {i}")
                services.ipr_approve(reviewer=reviewer, ipr_id=ipr.pk)
                started = time.monotonic()
                services.ipr_deploy(actor=operator, ipr_id=ipr.pk)
                kill_after = rng.uniform(0, args.max_kill_after)
                time.sleep(max(0.0, kill_after - (time.monotonic() - started)))
                running = ResourceOperation.objects.filter(
                    deployment__ipr_id=ipr.pk, status=OperationStatus.RUNNING
                ).count()
                state_at_kill = IPR.objects.get(pk=ipr.pk).state
                worker.kill()
                mid_run = state_at_kill == IPRState.DEPLOYING
                totals["mid_run_kills"] += mid_run
                worker = start(i + 1)
                wait_for(
                    lambda pk=ipr.pk: IPR.objects.get(pk=pk).state not in (IPRState.QUEUED, IPRState.DEPLOYING),
                    180,
                    f"deployment {i} to finish",
                    interval=0.2,
                )
                ipr.refresh_from_db()
                deployment = Deployment.objects.get(ipr_id=ipr.pk)
                totals["resumed"] += deployment.attempt > 1
                expected = {r["name"]: r.get("count", 1) for r in document["resources"] if r["type"] != "network"}
                found = count_containers(daemon.client, env.name)
                duplicated = sum(max(0, found[n] - expected.get(n, 0)) for n in set(found) | set(expected))
                lost = sum(max(0, c - found[n]) for n, c in expected.items())
                totals["duplicated"] += duplicated
                totals["lost"] += lost
                drift = drift_check(environment=env).status
                print(
                    f"{i + 1:2d}: kill at {kill_after:4.2f} s ({state_at_kill}, {running} op(s) running) -> "
                    f"IPR {ipr.state}, run {deployment.attempt}, containers {dict(sorted(found.items()))}, "
                    f"duplicated {duplicated}, lost {lost}, drift {drift}"
                    + (f", failure: {ipr.failure_reason}" if ipr.state != IPRState.DEPLOYED else "")
                )
            print(
                f"{args.deployments} deployments, {totals['mid_run_kills']} killed mid-run, "
                f"{totals['resumed']} resumed by another worker: duplicated {totals['duplicated']}, "
                f"lost {totals['lost']}"
            )
            for w in workers:
                w.stop()
    finally:
        for w in workers:
            w.kill()
        daemon.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
