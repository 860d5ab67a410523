"""Real Celery worker processes for crash tests and bench/crash.py: started against a given database and broker,
each in its own session so that exactly its process group can be SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]


def database_url(db: dict[str, Any]) -> str:
    """A DATABASE_URL for a Django DATABASES entry (the test database under pytest-django)."""
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}{port}/{db['NAME']}"


class Worker:
    """`celery -A aicdn_project worker -P solo` (optionally with an embedded beat) that this object alone stops."""

    def __init__(self, name: str, log_path: Path, env: dict[str, str], *, beat: bool = False) -> None:
        self.name = f"{name}-{uuid.uuid4().hex[:6]}@%h"
        self.log_path = log_path
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "aicdn_project",
            "worker",
            "-P",
            "solo",
            "-n",
            self.name,
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        if beat:
            argv += ["-B", "-s", str(log_path.with_suffix(".beat-schedule"))]
        log = open(log_path, "wb")  # noqa: SIM115 - the worker writes to it for its whole life
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(lambda: " ready." in self.log() or self.process.poll() is not None, timeout, "worker start")
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: no shutdown handler, no ack, nothing flushed."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
