"""Hostile inputs against every endpoint that takes input: each gets a 4xx with a clear JSON message and writes no row.

Rows of every model are counted before and after each request. The generation endpoint's model server is pointed
at a closed port, so an input that wrongly got through to the model would answer 503 and fail the 4xx assertion.
POST /blueprints/validate is the one endpoint whose contract is "200 with valid: false and every error" for a
document that breaks the rules; transport-level garbage (bad UTF-8, 10 MiB, unparsable nesting) still gets a 4xx.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from tests.stress.world import DB, WEB, World, document, row_counts

MiB = 1024 * 1024

# --- Hostile blueprint text and documents ---------------------------------------------------------------------------
BILLION_LAUGHS = "\n".join(
    [
        'version: "1.0"',
        "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
        *(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
            for i in range(9)
        ),
        "name: bomb",
        "resources: [*j, *j, *j, *j, *j, *j, *j, *j]",
    ]
)
ALIAS_FLOOD = 'version: "1.0"\nname: flood\nx: &x [1]\nresources: [' + ", ".join(["*x"] * 5000) + "]\n"
DEEP_YAML = 'version: "1.0"\nname: deep\nresources: ' + "[" * 5000 + "]" * 5000 + "\n"
DEEP_JSON_TEXT = '{"version": "1.0", "name": "deep", "resources": ' + "[" * 100_000 + "]" * 100_000 + "}"
TEN_MIB_YAML = 'version: "1.0"\nname: big\ndescription: "' + "x" * (10 * MiB) + '"\nresources: []\n'
DUPLICATE_KEYS = 'version: "1.0"\nname: dup\nname: dup2\nresources: []\n'
PYTHON_TAG = 'version: "1.0"\nname: !!python/object/apply:os.system ["touch /tmp/aicdn-pwned"]\nresources: []\n'

SHELL = "web; rm -rf / #"
PATH = "../../../etc/passwd"
SQL = "x' OR '1'='1'; DROP TABLE blueprints_blueprint; --"
CONTROL = "web\x1b[31m\x07\r\nInjected: yes"
NUL = "web\x00evil"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


# Deeper than json.dumps can write (Python's recursion limit): a marker that as_json replaces with the nested text.
DEEP = "__deep_5000__"
DEEP_TEXT = '{"n": ' * 5000 + '"leaf"' + "}" * 5000
# Deep, yet shallow enough for the JSON decoder: it reaches the serializers, services and the database adapter.
DEEPISH = "__deep_400__"
DEEPISH_TEXT = '{"n": ' * 400 + '"leaf"' + "}" * 400


def with_resource(**changes: Any) -> dict[str, Any]:
    resource = json.loads(json.dumps(WEB))
    specs = changes.pop("specs", {})
    resource.update(changes)
    resource["specs"].update(specs)
    return document(resource)


BAD_DOCUMENTS: dict[str, dict[str, Any]] = {
    "name-shell": document(WEB, name=SHELL),
    "name-path": document(WEB, name=PATH),
    "name-sql": document(WEB, name=SQL),
    "name-control": document(WEB, name=CONTROL),
    "name-nul": document(WEB, name=NUL),
    "resource-shell": with_resource(name=SHELL),
    "resource-path": with_resource(name=PATH),
    "resource-sql": with_resource(name=SQL),
    "resource-control": with_resource(name=CONTROL),
    "resource-nul": with_resource(name=NUL),
    "count-billion": with_resource(count=1_000_000_000),
    "count-negative": with_resource(count=-3),
    "cpu-negative": with_resource(specs={"cpu": -4}),
    "memory-negative": with_resource(specs={"memory": "-8GB"}),
    "storage-negative": with_resource(specs={"storage": "-100GB"}),
    "storage-absurd": with_resource(specs={"storage": "999999999999999999999TB"}),
    "db-storage-negative": document({**DB, "specs": {**DB["specs"], "storage": "-1GB"}}),
    "deep-specs": with_resource(specs={"tags": nested(200)}),
}
BAD_SOURCES: dict[str, str] = {
    "billion-laughs": BILLION_LAUGHS,
    "alias-flood": ALIAS_FLOOD,
    "deep-yaml": DEEP_YAML,
    "duplicate-keys": DUPLICATE_KEYS,
    "python-tag": PYTHON_TAG,
}


# --- Requests -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hostile:
    """One request: method, path (may use {blueprint}, {template}, {environment}), body bytes, content type."""

    method: str
    path: str
    body: bytes
    content_type: str = "application/json"


def as_json(data: Any) -> bytes:
    text = json.dumps(data).replace(json.dumps(DEEP), DEEP_TEXT).replace(json.dumps(DEEPISH), DEEPISH_TEXT)
    return text.encode()


BLUEPRINT_WRITES = {
    "create": "/api/v1/blueprints",
    "version": "/api/v1/blueprints/{blueprint}/versions",
    "validate": "/api/v1/blueprints/validate",
}


def _transport_garbage(method: str, path: str, *, yaml: bool) -> dict[str, Hostile]:
    """Body-level attacks every input endpoint must refuse, whatever its fields."""
    cases = {
        "10mib-json": Hostile(method, path, as_json({"source": "x" * (10 * MiB), "title": "x" * (10 * MiB)})),
        "invalid-utf8-json": Hostile(method, path, b'{"name": "\xff\xfe\xfa", "title": "\xc3\x28"}'),
        "deep-json": Hostile(method, path, DEEP_JSON_TEXT.encode()),
        "raw-control-chars-json": Hostile(method, path, b'{"name": "a\x00\x01\x1b", "title": "\x07"}'),
        "not-json": Hostile(method, path, b"{'name': undefined,,}"),
        "json-array": Hostile(method, path, b"[1, 2, 3]"),
    }
    if yaml:
        cases["10mib-yaml"] = Hostile(method, path, TEN_MIB_YAML.encode(), "application/yaml")
        cases["invalid-utf8-yaml"] = Hostile(method, path, b'version: "1.0"\nname: \xff\xfe\n', "application/yaml")
    return cases


def corpus() -> dict[str, Hostile]:
    cases: dict[str, Hostile] = {}
    for short, path in BLUEPRINT_WRITES.items():
        for name, hostile in _transport_garbage("POST", path, yaml=True).items():
            cases[f"{short}:{name}"] = hostile
        for name, source in BAD_SOURCES.items():
            cases[f"{short}:{name}"] = Hostile("POST", path, source.encode(), "application/yaml")
            cases[f"{short}:{name}-in-json"] = Hostile("POST", path, as_json({"source": source}))
        for name, doc in BAD_DOCUMENTS.items():
            cases[f"{short}:{name}"] = Hostile("POST", path, as_json({"document": doc}))
        cases[f"{short}:document-deep-400"] = Hostile("POST", path, as_json({"document": DEEPISH}))
        cases[f"{short}:specs-deep-400"] = Hostile(
            "POST", path, as_json({"document": with_resource(specs={"x": DEEPISH})})
        )
        cases[f"{short}:message-nul"] = Hostile("POST", path, as_json({"document": document(WEB), "message": NUL}))
        cases[f"{short}:message-huge"] = Hostile(
            "POST", path, as_json({"document": document(WEB), "message": "m" * 100_000})
        )

    customize = "/api/v1/templates/{template}/customize"
    for name, hostile in _transport_garbage("POST", customize, yaml=False).items():
        cases[f"customize:{name}"] = hostile
    for name, params in {
        "count-billion": {"web_servers": 1_000_000_000, "instances": 1_000_000_000},
        "count-negative": {"web_servers": -5, "instances": -5},
        "size-negative": {"web_memory": "-8GB", "storage": "-100GB", "memory": "-1GB"},
        "deep-parameters": DEEP,
        "deep-parameters-400": {"web_servers": DEEPISH},
        "unknown-parameter": {"$(reboot)": 1},
        "parameters-not-object": [SHELL],
    }.items():
        cases[f"customize:{name}"] = Hostile("POST", customize, as_json({"parameters": params, "save": True}))
    for name, value in {"shell": SHELL, "path": PATH, "sql": SQL, "control": CONTROL, "nul": NUL}.items():
        cases[f"customize:save-name-{name}"] = Hostile(
            "POST", customize, as_json({"parameters": {}, "save": True, "name": value})
        )

    iprs = "/api/v1/iprs"
    for name, hostile in _transport_garbage("POST", iprs, yaml=False).items():
        cases[f"ipr-open:{name}"] = hostile
    good_ipr = {"blueprint_version": "{commit}", "environment": "{environment}", "title": "t"}
    for name, changes in {
        "title-nul": {"title": NUL},
        "title-huge": {"title": "t" * 100_000},
        "description-10mib": {"description": "d" * (10 * MiB)},
        "version-sql": {"blueprint_version": SQL[:64]},
        "version-path": {"blueprint_version": PATH},
        "environment-shell": {"environment": SHELL},
        "environment-path": {"environment": PATH},
        "environment-nul": {"environment": NUL},
        "provenance-deep": {"ai_provenance": DEEP},
        "provenance-deep-400": {"ai_provenance": DEEPISH},
        "provenance-nul": {"ai_provenance": {"model": NUL}},
        "provenance-huge": {"ai_provenance": {"blob": "p" * (3 * MiB)}},
        "kind-unknown": {"kind": SHELL},
        "conversation-nul": {"conversation_id": NUL},
    }.items():
        cases[f"ipr-open:{name}"] = Hostile("POST", iprs, as_json({**good_ipr, **changes}))

    envs = "/api/v1/environments"
    for name, hostile in _transport_garbage("POST", envs, yaml=False).items():
        cases[f"env-create:{name}"] = hostile
    for name, body in {
        "name-shell": {"name": SHELL},
        "name-path": {"name": PATH},
        "name-sql": {"name": SQL[:63]},
        "name-control": {"name": CONTROL},
        "name-nul": {"name": NUL},
        "name-uppercase-unicode": {"name": "\uff33\uff34\uff21\uff27\uff29\uff2e\uff27"},
        "engine-shell": {"name": "ok-env", "engine": SHELL[:32]},
        "kind-unknown": {"name": "ok-env", "kind": "prod; rm"},
        "config-deep": {"name": "ok-env", "config": DEEP},
        "config-deep-400": {"name": "ok-env", "config": DEEPISH},
        "config-nul": {"name": "ok-env", "config": {"latency": NUL}},
        "config-huge": {"name": "ok-env", "config": {"blob": "c" * (3 * MiB)}},
        "config-not-object": {"name": "ok-env", "config": [SHELL]},
        "secret-refs-shell": {"name": "ok-env", "secret_refs": {"token": "$(cat /etc/shadow)"}},
        "description-nul": {"name": "ok-env", "description": NUL},
        "policy-negative": {"name": "ok-env", "policy": {"required_approvals": -1}},
        "policy-absurd": {"name": "ok-env", "policy": {"required_approvals": 1_000_000_000}},
    }.items():
        cases[f"env-create:{name}"] = Hostile("POST", envs, as_json(body))
    env_detail = "/api/v1/environments/{environment}"
    for name, hostile in _transport_garbage("PATCH", env_detail, yaml=False).items():
        cases[f"env-update:{name}"] = hostile
    for name, body in {
        "config-deep": {"config": DEEP},
        "config-deep-400": {"config": DEEPISH},
        "config-nul": {"config": {"latency": NUL}},
        "engine-shell": {"engine": SHELL[:32]},
        "policy-negative": {"policy": {"required_approvals": -1}},
    }.items():
        cases[f"env-update:{name}"] = Hostile("PATCH", env_detail, as_json(body))

    tools = "/api/v1/tools/execute"
    for name, hostile in _transport_garbage("POST", tools, yaml=False).items():
        cases[f"tools:{name}"] = hostile
    for name, body in {
        "unknown-tool-shell": {"tool_name": SHELL, "parameters": {}},
        "tool-name-path": {"tool_name": PATH, "parameters": {}},
        "parameters-not-object": {"tool_name": "validate_blueprint", "parameters": [SHELL]},
        "parameters-deep": {"tool_name": "validate_blueprint", "parameters": DEEP},
        "parameters-deep-400": {"tool_name": "validate_blueprint", "parameters": DEEPISH},
        "generate-without-description": {"tool_name": "generate_blueprint", "parameters": {}},
        "generate-description-nul": {"tool_name": "generate_blueprint", "parameters": {"description": NUL}},
        "customize-count-billion": {
            "tool_name": "customize_template",
            "parameters": {"template_id": "simple-web-app", "parameters": {"web_servers": 1_000_000_000}},
        },
    }.items():
        cases[f"tools:{name}"] = Hostile("POST", tools, as_json(body))

    generate = "/api/v1/blueprints/generate-blueprint"
    for name, hostile in _transport_garbage("POST", generate, yaml=False).items():
        cases[f"generate:{name}"] = hostile
    for name, body in {
        "description-empty": {"description": "   "},
        "description-too-long": {"description": "three web servers " * 1000},
        "description-nul": {"description": NUL},
        "current-not-document": {"description": "add a cache", "current": [SHELL]},
        "current-deep": {"description": "add a cache", "current": DEEP},
        "current-deep-400": {"description": "add a cache", "current": {"resources": [DEEPISH]}},
        "blueprint-negative": {"description": "add a cache", "save": True, "blueprint_id": -1},
    }.items():
        cases[f"generate:{name}"] = Hostile("POST", generate, as_json(body))
    return cases


CORPUS = corpus()


def _fill(text: str, world: World) -> str:
    return (
        text.replace("{blueprint}", str(world.blueprint_ids[0]))
        .replace("{template}", "simple-web-app")
        .replace("{environment}", world.environment)
        .replace("{commit}", world.commit_ids[1])
    )


@pytest.fixture
def admin_client(world: World) -> Client:
    # raise_request_exception: a crash in a view fails the test with its traceback instead of a bare 500.
    return Client(HTTP_AUTHORIZATION=f"Token {world.tokens['admin']}", raise_request_exception=True)


@pytest.mark.parametrize("case_id", sorted(CORPUS))
def test_hostile_input_is_refused_cleanly_and_writes_nothing(case_id: str, world: World, admin_client: Client) -> None:
    hostile = CORPUS[case_id]
    path = _fill(hostile.path, world)
    body = _fill(hostile.body.decode("utf-8", "surrogateescape"), world).encode("utf-8", "surrogateescape")
    before = row_counts()
    send: Callable[..., Any] = getattr(admin_client, hostile.method.lower())
    response = send(path, data=body, content_type=hostile.content_type)
    after = row_counts()

    assert after == before, {label: (before[label], after[label]) for label in before if before[label] != after[label]}
    payload = response.json()
    if case_id.startswith("validate:") and response.status_code == 200:
        # The validation endpoint reports rule violations as data: it must say invalid, with the reason.
        assert payload["valid"] is False, payload
        assert payload["errors"] and all(e.get("message") for e in payload["errors"]), payload
        return
    assert 400 <= response.status_code < 500, (response.status_code, payload)
    assert isinstance(payload.get("error"), str) and payload["error"], payload
    assert isinstance(payload.get("message"), str) and len(payload["message"]) >= 5, payload
    assert "Traceback" not in response.content.decode("utf-8", "replace")


def test_the_corpus_covers_every_input_endpoint_and_attack() -> None:
    """A guard against the corpus silently shrinking: each endpoint gets each family of attack."""
    by_endpoint: dict[str, set[str]] = {}
    for case_id in CORPUS:
        endpoint, attack = case_id.split(":", 1)
        by_endpoint.setdefault(endpoint, set()).add(attack)
    assert set(by_endpoint) == {
        "create",
        "version",
        "validate",
        "customize",
        "ipr-open",
        "env-create",
        "env-update",
        "generate",
        "tools",
    }
    for endpoint, attacks in by_endpoint.items():
        assert {"10mib-json", "invalid-utf8-json", "deep-json", "raw-control-chars-json"} <= attacks, endpoint
    for endpoint in ("create", "version", "validate"):
        assert {"billion-laughs", "count-billion", "memory-negative", "name-shell", "name-sql"} <= by_endpoint[endpoint]
