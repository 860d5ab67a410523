"""Benchmark: validate + cost + audit + plan on generated blueprints of 1,000, 10,000 and 50,000 resources.

Run: .venv/bin/python bench/analysis.py [sizes...]   (prints best-of-N wall times; not a test, no assertions)
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blueprints.analysis import DeployedResource, audit_document, compute_plan, estimate_cost
from blueprints.analysis.cost import SHIPPED_PRICE_BOOK, load_price_book_file
from blueprints.validation import validate_document

GROUP = 10  # one network, database, cache, volume, four app servers, a container and a load balancer


def generate(size: int) -> dict[str, Any]:
    """A realistic-shaped blueprint: groups of ten resources wired by network, depends_on and LB targets."""
    resources: list[dict[str, Any]] = []
    for g in range(size // GROUP):
        net, db, cache, vol = f"net-{g}", f"db-{g}", f"cache-{g}", f"vol-{g}"
        resources += [
            {"name": net, "type": "network", "specs": {"cidr": f"10.{g // 256 % 256}.{g % 256}.0/24"}},
            {
                "name": db,
                "type": "database",
                "network": net,
                "specs": {
                    "engine": "postgresql",
                    "engine_version": "16",
                    "cpu": 4,
                    "memory": "16GB",
                    "storage": "200GB",
                    "storage_tier": "ssd",
                    "backups": {"enabled": True, "retention_days": 14},
                    "ha": g % 2 == 0,
                },
            },
            {"name": cache, "type": "cache", "network": net, "specs": {"engine": "redis", "memory": "2GB"}},
            {"name": vol, "type": "volume", "specs": {"storage": "500GB", "encrypted": g % 3 != 0}},
        ]
        apps = []
        for a in range(4):
            name = f"app-{g}-{a}"
            apps.append(name)
            resources.append(
                {
                    "name": name,
                    "type": "compute",
                    "count": 1 + a % 3,
                    "network": net,
                    "depends_on": [db, cache, vol] if a == 0 else [db],
                    "specs": {"cpu": 2, "memory": "4GB", "storage": "40GB", "ports": [22 if a == 3 else 443]},
                }
            )
        resources.append(
            {
                "name": f"worker-{g}",
                "type": "container",
                "network": net,
                "depends_on": [db],
                "specs": {"image": "ghcr.io/example/worker:1.2.3", "cpu": 1, "memory": "1GB", "replicas": 2},
            }
        )
        resources.append(
            {
                "name": f"lb-{g}",
                "type": "loadbalancer",
                "network": net,
                "specs": {"targets": apps, "exposure": "public", "tls": g % 4 != 0, "ports": [443]},
            }
        )
    return {"version": "1.0", "name": f"bench-{size}", "environment": "production", "resources": resources[:size]}


def deployed_state(document: dict[str, Any]) -> dict[str, DeployedResource]:
    """The target, as if deployed one change ago: 5% memory changes, 1% engine swaps, 3% missing, 1% extra."""
    state: dict[str, DeployedResource] = {}
    for i, entry in enumerate(document["resources"]):
        if i % 33 == 0:
            continue  # not deployed yet -> create
        spec = copy.deepcopy(entry)
        if entry["type"] == "compute" and i % 20 == 4:
            spec["specs"]["memory"] = "2GB"  # -> update
        if entry["type"] == "database" and i % 100 < 10:
            spec["specs"]["engine"] = "mysql"  # -> replace
        state[entry["name"]] = DeployedResource(name=entry["name"], type=entry["type"], spec=spec)
    for j in range(len(document["resources"]) // 100):
        name = f"old-{j}"
        state[name] = DeployedResource(name=name, type="compute", spec={"name": name, "type": "compute"})
    return state


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(sizes: list[int]) -> None:
    book = load_price_book_file(SHIPPED_PRICE_BOOK)
    print(f"{'resources':>10} {'validate':>9} {'cost':>8} {'audit':>8} {'plan':>8} {'total':>8}  notes")
    for size in sizes:
        document = generate(size)
        state = deployed_state(document)
        repeat = 3
        t_validate, errors = best_of(repeat, lambda d=document: validate_document(d))
        t_cost, cost = best_of(repeat, lambda d=document: estimate_cost(d, book))
        t_audit, audit = best_of(repeat, lambda d=document: audit_document(d))
        t_plan, plan = best_of(repeat, lambda d=document, s=state: compute_plan(d, s))
        total = t_validate + t_cost + t_audit + t_plan
        notes = (
            f"errors={len(errors)} ${cost['monthly_total']:,.0f}/mo findings={len(audit['findings'])} "
            f"plan: {plan['summary']} (best of {repeat})"
        )
        print(
            f"{size:>10,} {t_validate:>8.3f}s {t_cost:>7.3f}s {t_audit:>7.3f}s {t_plan:>7.3f}s {total:>7.3f}s  {notes}"
        )


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1_000, 10_000, 50_000])
