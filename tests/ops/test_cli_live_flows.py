"""The installed `ai-cdn` console script against live servers, end to end: plan, deploy, review, wait, status,
rollback and chat.

A daphne subprocess serves the project on a free loopback port against this session's migrated test database; a
Celery worker subprocess (solo pool, a queue of its own through its own AICDN_KEY_PREFIX, shared with that daphne)
runs the deployments on the simulator engine with fast latencies; the chat goes through daphne to the scripted
OpenAI-compatible server of tests/llm, or to a closed port for the model-down case. Users, roles, tokens and
environments are made through the ORM and the services; every CLI call is a subprocess with a token.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from aicdn_project import roles
from aicdn_project.cli.client import Api
from aicdn_project.cli.commands import push_version
from blueprints.models import Blueprint, BlueprintVersion
from conversations.models import Conversation, Message
from engines.models import Deployment, Environment, SimulatedObject
from iprs import services
from iprs.models import IPR, Review
from tests.conftest import make_user
from tests.deployments.workers import Worker, database_url, wait_for
from tests.llm.conftest import ScriptedServer
from tests.ops.conftest import ROOT, free_port

pytestmark = pytest.mark.django_db(transaction=True)

ASGI_APP = "aicdn_project.asgi:application"
CONSOLE_SCRIPT = Path(sys.executable).parent / "ai-cdn"
FINAL_STATES = ("deployed", "failed", "rejected", "closed", "superseded")
# Simulator seconds per operation: quick, but long enough for a 0.2 s poll to see a deployment running.
LATENCIES = {"network": 0.05, "compute": 0.3}
GENERATE_REQUEST = "Create a web app with 2 servers behind a load balancer and a postgres database"
REPLY_PIECES = ["Your ", "blueprint ", "is ", "ready."]


def stack(name: str, *, cpu: int = 1, extra: bool = False) -> str:
    """A network, two web servers on it and a worker after them (plus an `extra` server when asked)."""
    text = f"""\
version: "1.0"
name: {name}
resources:
  - name: net
    type: network
  - name: web
    type: compute
    count: 2
    network: net
    specs: {{cpu: {cpu}, memory: 64MB}}
  - name: worker
    type: compute
    network: net
    depends_on: [web]
    specs: {{cpu: 1, memory: 64MB}}
"""
    if extra:
        text += """\
  - name: extra
    type: compute
    network: net
    specs: {cpu: 1, memory: 64MB}
"""
    return text


# --- live processes -----------------------------------------------------------------------------------------------
def _process_env(prefix: str, base: Path, **extra: str) -> dict[str, str]:
    """What daphne and the worker share: the test database, the broker, one key prefix (so one queue), settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
        and not k.startswith("AICDN_")
    }
    metrics_dir = base / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    env.update(
        DJANGO_SETTINGS_MODULE="aicdn_project.test_settings",
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        SECRET_KEY="cli-live-flows-" + uuid.uuid4().hex,
        AICDN_KEY_PREFIX=prefix,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        WORKER_METRICS_PORT="0",
        AICDN_DEPLOY_RETRY_BACKOFF="0.01",
        AICDN_DEPLOY_RETRY_BACKOFF_MAX="0.05",
        LLM_TIMEOUT="10",
        LLM_MAX_RETRIES="0",
        **extra,
    )
    # Without REDIS_URL (embedded mode) the settings use VAR_DIR/redis.sock for the cache, channels and the broker
    # (redis+socket://, which a unix:// REDIS_URL would not give Celery): the same var dir as this process.
    env["AICDN_VAR_DIR"] = str(settings.VAR_DIR)
    return env


