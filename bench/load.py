"""Benchmark: HTTP load on loopback against daphne, with its own PostgreSQL and Redis.

Measures (1) requests per second and p50 / p99 latency of read endpoints with wrk, (2) the same for approving fresh
IPRs (each approved exactly once, so a counted Python client rather than wrk's timed loop), and (3) what
authentication + rate limiting + metrics add per request: one view served by daphnes with the project's settings and
by daphnes with bench/support/bare_settings.py (those layers removed), several of each, requests interleaved one by
one among all of them, so the difference between the two configurations' median latencies is the per-request cost.

The rate limiter takes a fast client's slots from Redis in blocks; the comparison runs it both ways (as configured,
and with RATELIMIT_BLOCK_SECONDS=0: a Redis round trip per request, what a slower client costs).

Run: .venv/bin/python bench/load.py [--duration SECONDS] [--approvals N] [--pairs N] [--instances N]
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


def interleaved(
    ports: dict[str, int], path: str, token: str, *, pairs: int, groups: list[list[str]] | None = None, rounds: int = 10
) -> dict[str, Any]:
    """Latency in ms of `pairs` GET requests per server, sent one to each server of a group in turn (the order
    alternating), after 200 warm-up requests each; "errors" counts non-200 answers per server.

    With `groups`, the groups take turns in `rounds` blocks of pairs/rounds requests per server: only the servers of
    one group alternate at a time, and every group sees every part of the run (the machine's speed drifts)."""
    conns = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for name, port in ports.items()}
    headers = {"Authorization": f"Token {token}"}
    found: dict[str, Any] = {name: [] for name in ports}
    found["errors"] = dict.fromkeys(ports, 0)
    groups = groups or [list(ports)]
    rounds = max(1, min(rounds, pairs))

    def send(names: list[str], count: int, *, measured: bool) -> None:
        for i in range(count):
            for name in names if i % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                conns[name].request("GET", path, headers=headers)
                response = conns[name].getresponse()
                response.read()
                elapsed = (time.perf_counter() - started) * 1000
                if measured:
                    found[name].append(elapsed)
                    found["errors"][name] += response.status != 200

    for names in groups:
        send(names, 200, measured=False)
    for round_ in range(rounds):
        for names in groups:
            send(names, pairs // rounds + (1 if round_ < pairs % rounds else 0), measured=True)
    for conn in conns.values():
        conn.close()
    return found


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
    parser.add_argument("--pairs", type=int, default=2000, help="interleaved requests per server (default 2000)")
    parser.add_argument(
        "--instances", type=int, default=3, help="daphnes per configuration in the middleware comparison (default 3)"
    )
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
        # The limiter counts every request as in production, with a limit the benchmark never reaches.
        env = live.project_env(
            database_url=database_url, redis_url=redis.url, var_dir=var_dir, RATELIMIT_RATES="api=100000000/m"
        )
        print(f"==> migrating and seeding ({'PostgreSQL' if postgres else 'SQLite'}, {args.approvals} IPRs)")
        world = live.migrate_and_seed(env, iprs=args.approvals)
        bare_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.support.bare_settings"}
        # "counted": the rate limiter without its blocks, a Redis round trip per request, as for any client slower
        # than one request per RATELIMIT_BLOCK_SECONDS (the benchmark's client is faster).
        counted_env = {**env, "RATELIMIT_BLOCK_SECONDS": "0"}
        servers = {f"full#{i + 1}": live.Daphne(env, workdir) for i in range(args.instances)}
        servers |= {f"counted#{i + 1}": live.Daphne(counted_env, workdir) for i in range(args.instances)}
        servers |= {f"bare#{i + 1}": live.Daphne(bare_env, workdir) for i in range(args.instances)}
        full = servers["full#1"]
        daphnes += servers.values()
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
        # The same view from 2 x N servers, one keep-alive connection each: N with the project's settings, N bare.
        # Requests are interleaved, one to each server in turn (the order alternating), thousands of times: this
        # machine's speed drifts by more than the difference measured (whole wrk runs of one configuration moved by
        # 0.6 ms), so only requests measured side by side can resolve it. Several servers per configuration: two
        # daphnes with identical settings differed by up to 0.33 ms in their medians (where each process lands), so
        # one of each would measure that as well.
        groups = [[f"{config}#{i + 1}" for config in ("full", "counted", "bare")] for i in range(args.instances)]
        ports = {name: server.port for name, server in servers.items()}
        latencies = interleaved(ports, path, admin, pairs=args.pairs, groups=groups)
        configs = ("full", "counted", "bare")
        pooled = {c: [ms for name in servers if name.startswith(c + "#") for ms in latencies[name]] for c in configs}
        instance_medians = {
            c: [round(statistics.median(latencies[name]), 3) for name in servers if name.startswith(c + "#")]
            for c in configs
        }
        bare_median = statistics.median(pooled["bare"])
        for config, label in (("full", "middleware"), ("counted", "middleware, a Redis round trip per request")):
            median = statistics.median(pooled[config])
            results[label] = {
                "view": f"GET {path}, {args.pairs} requests per server, {args.instances} servers per configuration, "
                "interleaved, one keep-alive connection each",
                "median_ms": round(median, 3),
                "bare_median_ms": round(bare_median, 3),
                "added_ms": round(median - bare_median, 3),
                "ratio": round(median / bare_median, 2),
                "instance_medians_ms": instance_medians[config],
                "bare_instance_medians_ms": instance_medians["bare"],
                "p99_ms": round(sorted(pooled[config])[int(len(pooled[config]) * 0.99)], 3),
                "bare_p99_ms": round(sorted(pooled["bare"])[int(len(pooled["bare"]) * 0.99)], 3),
                "errors": sum(n for name, n in latencies["errors"].items() if name.startswith((config, "bare"))),
            }
            print(f"{label:45} {json.dumps(results[label])}")
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
