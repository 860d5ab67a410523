"""The compiled fast path in blueprints.validation never accepts what the jsonschema walk rejects."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from blueprints.analysis import list_templates, render_template
from blueprints.validation import _fast_valid, _validator, validate_document
from tests.analysis.conftest import web_stack


def mutate(path: list[Any], value: Any, delete: bool = False) -> dict[str, Any]:
    document = web_stack()
    node: Any = document
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


INVALID = [
    mutate(["version"], "2.0"),
    mutate(["name"], "Not A Label"),
    mutate(["name"], "x" * 64),
    mutate(["resources"], []),
    mutate(["resources"], "none"),
    mutate(["environment"], "prod"),
    mutate(["provider"], "aws"),
    mutate(["extra"], 1),
    mutate(["tags"], {"bad key!": "x"}),
    mutate(["tags"], {"k": "v" * 300}),
    mutate(["tags"], {"k": None}),
    mutate(["resources", 0, "type"], "vm"),
    mutate(["resources", 0, "name"], "-bad"),
    mutate(["resources", 0, "name"], None, delete=True),
    mutate(["resources", 0, "surprise"], True),
    mutate(["resources", 0, "count"], "2"),
    mutate(["resources", 0, "count"], True),
    mutate(["resources", 2, "count"], 1.5),
    mutate(["resources", 2, "depends_on"], ["db", "db"]),
    mutate(["resources", 2, "depends_on"], "db"),
    mutate(["resources", 1, "specs", "memory"], "8 gigabytes"),
    mutate(["resources", 1, "specs", "memory"], 8),
    mutate(["resources", 1, "specs", "cpu"], "2"),
    mutate(["resources", 1, "specs", "storage_tier"], "tape"),
    mutate(["resources", 1, "specs", "backups"], {"enabled": True, "retention_days": 0}),
    mutate(["resources", 1, "specs", "backups"], {"keep": 3}),
    mutate(["resources", 1, "specs", "backups"], "yes"),
    mutate(["resources", 1, "specs", "unknown"], 1),
    mutate(["resources", 2, "specs", "ports"], [0]),
    mutate(["resources", 2, "specs", "ports"], [70000]),
    mutate(["resources", 2, "specs", "ports"], [{"port": 80, "protocol": "icmp"}]),
    mutate(["resources", 2, "specs", "ports"], [{"target_port": 80}]),
    mutate(["resources", 2, "specs", "ports"], [True]),
    mutate(["resources", 2, "specs", "image"], " nginx"),
    mutate(["resources", 2, "specs", "env"], {"1BAD": "x"}),
    mutate(["resources", 2, "specs", "env"], {"OK": ["list"]}),
    mutate(["resources", 2, "specs", "gpu"], 17),
    mutate(["resources", 2, "specs", "schedule"], {"shutdown": "25:00"}),
    mutate(["resources", 2, "specs", "run_as_user"], 1.5),
    mutate(["resources", 3, "specs", "targets"], ["Web"]),
    mutate(["resources", 3, "specs", "health_check"], {"interval_seconds": 0}),
    mutate(["resources", 3, "specs", "exposure"], "internet"),
]


@pytest.mark.parametrize("document", INVALID, ids=range(len(INVALID)))
def test_fast_path_rejects_every_schema_error(document: dict[str, Any]) -> None:
    assert list(_validator().iter_errors(document)), "corpus entry must break the schema"
    assert _fast_valid(document) is False
    assert validate_document(document)


def test_valid_documents_pass_both_and_are_not_modified() -> None:
    documents = [web_stack(), *(render_template(t["id"], {}) for t in list_templates())]
    for document in documents:
        before = copy.deepcopy(document)
        assert _fast_valid(document) is True
        assert list(_validator().iter_errors(document)) == []
        assert validate_document(document) == []
        assert document == before  # no defaults (environment, count) filled in
    assert "count" not in web_stack()["resources"][0]


def test_non_mapping_input_falls_back_to_the_full_walk() -> None:
    assert _fast_valid("not a document") is False  # type: ignore[arg-type]
    assert validate_document([])  # type: ignore[arg-type]
