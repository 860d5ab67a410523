"""Generation quality: run a YAML set of requests with expected properties and score the compiled blueprints.

A case is ``{id, request, expect}`` or, for a follow-up, ``{id, base, request, expect}`` (the base request is
generated first, then `request` is applied to its document; only the follow-up is timed). `expect` may hold:
web, worker (instances), load_balancer, database (engine or none), database_instances, database_ha, cache,
kubernetes_nodes, environment, provider, and sizes ({role: {cpu, memory, storage}}). A case passes when the
document is a valid blueprint and every listed property matches.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aicdn_project.errors import ApplicationError
from blueprints.validation import validate_document
from llm.client import LLMClient
from llm.compiler import document_roles, intent_from_document
from llm.generation import generate_blueprint, update_blueprint

STRUCTURE_KEYS = {
    "web": "web_servers",
    "worker": "worker_servers",
    "load_balancer": "load_balancer",
    "database": "database",
    "database_instances": "database_instances",
    "database_ha": "database_ha",
    "cache": "cache",
    "kubernetes_nodes": "kubernetes_nodes",
}
ALLOWED_KEYS = {*STRUCTURE_KEYS, "environment", "provider", "sizes"}


@dataclass
class CaseResult:
    id: str
    request: str
    passed: bool
    valid: bool
    seconds: float | None
    mismatches: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Report:
    results: list[CaseResult]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def score(self) -> float:
        return self.passed / len(self.results) if self.results else 0.0

    @property
    def valid(self) -> int:
        return sum(r.valid for r in self.results)

    @property
    def seconds(self) -> list[float]:
        return [r.seconds for r in self.results if r.seconds is not None]

    @property
    def median_seconds(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def load_cases(path: str | Path) -> list[dict[str, Any]]:
    cases = yaml.safe_load(Path(path).read_text())
    if not isinstance(cases, list) or not cases:
        raise ValueError(f"{path}: expected a non-empty YAML list of cases")
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or not case.get("request") or not isinstance(case.get("expect"), dict):
            raise ValueError(f"{path}: case {i} needs `request` and an `expect` mapping")
        unknown = set(case["expect"]) - ALLOWED_KEYS
        if unknown:
            raise ValueError(f"{path}: case {case.get('id', i)} expects unknown properties {sorted(unknown)}")
    return cases


def observed(document: dict[str, Any]) -> dict[str, Any]:
    """The properties a case can expect, read from a compiled document."""
    intent = intent_from_document(document).as_dict()
    values: dict[str, Any] = {key: intent[field_name] for key, field_name in STRUCTURE_KEYS.items()}
    values["environment"] = document.get("environment")
    values["provider"] = document.get("provider")
    return values


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, int | float) and not isinstance(expected, bool) and isinstance(actual, int | float):
        return float(expected) == float(actual)
    return bool(expected == actual)


def check(document: dict[str, Any], expect: dict[str, Any]) -> list[str]:
    values = observed(document)
    mismatches = []
    for key, want in expect.items():
        if key == "sizes":
            roles = document_roles(document)
            for role, sizes in want.items():
                specs = (roles.get(role) or {}).get("specs") or {}
                for name, size in sizes.items():
                    if not _same(size, specs.get(name)):
                        mismatches.append(f"{role}.{name}: expected {size}, got {specs.get(name)}")
        elif not _same(want, values.get(key)):
            mismatches.append(f"{key}: expected {want}, got {values.get(key)}")
    return mismatches


def run_case(case: dict[str, Any], *, client: LLMClient | None = None) -> CaseResult:
    request = case["request"]
    label = str(case.get("id", request[:40]))
    try:
        if case.get("base"):
            base = generate_blueprint(description=case["base"], client=client)["document"]
            started = time.monotonic()
            result = update_blueprint(base, request, client=client)
        else:
            started = time.monotonic()
            result = generate_blueprint(description=request, client=client)
        seconds = time.monotonic() - started
    except ApplicationError as exc:
        if exc.status_code == 503:
            raise  # the server is down: no point scoring the rest
        return CaseResult(label, request, False, False, None, error=f"{exc.code}: {exc.message}")
    document = result["document"]
    valid = not validate_document(document)
    mismatches = check(document, case["expect"])
    if not valid:
        mismatches.insert(0, "the document is not a valid blueprint")
    return CaseResult(label, request, valid and not mismatches, valid, seconds, mismatches)


def run(cases: list[dict[str, Any]], *, client: LLMClient | None = None, on_result: Any = None) -> Report:
    results = []
    for case in cases:
        outcome = run_case(case, client=client)
        results.append(outcome)
        if on_result is not None:
            on_result(outcome)
    return Report(results)
