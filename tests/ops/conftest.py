"""Fixtures for the operations tests: isolated rate-limit counters, a Celery worker, and a live daphne server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rest_framework.authtoken.models import Token

from aicdn_project import ratelimit

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def limits(settings) -> Iterator[object]:
    """Rate limits on, with counters and statistics of their own (a fresh key space in the shared Redis)."""
    run = uuid.uuid4().hex[:10]
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_CACHE_PREFIX = f"rl-test-{run}:"
    settings.KEY_PREFIX = f"{settings.KEY_PREFIX}-{run}"
    yield settings
    ratelimit.reset_stats()


@pytest.fixture
def token_for(db):
    def make(user) -> str:
        return Token.objects.create(user=user).key

    return make


@pytest.fixture(scope="session")
def celery_worker() -> Iterator[dict]:
    """A real Celery worker (solo pool) on the test broker, serving its metrics exporter on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "aicdn_project.test_settings",
        "WORKER_METRICS_PORT": str(port),
        "AICDN_KEY_PREFIX": os.environ["AICDN_KEY_PREFIX"],
    }
    name = f"ops-test-{uuid.uuid4().hex[:8]}@%h"
    log = open(ROOT / "var" / f"test-worker-{os.getpid()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "aicdn_project",
            "worker",
            "-P",
            "solo",
            "-n",
            name,
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Celery worker did not start; see {log.name}")
        time.sleep(0.3)
    yield {"metrics_url": url, "pid": proc.pid}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
