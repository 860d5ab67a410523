"""Benchmark: HTTP load on loopback against daphne, with its own PostgreSQL and Redis.

Measures (1) requests per second and p50 / p99 latency of read endpoints with wrk, (2) the same for approving fresh
IPRs (each approved exactly once, so a counted Python client rather than wrk's timed loop), and (3) what
authentication + rate limiting + metrics add per request: one view served by daphnes with the project's settings
(as configured: PostgreSQL connection pool; and with DB_POOL=false, a new connection per request) and with
bench/support/bare_settings.py (those layers removed), one connection each, so the difference in mean latency is the
per-request cost (the median over alternating rounds of the per-round difference).

Run: .venv/bin/python bench/load.py [--duration SECONDS] [--approvals N] [--rounds N] [--round-seconds S]
Needs wrk (Debian package `wrk`), redis-server and PostgreSQL's initdb (SQLite is used when PostgreSQL is absent).
Everything it starts (redis-server, a PostgreSQL cluster in a temp directory, two daphnes) it stops on exit.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.stress import live

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def wrk(url: str, token: str, *, connections: int, duration: float) -> dict[str, float]:
    """One wrk run: requests/s, p50 and p99 in ms, and the count of non-2xx answers."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-H",
        f"Authorization: Token {token}",
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s))$", out, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def approve_all(port: int, token: str, ipr_ids: list[int], *, connections: int) -> dict[str, float]:
    """POST approve once on each IPR from `connections` keep-alive clients; latency of each request."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    chunks = [ipr_ids[i::connections] for i in range(connections)]

    def client(ids: list[int]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        for ipr in ids:
            started = time.perf_counter()
            conn.request("POST", f"/api/v1/iprs/{ipr}/approve", body=b'{"comment": "lgtm"}', headers=headers)
            response = conn.getresponse()
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[response.status] = statuses.get(response.status, 0) + 1
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / wall,
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "errors": sum(n for status, n in statuses.items() if status != 200),
    }


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import os

    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    parser.add_argument("--approvals", type=int, default=200, help="fresh IPRs to approve (default 200)")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds of the middleware comparison")
    parser.add_argument("--round-seconds", type=float, default=2.0, help="seconds per server per round (default 2)")
    args = parser.parse_args()
    missing = [] if shutil.which("wrk") else ["wrk"]
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    if missing:
        print(
            f"error: bench/load.py needs {', '.join(missing)} (Debian packages; scripts/test-prereqs.sh installs them)"
        )
        return 1

    workdir = live.workdir("aicdn-load-")
    var_dir = workdir / "var"
    var_dir.mkdir()
    redis = live.PrivateRedis(workdir)
    postgres = live.PrivatePostgres(workdir) if live.postgres_bin() else None
    daphnes: list[live.Daphne] = []
    try:
        redis.start()
        if postgres is not None:
            postgres.init()
            database_url = postgres.url
        else:
            database_url = f"sqlite:///{var_dir / 'load.sqlite3'}"
        # The limiter counts every request in Redis as in production, at a rate the benchmark never reaches.
        env = live.project_env(
            database_url=database_url, redis_url=redis.url, var_dir=var_dir, RATELIMIT_RATES="api=100000000/m"
        )
        print(f"==> migrating and seeding ({'PostgreSQL' if postgres else 'SQLite'}, {args.approvals} IPRs)")
        world = live.migrate_and_seed(env, iprs=args.approvals)
        full = live.Daphne(env, workdir)
        unpooled = live.Daphne({**env, "DB_POOL": "false"}, workdir)
        bare = live.Daphne({**env, "DJANGO_SETTINGS_MODULE": "bench.support.bare_settings"}, workdir)
        daphnes += [full, unpooled, bare]
        for server in daphnes:
            server.start()

        admin, reviewer = world["tokens"]["admin"], world["tokens"]["reviewer"]
        commit = world["commit_ids"][1]
        reads = {
            "GET /api/v1/blueprints": "/api/v1/blueprints",
            "GET /api/v1/blueprints/versions/<commit>": f"/api/v1/blueprints/versions/{commit}",
            "GET /api/v1/templates": "/api/v1/templates",
        }
        results: dict[str, Any] = {"machine": machine(), "database": "PostgreSQL" if postgres else "SQLite"}
        for name, path in reads.items():
            wrk(full.base + path, admin, connections=4, duration=1)  # warm-up: imports, caches, connections
            results[name] = wrk(full.base + path, admin, connections=4, duration=args.duration)
            print(f"{name:45} {json.dumps(results[name])}")

        approvals = approve_all(full.port, reviewer, world["ipr_ids"], connections=2)
        results["POST /api/v1/iprs/<id>/approve"] = {k: round(v, 2) for k, v in approvals.items()}
        print(f"{'POST /api/v1/iprs/<id>/approve':45} {json.dumps(results['POST /api/v1/iprs/<id>/approve'])}")

        path = "/api/v1/templates"
        # The same view from three servers, one connection each: the project as configured (PostgreSQL connection
        # pool), the project without the pool (a new connection per request: CONN_MAX_AGE cannot help under ASGI,
        # where each request runs in a new thread and context), and bare.
        servers = {"full": full, "full, DB_POOL=false": unpooled, "bare": bare}
        for server in servers.values():
            wrk(server.base + path, admin, connections=1, duration=1)
        # Alternate the servers, round after round, and compare within each round: this machine's speed drifts by
        # more than the difference measured (single runs of one configuration moved by 0.6 ms), so the figure is the
        # median of the per-round differences; the best run of each server is printed too.
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                runs[name].append(wrk(server.base + path, admin, connections=1, duration=args.round_seconds))
        best = {name: max(r, key=lambda x: x["rps"]) for name, r in runs.items()}
        for name in ("full", "full, DB_POOL=false"):
            added = [1000 / f["rps"] - 1000 / b["rps"] for f, b in zip(runs[name], runs["bare"], strict=True)]
            ratios = [b["rps"] / f["rps"] for f, b in zip(runs[name], runs["bare"], strict=True)]
            results[f"middleware ({name})"] = {
                "view": f"GET {path}, 1 connection, {args.rounds} alternating rounds of {args.round_seconds:g} s",
                "added_ms_median": round(statistics.median(added), 3),
                "added_ms_rounds": [round(a, 3) for a in added],
                "ratio_median": round(statistics.median(ratios), 2),
                "best_mean_ms": round(1000 / best[name]["rps"], 3),
                "bare_best_mean_ms": round(1000 / best["bare"]["rps"], 3),
                "added_ms_best_vs_best": round(1000 / best[name]["rps"] - 1000 / best["bare"]["rps"], 3),
                "p50_ms_best": best[name]["p50_ms"],
                "bare_p50_ms_best": best["bare"]["p50_ms"],
            }
            print(f"{'middleware (' + name + ')':45} {json.dumps(results[f'middleware ({name})'])}")
        errors = {k: v["errors"] for k, v in results.items() if isinstance(v, dict) and v.get("errors")}
        if errors:
            print(f"error: non-2xx answers during the benchmark: {errors}")
            return 1
        print(json.dumps(results))
        return 0
    finally:
        for server in daphnes:
            server.stop()
        redis.stop()
        if postgres is not None:
            postgres.stop("fast")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
