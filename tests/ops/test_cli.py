"""The ai-cdn CLI against a live daphne server (its own migrated SQLite file), run as a subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SEED_BLUEPRINT
from tests.ops.conftest import ROOT, free_port

PYTHON = sys.executable
CLI = [PYTHON, "-m", "aicdn_project.cli.main"]
PASSWORD = "correct-horse-battery-9"
CHANGED_BLUEPRINT = SEED_BLUEPRINT.replace("cpu: 4", "cpu: 8")
INVALID_BLUEPRINT = SEED_BLUEPRINT.replace("name: web-server-01", "name: Web_Server!")


@pytest.fixture(scope="session")
def live_server_url(tmp_path_factory) -> Iterator[str]:
    """daphne serving aicdn_project.asgi on a free loopback port, against a fresh migrated SQLite database."""
    base = tmp_path_factory.mktemp("live")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="aicdn_project.settings",
        DATABASE_URL=f"sqlite:///{base / 'live.sqlite3'}",
        SECRET_KEY="live-server-test-key-" + uuid.uuid4().hex,
        AICDN_KEY_PREFIX=f"aicdn-live-{uuid.uuid4().hex[:8]}",
        AICDN_VAR_DIR=str(base / "var"),
        RATELIMIT_RATES="api=1000/m,auth=1000/m,monitoring=2/m",
    )
    if "REDIS_URL" not in env:
        # Settings fall back to var/redis.sock: point the live server at the embedded Redis the tests use.
        env["REDIS_URL"] = f"unix://{ROOT / 'var' / 'redis.sock'}"
    manage = [PYTHON, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
    create = (
        "from django.contrib.auth.models import Group, User;"
        f"u = User.objects.create_user('cli-user', password='{PASSWORD}');"
        "u.groups.add(Group.objects.get(name='requesters'))"
    )
    subprocess.run([*manage, "shell", "-c", create], env=env, cwd=ROOT, check=True)
    port = free_port()
    log = (base / "daphne.log").open("wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aicdn_project.asgi:application"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/api/v1/monitoring/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"daphne did not start: {(base / 'daphne.log').read_text()[-2000:]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


class Runner:
    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.home = home
        self.config = home / "config" / "ai-cdn" / "config.json"

    def __call__(self, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("AICDN_")}
        environment.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / "config"), AICDN_URL=self.url)
        environment.update(env)
        return subprocess.run(
            [*CLI, *args], input=stdin, capture_output=True, text=True, env=environment, cwd=self.home, timeout=60
        )

    def login(self) -> None:
        result = self("login", "--username", "cli-user", "--password-stdin", stdin=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr


@pytest.fixture
def cli(live_server_url, tmp_path) -> Runner:
    return Runner(live_server_url, tmp_path)


@pytest.fixture
def logged_in(cli) -> Runner:
    cli.login()
    return cli


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_login_stores_a_private_token_that_later_commands_use(cli):
    result = cli("login", "--username", "cli-user", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert "Logged in" in result.stdout and "cli-user" in result.stdout
    mode = stat.S_IMODE(cli.config.stat().st_mode)
    assert mode == 0o600
    stored = json.loads(cli.config.read_text())
    assert stored["url"] == cli.url and stored["username"] == "cli-user" and len(stored["token"]) == 40
    ok = cli("validate", write(cli.home / "bp.yaml", SEED_BLUEPRINT))
    assert ok.returncode == 0, ok.stderr
    # The stored token is never sent to another server.
    other = cli("--url", "http://127.0.0.1:9", "validate", str(cli.home / "bp.yaml"))
    assert other.returncode == 3 and "not logged in" in other.stderr


def test_wrong_password_is_an_auth_failure(cli):
    result = cli("login", "--username", "cli-user", "--password-stdin", stdin="wrong\n")
    assert result.returncode == 3
    assert "wrong username or password" in result.stderr
    assert not cli.config.exists()


def test_commands_without_a_token_or_with_a_bad_one_exit_3(cli):
    path = write(cli.home / "bp.yaml", SEED_BLUEPRINT)
    missing = cli("validate", path)
    assert missing.returncode == 3 and "ai-cdn login" in missing.stderr
    bad = cli("validate", path, AICDN_TOKEN="0" * 40)
    assert bad.returncode == 3 and "Invalid token" in bad.stderr


def test_validate_reports_validity_with_exit_codes_and_json(logged_in):
    good = logged_in("validate", write(logged_in.home / "good.yaml", SEED_BLUEPRINT))
    assert good.returncode == 0
    assert "valid blueprint 'production-cluster'" in good.stdout
    bad_path = write(logged_in.home / "bad.yaml", INVALID_BLUEPRINT)
    bad = logged_in("validate", bad_path)
    assert bad.returncode == 1
    assert "INVALID" in bad.stdout and "$.resources[0].name" in bad.stdout
    as_json = logged_in("validate", bad_path, "--json")
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["valid"] is False and data["errors"][0]["path"].startswith("$.resources[0]")


def test_push_creates_the_blueprint_then_adds_versions(logged_in):
    path = logged_in.home / "bp.yaml"
    # A name of its own so reruns against the session's server do not meet an earlier test's blueprint.
    name = f"cli-{uuid.uuid4().hex[:8]}"
    write(path, SEED_BLUEPRINT.replace('name: "production-cluster"', f'name: "{name}"'))
    first = json.loads(logged_in("push", str(path), "--json").stdout)
    assert first["blueprint_name"] == name and first["number"] == 1 and len(first["commit_id"]) == 12
    again = logged_in("push", str(path), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["commit_id"] == first["commit_id"]
    write(path, CHANGED_BLUEPRINT.replace('name: "production-cluster"', f'name: "{name}"'))
    second = logged_in("push", str(path), "-m", "more cpu")
    assert second.returncode == 0, second.stderr
    assert f"{name} v2" in second.stdout and first["commit_id"] not in second.stdout


def test_missing_file_and_unknown_objects_exit_4(logged_in):
    assert logged_in("validate", str(logged_in.home / "nope.yaml")).returncode == 4
    result = logged_in("rollback", "--to", "abcdef123456", "--env", "dev")
    assert result.returncode == 4 and "not found" in result.stderr


def test_usage_errors_exit_2(cli):
    assert cli("deploy").returncode == 2
    assert cli("iprs", "frobnicate").returncode == 2
    assert cli("templates", "customize", "x", "--set", "novalue", AICDN_TOKEN="t").returncode == 2


def test_unreachable_server_exits_6_with_a_readable_error(cli):
    path = write(cli.home / "bp.yaml", SEED_BLUEPRINT)
    result = cli("validate", path, AICDN_URL=f"http://127.0.0.1:{free_port()}", AICDN_TOKEN="t")
    assert result.returncode == 6
    assert "cannot reach the AI-CDN server" in result.stderr and "Traceback" not in result.stderr


def test_errors_are_json_with_json(cli):
    result = cli("--json", "validate", write(cli.home / "bp.yaml", SEED_BLUEPRINT), AICDN_TOKEN="0" * 40)
    assert result.returncode == 3
    data = json.loads(result.stdout)
    assert data["exit_code"] == 3 and data["status"] == 401 and data["error"] == "authentication_failed"


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "ai-cdn"
    assert script.exists(), "pip install -e . creates it from [project.scripts]"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "deploy" in result.stdout and "rollback" in result.stdout


def test_rate_limit_and_metrics_through_daphne(live_server_url):
    """The ASGI path of the middleware and of /metrics, on the live server (monitoring group: 2/m there)."""
    client = httpx.Client(base_url=live_server_url, timeout=10)
    statuses = [client.get("/api/v1/monitoring/rate-limit/stats").status_code for _ in range(3)]
    assert statuses[:2] == [401, 401] and statuses[2] == 429
    refused = client.get("/api/v1/monitoring/health/detailed")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["details"]["limit"] == 2
    assert client.get("/api/v1/monitoring/health").status_code == 200  # liveness: its own group
    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    assert 'aicdn_rate_limit_rejections_total{channel="http",group="monitoring"}' in scraped.text


def test_templates_list_show_and_customize_into_a_valid_file(logged_in):
    listed = logged_in("templates", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    ids = [t["id"] for t in json.loads(listed.stdout)]
    assert "simple-web-app" in ids and len(ids) >= 10
    shown = logged_in("templates", "show", "simple-web-app")
    assert shown.returncode == 0 and "PARAMETER" in shown.stdout
    assert logged_in("templates", "show", "no-such-template").returncode == 4
    out = logged_in.home / "from-template.yaml"
    made = logged_in("templates", "customize", "simple-web-app", "-o", str(out))
    assert made.returncode == 0, made.stderr
    assert logged_in("validate", str(out)).returncode == 0  # what customize wrote is a valid blueprint
    bad = logged_in("templates", "customize", "simple-web-app", "--set", "no_such_parameter=3")
    assert bad.returncode == 1 and "unknown parameter" in bad.stderr
