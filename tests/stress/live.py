"""Private services for the outage tests and the load benchmark: a PostgreSQL cluster (initdb + pg_ctl in a temp
directory), a redis-server and daphne, each on a free loopback port, each started and stopped here and nowhere else.

Nothing here touches the machine's shared PostgreSQL (5432) or Redis (6379): every process is started by this module,
remembered by its pid or data directory, and stopped through that alone.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL server binaries, or None when the machine has none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def missing_tools() -> list[str]:
    missing = [] if postgres_bin() else ["PostgreSQL server (initdb, pg_ctl)"]
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    return missing


class PrivateRedis:
    """redis-server on a free loopback port, no persistence; stop() kills it like a crash would."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - the child keeps it; closed with the process
        self.proc = subprocess.Popen([*cmd, "--dir", str(self.workdir)], stdout=log, stderr=log)
        _wait(lambda: _port_open(self.port), 10, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: initdb into a temp directory owned by `postgres` when we are root."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.bin = postgres_bin()
        self.datadir = workdir / "pgdata"
        self.logfile = workdir / "postgres.log"
        self.workdir = workdir

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/aicdn"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> None:
        assert self.bin is not None
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "aicdn")

    def start(self) -> None:
        assert self.bin is not None
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir} -c fsync=on"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-o", options, "-w", "start"
        )
        _wait(lambda: _port_open(self.port), 30, "PostgreSQL")

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is a crash as far as clients see it (no clean shutdown; WAL replay on the next start)."""
        assert self.bin is not None
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)


def project_env(*, database_url: str, redis_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a project process (daphne, manage.py) pointed at the private services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "DJANGO_", "AICDN_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="aicdn_project.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY="stress-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        AICDN_VAR_DIR=str(var_dir),
        AICDN_KEY_PREFIX=f"aicdn-stress-{os.getpid()}",
        PROMETHEUS_MULTIPROC_DIR=str(var_dir / "prometheus"),
        LLM_BASE_URL="http://127.0.0.1:9/v1",  # the discard port: refused at once, never a real model
        LOG_LEVEL="WARNING",
        # Plain HTTP on loopback: secure-only cookies would never come back from the test client.
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


SEED = """
import json, django
django.setup()
from tests.stress.world import seed_world
w = seed_world(iprs={iprs})
print(json.dumps({{"tokens": w.tokens, "environment": w.environment, "blueprint_ids": w.blueprint_ids,
    "version_ids": w.version_ids, "commit_ids": w.commit_ids, "ipr_ids": w.ipr_ids}}))
"""


def migrate_and_seed(env: dict[str, str], *, iprs: int = 3) -> dict[str, Any]:
    manage(env, "migrate", "--noinput", "-v", "0")
    result = subprocess.run(
        [PYTHON, "-c", SEED.format(iprs=iprs)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"seeding failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


class Daphne:
    """daphne serving the project on a free loopback port; stop() sends SIGTERM, then SIGKILL after 10 s."""

    def __init__(self, env: dict[str, str], workdir: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = env
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.workdir / f"daphne-{self.port}.log", "ab")  # noqa: SIM115 - kept by the child
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "aicdn_project.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.proc.returncode}; see {log.name}")
            try:
                return httpx.get(self.base + "/api/v1/monitoring/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(up, 60, "daphne")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of daphne's log, for assertion messages (tracebacks of a 500 are there)."""
        path = self.workdir / f"daphne-{self.port}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def workdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path
