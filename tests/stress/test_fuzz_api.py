"""Schemathesis fuzzing of every operation in /api/schema/, in-process over WSGI, as an admin with a token.

Each operation is fuzzed in positive (schema-valid) and negative (schema-breaking) mode, with generated path
parameters and, where the path has parameters, again with the seeded world's real ids so requests reach the
views' logic rather than stopping at 404. Every request runs in a savepoint that is rolled back afterwards, so
each one meets the same seeded world and a failed statement cannot poison the ones after it.

Excluded, because they call the model server (with none reachable they answer 503 by design, a 5xx): POST
/api/v1/blueprints/generate-blueprint, the chat endpoint when it exists, and POST /api/v1/tools/execute requests
naming a model-calling tool (generate_blueprint, update_blueprint); every other tools/execute request is fuzzed.
The generation endpoint's input handling is covered by the hostile-input tests.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import timedelta
from typing import Any

import schemathesis
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.stress.world import World

EXAMPLES = int(os.environ.get("AICDN_FUZZ_EXAMPLES", "10"))  # per operation, mode and path-parameter source
MIN_REQUESTS = 1000
EXCLUDED = {
    ("POST", "/api/v1/blueprints/generate-blueprint"): "calls the model server; 503 without one",
    ("POST", "/api/v1/conversation/chat"): "calls the model server; 503 without one",
}
MODEL_TOOLS = {"generate_blueprint", "update_blueprint"}


def _calls_the_model(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    return case.path == "/api/v1/tools/execute" and body.get("tool_name") in MODEL_TOOLS


def _real_path_parameters(path: str, world: World) -> dict[str, Any]:
    """The seeded objects' ids for a path's parameters (deployments have no seeded row: a real-looking id)."""
    values: dict[str, Any] = {}
    if "{id}" in path:
        if path.startswith("/api/v1/iprs/"):
            values["id"] = world.ipr_ids[0]
        elif path.startswith("/api/v1/blueprints/"):
            values["id"] = world.blueprint_ids[0]
        else:
            values["id"] = 1
    if "{ref}" in path:
        values["ref"] = world.commit_ids[1]
    if "{name}" in path:
        values["name"] = world.environment
    if "{template_id}" in path:
        values["template_id"] = world.template_ids[0]
    return values


def test_every_operation_fuzzed_without_a_server_error(world: World, wsgi_app: Any, capsys: Any) -> None:
    auth = {"Authorization": f"Token {world.tokens['admin']}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app, headers=auth)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 50, "the schema lost most of its operations"

    statuses: Counter[int] = Counter()
    per_operation: Counter[str] = Counter()
    server_errors: list[dict[str, Any]] = []
    skipped = []
    no_negative: list[str] = []
    skipped_cases = [0]  # tools/execute cases naming a model-calling tool

    def send(case: Any) -> None:
        if _calls_the_model(case):
            skipped_cases[0] += 1
            return
        savepoint = transaction.savepoint()
        try:
            response = case.call(headers=auth)
        finally:
            transaction.savepoint_rollback(savepoint)
        statuses[response.status_code] += 1
        per_operation[f"{case.method} {case.path}"] += 1
        if response.status_code >= 500:
            server_errors.append(
                {
                    "request": f"{case.method} {case.formatted_path}",
                    "query": case.query,
                    "body": repr(case.body)[:300],
                    "status": response.status_code,
                    "response": response.text[:500],
                }
            )

    fuzz_settings = settings(
        max_examples=EXAMPLES,
        deadline=timedelta(seconds=10),  # one request answering in more than 10 s counts as a hang
        derandomize=True,  # the same requests on every run: a CI failure reproduces locally
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    for operation in operations:
        key = (operation.method.upper(), operation.path)
        if key in EXCLUDED:
            skipped.append(f"{key[0]} {key[1]}: {EXCLUDED[key]}")
            continue
        sources: list[dict[str, Any] | None] = [None]
        if operation.path_parameters:
            sources.append(_real_path_parameters(operation.path, world))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for fixed in sources:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

                @fuzz_settings
                @given(case=strategy)
                def fuzz(case: Any) -> None:
                    send(case)

                try:
                    fuzz()
                except Unsatisfiable:
                    # Nothing in the operation can break the schema (no parameters, no body): no negative case.
                    assert mode is GenerationMode.NEGATIVE, f"no positive case for {key}"
                    no_negative.append(f"{key[0]} {key[1]}")
        assert not connection.needs_rollback

    total = sum(statuses.values())
    with capsys.disabled():
        print(
            f"\n[fuzz] {total} requests over {len(per_operation)} operations; statuses "
            f"{json.dumps(dict(sorted(statuses.items())))}; excluded: {skipped}; "
            f"{len(no_negative)} operations have no schema-breaking input; "
            f"{skipped_cases[0]} tools/execute cases naming a model-calling tool not sent"
        )
    assert not server_errors, f"{len(server_errors)} server errors:\n" + json.dumps(server_errors[:20], indent=1)
    assert total >= MIN_REQUESTS, f"only {total} requests were generated"
    assert len(per_operation) == len(operations) - len(skipped)