class Daphne:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "aicdn_project.asgi:application",
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/api/v1/monitoring/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"daphne did not start: {log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def live(django_db_setup: None, model: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """daphne + one Celery worker on the test database; stopped before the test database is dropped."""
    base = tmp_path_factory.mktemp("cli-live")
    env = _process_env(f"aicdn-cli-live-{uuid.uuid4().hex[:8]}", base, LLM_BASE_URL=model.base_url)
    worker = Worker("cli-live", base / "worker.log", env)
    server = None
    try:
        worker.wait_ready()
        server = Daphne(env, base / "daphne.log")
        yield server.url
    finally:
        if server is not None:
            server.stop()
        worker.stop()


# --- people, environments, the CLI ----------------------------------------------------------------------------------
@dataclass
class Person:
    username: str
    token: str


class World:
    """Users per role with API tokens, environments made by the admin, and the CLI run as any of them."""

    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.home = home
        self.admin = make_user("cli-admin", roles.ADMINS)
        people = {
            "author": ("ann", [roles.REQUESTERS]),
            "lead": ("lea", [roles.REQUESTERS, roles.REVIEWERS]),  # may review, but never their own IPRs
            "rev1": ("rita", [roles.REVIEWERS]),
            "rev2": ("rob", [roles.REVIEWERS]),
            "ops": ("otto", [roles.OPERATORS]),
            "stranger": ("sam", [roles.REQUESTERS]),  # sees no IPR but their own
        }
        self.people: dict[str, Person] = {}
        for key, (username, groups) in people.items():
            user = make_user(username, *groups)
            self.people[key] = Person(username, Token.objects.create(user=user).key)

    def __getattr__(self, key: str) -> Person:
        try:
            return self.__dict__["people"][key]
        except KeyError:
            raise AttributeError(key) from None

    def env(self, *, faults: dict[str, Any] | None = None, **policy: Any) -> Environment:
        name = f"cli-{uuid.uuid4().hex[:8]}"
        config: dict[str, Any] = {"cluster": name, "latency_scale": 1, "latencies": LATENCIES, "jitter": 0, "seed": 1}
        if faults:
            config["faults"] = faults
        return services.environment_create(
            actor=self.admin,
            name=name,
            engine="simulator",
            config=config,
            policy={
                "required_approvals": 2,
                "cost_increase_threshold": None,
                "blocking_severity": "critical",
                **policy,
            },
        )

    def file(self, name: str, text: str) -> str:
        path = self.home / name
        path.write_text(text)
        return str(path)

    def _environ(self, who: Person | None, url: str | None) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AICDN_")}
        environ.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / "config"), AICDN_URL=url or self.url)
        environ["COLUMNS"] = "200"  # rich tables: no wrapping of long cells in captured output
        if who is not None:
            environ["AICDN_TOKEN"] = who.token
        return environ

    def cli(self, who: Person | None, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(CONSOLE_SCRIPT), *args],
            capture_output=True,
            text=True,
            env=self._environ(who, url),
            cwd=self.home,
            timeout=120,
        )

    def cli_background(self, who: Person, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [str(CONSOLE_SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self._environ(who, None),
            cwd=self.home,
        )

    def api(self, who: Person) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Token {who.token}"}, timeout=30)

    def open_ipr(self, env: Environment, source: str) -> tuple[dict[str, Any], int]:
        """Setup through the API (not under test here): push as the author and open an IPR."""
        cli_api = Api(self.url, self.author.token)
        try:
            version = push_version(cli_api, source, blueprint_id=None, message="", username=self.author.username)
        finally:
            cli_api.close()
        with self.api(self.author) as client:
            answer = client.post(
                "/api/v1/iprs", json={"blueprint_version": version["id"], "environment": env.name, "title": "setup"}
            )
        assert answer.status_code == 201, answer.text
        return version, answer.json()["id"]

    def approve(self, ipr_id: int, *reviewers: Person) -> None:
        for reviewer in reviewers or (self.rev1, self.rev2):
            with self.api(reviewer) as client:
                answer = client.post(f"/api/v1/iprs/{ipr_id}/approve", json={})
            assert answer.status_code == 200, answer.text

    def deploy(self, env: Environment, source: str) -> dict[str, Any]:
        """Setup: the whole flow through the API and the worker; returns the deployed version."""
        version, ipr_id = self.open_ipr(env, source)
        self.approve(ipr_id)
        with self.api(self.ops) as client:
            answer = client.post(f"/api/v1/iprs/{ipr_id}/deploy", json={})
        assert answer.status_code == 200, answer.text
        assert final_state(ipr_id) == "deployed", IPR.objects.get(pk=ipr_id).failure_reason
        return version


def final_state(ipr_id: int, timeout: float = 60) -> str:
    return wait_for(
        lambda: IPR.objects.filter(pk=ipr_id, state__in=FINAL_STATES).values_list("state", flat=True).first(),
        timeout,
        f"IPR {ipr_id} to finish",
        interval=0.1,
    )


def objects_of(env: Environment) -> dict[str, int]:
    found: dict[str, int] = {}
    for name in SimulatedObject.objects.filter(environment=env.name).values_list("resource_name", flat=True):
        found[name] = found.get(name, 0) + 1
    return found


@pytest.fixture
def world(live: str, tmp_path: Path) -> World:
    assert CONSOLE_SCRIPT.exists(), "pip install -e . installs the ai-cdn console script"
    return World(live, tmp_path)


# --- plan -----------------------------------------------------------------------------------------------------------
def test_plan_against_an_empty_then_a_deployed_environment(world):
    env = world.env()
    name = f"shop-{uuid.uuid4().hex[:6]}"
    v1 = world.file("v1.yaml", stack(name))
    first = world.cli(world.author, "plan", v1, "--env", env.name)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert f"-> environment {env.name} (nothing deployed)" in out
    assert "  + net (network)" in out and "  + web (compute)" in out and "  + worker (compute)" in out
    assert "Plan: 3 to add, 0 to change, 0 to destroy" in out
    assert re.search(r"Cost: [\d.]+ \w+/month", out)

    as_json = world.cli(world.author, "--json", "plan", v1, "--env", env.name)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert set(data) == {"version", "plan"}
    commit = data["version"]["commit_id"]
    assert commit in out  # the same content pushed twice is the same version
    plan = data["plan"]
    assert plan["environment"] == env.name and plan["base_version"] is None
    assert plan["version"]["commit_id"] == commit
    assert [(a["name"], a["action"]) for a in plan["plan"]["actions"]] == [
        ("net", "create"),
        ("web", "create"),
        ("worker", "create"),
    ]
    assert {"cost", "findings"} <= set(plan)
    # Planning writes the version, never an IPR or a deployment.
    assert BlueprintVersion.objects.filter(commit_id=commit, blueprint__name=name).count() == 1
    assert not IPR.objects.filter(environment=env).exists()

    world.deploy(env, stack(name))
    v2 = world.file("v2.yaml", stack(name, cpu=2, extra=True))
    second = world.cli(world.author, "plan", v2, "--env", env.name)
    assert second.returncode == 0, second.stderr
    assert f"(deployed commit {commit})" in second.stdout
    assert "  ~ web (compute)" in second.stdout and "specs.cpu: 1 -> 2" in second.stdout
    assert "  + extra (compute)" in second.stdout
    assert "net (network)" not in second.stdout  # unchanged resources are not listed
    assert "Plan: 1 to add, 1 to change, 0 to destroy" in second.stdout

    missing = world.cli(world.author, "plan", v1, "--env", "no-such-env")
    assert missing.returncode == 4 and "environment 'no-such-env' does not exist" in missing.stderr


# --- deploy, review, wait, status ---------------------------------------------------------------------------------
def test_deploy_reviews_and_wait_until_deployed_then_status(world):
    env = world.env()
    name = f"web-{uuid.uuid4().hex[:6]}"
    path = world.file("stack.yaml", stack(name))
    waiter = world.cli_background(
        world.lead, "deploy", path, "--env", env.name, "--wait", "--interval", "0.2", "--timeout", "120"
    )
    try:
        ipr_id = wait_for(
            lambda: IPR.objects.filter(environment=env).values_list("pk", flat=True).first(), 30, "the IPR"
        )
        ipr = IPR.objects.get(pk=ipr_id)
        assert (ipr.state, ipr.origin, ipr.author.username) == ("open", "cli", "lea")

        own = world.cli(world.lead, "iprs", "approve", str(ipr_id))
        assert own.returncode == 3, own.stderr  # 403: permission (docs/cli.md, exit codes)
        assert "the author never reviews their own IPR" in own.stderr
        first = world.cli(world.rev1, "iprs", "approve", str(ipr_id), "-c", "looks right")
        assert first.returncode == 0, first.stderr
        assert f"IPR #{ipr_id}: approve recorded; state open" in first.stdout
        twice = world.cli(world.rev1, "iprs", "approve", str(ipr_id))
        assert twice.returncode == 5 and "already approved" in twice.stderr  # 409: conflict
        second = world.cli(world.rev2, "iprs", "approve", str(ipr_id))
        assert second.returncode == 0 and "state approved" in second.stdout, second.stderr
        reviews = Review.objects.filter(ipr_id=ipr_id).order_by("pk")
        assert [(r.reviewer.username, r.decision, r.comment) for r in reviews] == [
            ("rita", "approve", "looks right"),
            ("rob", "approve", ""),
        ]

        listed = world.cli(world.rev1, "iprs", "list", "--env", env.name)
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if line.split()[:1] == [str(ipr_id)])
        assert row.split()[1:3] == ["approved", env.name] and "lea" in row
        listed_json = json.loads(world.cli(world.rev1, "--json", "iprs", "list", "--state", "approved").stdout)
        assert ipr_id in [i["id"] for i in listed_json]
        assert (
            world.cli(world.rev1, "iprs", "list", "--env", env.name, "--state", "deployed", "--json").stdout == "[]\n"
        )
        shown = world.cli(world.rev1, "iprs", "show", str(ipr_id))
        assert shown.returncode == 0, shown.stderr
        assert f"IPR #{ipr_id}: Deploy {name}" in shown.stdout and "state approved" in shown.stdout
        assert "  + web (compute)" in shown.stdout and "Plan: 3 to add, 0 to change, 0 to destroy" in shown.stdout

        not_operator = world.cli(world.rev1, "iprs", "deploy", str(ipr_id))
        assert not_operator.returncode == 3 and "only operators and admins may deploy" in not_operator.stderr
        started = world.cli(world.ops, "iprs", "deploy", str(ipr_id))
        assert started.returncode == 0, started.stderr
        assert f"IPR #{ipr_id}: deployment queued" in started.stdout
        stdout, stderr = waiter.communicate(timeout=90)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, stdout + stderr
    assert f"IPR #{ipr_id} opened: waiting for approval and deployment" in stdout
    # `queued` lasts only until the worker takes the message: too short to be seen by every poll.
    for state in ("open", "approved", "deploying"):
        assert f"IPR #{ipr_id}: {state}\n" in stdout, stdout
    assert stdout.rstrip().endswith(f"IPR #{ipr_id} deployed")
    # One line per resource and status change: pending from the plan, then what the deployment did.
    for resource in ("net", "web", "worker"):
        assert re.search(rf"^  {resource} +create +pending$", stdout, re.M), stdout
        assert re.search(rf"^  {resource} +create +succeeded$", stdout, re.M), stdout
    assert "Traceback" not in stderr

    ipr = IPR.objects.get(pk=ipr_id)
    env.refresh_from_db()
    assert ipr.state == "deployed" and env.deployed_version_id == ipr.blueprint_version_id
    assert Deployment.objects.get(ipr_id=ipr_id).status == "succeeded"
    assert objects_of(env) == {"net": 1, "web": 2, "worker": 1}

    commit = ipr.blueprint_version.commit_id
    status = world.cli(world.ops, "status", "--env", env.name)
    assert status.returncode == 0, status.stderr
    assert f"{env.name} (development, engine simulator): {name} v1 commit {commit}" in status.stdout
    assert f"deployed by IPR #{ipr_id}, 3 resource(s):" in status.stdout
    for resource, rtype in (("net", "network"), ("web", "compute"), ("worker", "compute")):
        assert re.search(rf"^{resource} +{rtype} +create +succeeded$", status.stdout, re.M), status.stdout
    # A requester who cannot see the deploying IPR still gets the environment's recorded resources.
    theirs = world.cli(world.stranger, "status", "--env", env.name)
    assert theirs.returncode == 0 and "3 recorded resource(s):" in theirs.stdout, theirs.stdout + theirs.stderr
    for resource, rtype in (("net", "network"), ("web", "compute"), ("worker", "compute")):
        assert re.search(rf"^{resource} +{rtype} +ready *$", theirs.stdout, re.M), theirs.stdout
    status_json = json.loads(world.cli(world.ops, "status", "--env", env.name, "--json").stdout)
    assert status_json["deployed_version"]["commit_id"] == commit and status_json["deployed_by_ipr"] == ipr_id
    assert sorted(r["name"] for r in status_json["resources"]) == ["net", "web", "worker"]
    everything = world.cli(world.ops, "status")
    assert re.search(rf"^{env.name} +development +simulator +{commit}", everything.stdout, re.M), everything.stdout
    assert world.cli(world.ops, "status", "--env", "no-such-env").returncode == 4


def test_deploy_opens_an_ipr_that_a_reviewer_rejects(world):
    env = world.env()
    path = world.file("stack.yaml", stack(f"rej-{uuid.uuid4().hex[:6]}"))
    opened = world.cli(world.author, "deploy", path, "--env", env.name, "--title", "please review")
    assert opened.returncode == 0, opened.stderr
    match = re.search(r"IPR #(\d+) opened \(open\): please review", opened.stdout)
    assert match, opened.stdout
    ipr_id = int(match.group(1))
    assert f"review it at {world.url}/admin/iprs/ipr/{ipr_id}/change/" in opened.stdout
    assert IPR.objects.get(pk=ipr_id).state == "open"

    assert world.cli(world.rev1, "iprs", "reject", str(ipr_id)).returncode == 2  # a reject needs --comment
    by_author = world.cli(world.author, "iprs", "reject", str(ipr_id), "--comment", "no")
    assert by_author.returncode == 3 and "only members of 'reviewers'" in by_author.stderr
    rejected = world.cli(world.rev1, "--json", "iprs", "reject", str(ipr_id), "--comment", "too big for dev")
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["state"] == "rejected"
    assert IPR.objects.get(pk=ipr_id).state == "rejected"
    review = Review.objects.get(ipr_id=ipr_id)
    assert (review.reviewer.username, review.decision, review.comment) == ("rita", "reject", "too big for dev")
    again = world.cli(world.rev2, "iprs", "reject", str(ipr_id), "-c", "me too")
    assert again.returncode == 5, again.stderr  # the state forbids it: conflict
    assert world.cli(world.rev2, "iprs", "approve", str(ipr_id)).returncode == 5
    unknown = world.cli(world.rev1, "iprs", "show", "999999")
    assert unknown.returncode == 4 and "not found" in unknown.stderr


def test_a_failing_deployment_exits_1_with_the_reason(world):
    env = world.env(faults={"resources": {"worker": "permanent"}})
    _version, ipr_id = world.open_ipr(env, stack(f"bad-{uuid.uuid4().hex[:6]}"))
    world.approve(ipr_id)
    result = world.cli(world.ops, "iprs", "deploy", str(ipr_id), "--wait", "--interval", "0.2", "--timeout", "90")
    assert result.returncode == 1, result.stdout + result.stderr
    ipr = IPR.objects.get(pk=ipr_id)
    assert ipr.state == "failed" and "simulated permanent failure" in ipr.failure_reason
    assert f"IPR #{ipr_id} failed: {ipr.failure_reason}" in result.stdout
    assert re.search(r"^  worker +create +failed: simulated permanent failure: create worker", result.stdout, re.M)
    assert re.search(r"^  web +create +succeeded$", result.stdout, re.M)  # what ran before the fault
    env.refresh_from_db()
    assert env.deployed_version_id is None
    shown = world.cli(world.ops, "--json", "iprs", "show", str(ipr_id))
    data = json.loads(shown.stdout)
    assert data["state"] == "failed" and data["deployment"]["status"] == "failed"
    assert {r["name"]: r["status"] for r in data["deployment"]["resources"]}["worker"] == "failed"


# --- rollback -------------------------------------------------------------------------------------------------------
def test_rollback_plans_back_and_an_emergency_one_deploys_with_one_approval(world):
    env = world.env(emergency_rollback_allowed=True)
    name = f"rb-{uuid.uuid4().hex[:6]}"
    v1 = world.deploy(env, stack(name))
    v2 = world.deploy(env, stack(name, cpu=2, extra=True))
    assert objects_of(env) == {"net": 1, "web": 2, "worker": 1, "extra": 1}

    opened = world.cli(world.author, "rollback", "--to", v1["commit_id"], "--env", env.name)
    assert opened.returncode == 0, opened.stderr
    match = re.search(rf"IPR #(\d+) opened \(open\): Roll {env.name} back to {name} {v1['commit_id']}", opened.stdout)
    assert match, opened.stdout
    ipr = IPR.objects.get(pk=int(match.group(1)))
    assert (ipr.kind, ipr.emergency, ipr.origin) == ("rollback", False, "cli")
    assert (ipr.blueprint_version_id, ipr.base_version_id) == (v1["id"], v2["id"])
    actions = {a["name"]: a["action"] for a in ipr.plan["actions"]}
    assert actions == {"net": "noop", "web": "update", "worker": "noop", "extra": "delete"}
    web = next(a for a in ipr.plan["actions"] if a["name"] == "web")
    assert web["changes"] == [{"field": "specs.cpu", "old": 2, "new": 1}]
    shown = world.cli(world.author, "iprs", "show", str(ipr.pk))
    assert "  ~ web (compute)" in shown.stdout and "  - extra (compute)" in shown.stdout
    assert "specs.cpu: 2 -> 1" in shown.stdout and "Plan: 0 to add, 1 to change, 1 to destroy" in shown.stdout

    not_operator = world.cli(world.author, "rollback", "--to", v1["commit_id"], "--env", env.name, "--emergency")
    assert not_operator.returncode == 3 and "only operators and admins" in not_operator.stderr
    emergency = world.cli(world.ops, "--json", "rollback", "--to", v1["commit_id"], "--env", env.name, "--emergency")
    assert emergency.returncode == 0, emergency.stderr
    data = json.loads(emergency.stdout)
    assert data["kind"] == "rollback" and data["emergency"] is True and data["title"].endswith("(emergency)")
    assert {a["name"]: a["action"] for a in data["plan"]["actions"]} == actions
    approved = world.cli(world.rev1, "iprs", "approve", str(data["id"]))
    assert "state approved" in approved.stdout, approved.stderr  # one approval is enough for an emergency
    deployed = world.cli(world.ops, "iprs", "deploy", str(data["id"]), "--wait", "--interval", "0.2")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert re.search(r"^  extra +delete +succeeded$", deployed.stdout, re.M), deployed.stdout
    env.refresh_from_db()
    assert env.deployed_version_id == v1["id"]
    assert objects_of(env) == {"net": 1, "web": 2, "worker": 1}
    status = world.cli(world.ops, "status", "--env", env.name)
    assert f"commit {v1['commit_id']}" in status.stdout and "3 resource(s)" in status.stdout

    # A version that never ran there is no rollback target; an unknown commit is not found.
    v3 = json.loads(world.cli(world.author, "push", world.file("v3.yaml", stack(name, cpu=3)), "--json").stdout)
    never = world.cli(world.author, "rollback", "--to", v3["commit_id"], "--env", env.name)
    assert never.returncode == 1 and "was never deployed" in never.stderr
    assert world.cli(world.author, "rollback", "--to", "0123456789ab", "--env", env.name).returncode == 4


# --- chat -----------------------------------------------------------------------------------------------------------
def _script_generate_turn(model: ScriptedServer) -> None:
    model.reply_intent(web_servers=2, load_balancer=True, database="postgresql", database_instances=1)
    model.reply_stream(REPLY_PIECES)


def test_chat_streams_the_reply_tokens(world, model):
    model.requests.clear()
    _script_generate_turn(model)
    result = world.cli(world.author, "chat", GENERATE_REQUEST)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Your blueprint is ready.\n"
    assert "[tool_call: generate_blueprint]" in result.stderr and "[tool_result: generate_blueprint]" in result.stderr
    assert len(model.requests) == 2 and model.requests[1]["stream"] is True
    conversation = Conversation.objects.get(owner__username="ann")
    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert (reply.status, reply.content) == ("complete", "Your blueprint is ready.")
    assert Blueprint.objects.filter(owner__username="ann").count() == 1

    _script_generate_turn(model)
    as_json = world.cli(world.author, "--json", "chat", GENERATE_REQUEST, "--conversation", str(conversation.pk))
    assert as_json.returncode == 0, as_json.stderr
    events = json.loads(as_json.stdout)
    assert "".join(e["data"]["text"] for e in events if e["event"] == "token") == "Your blueprint is ready."
    assert events[-1]["event"] == "done" and events[-1]["data"]["conversation_id"] == str(conversation.pk)
    assert Message.objects.filter(conversation=conversation, role="assistant", status="complete").count() == 2


def test_chat_with_the_model_down_exits_6_with_a_readable_error(world, tmp_path):
    """A second daphne whose LLM_BASE_URL is a closed port (nothing else differs)."""
    env = _process_env(
        f"aicdn-cli-down-{uuid.uuid4().hex[:8]}", tmp_path, LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1"
    )
    server = Daphne(env, tmp_path / "daphne-down.log")
    try:
        result = world.cli(world.author, "chat", "what can you do", url=server.url)
        as_json = world.cli(world.author, "--json", "chat", "hello again", url=server.url)
    finally:
        server.stop()
    assert result.returncode == 6, result.stdout + result.stderr
    assert result.stderr.startswith("error: chat failed:") and "(llm_unavailable)" in result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(as_json.stdout)
    assert as_json.returncode == 6 and data["exit_code"] == 6 and data["error"] == "llm_unavailable"
    failed = Message.objects.filter(conversation__owner__username="ann", role="assistant")
    assert sorted(failed.values_list("status", flat=True)) == ["failed", "failed"]
