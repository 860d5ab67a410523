"""Hostile YAML: every attack gets a clear error naming the problem."""

from __future__ import annotations

import pytest

from aicdn_project.errors import PayloadTooLarge, ValidationFailed
from blueprints.parsing import check_document, parse_source

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def error_of(source: str | bytes) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        parse_source(source)
    return info.value


def test_billion_laughs_rejected() -> None:
    err = error_of(BILLION_LAUGHS)
    assert err.code == "yaml_alias_limit"
    assert "alias" in err.message


def test_few_aliases_but_huge_expansion_rejected() -> None:
    # 12 aliases per level but 10 levels: the node budget catches it, not the alias count.
    levels = ["l0: &l0 [" + ",".join(['"x"'] * 12) + "]"]
    for i in range(1, 8):
        levels.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 12) + "]")
    err = error_of("\n".join(levels) + "\n")
    assert err.code == "yaml_alias_limit"


def test_oversized_body_rejected() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        parse_source("a: " + "x" * (10 * 1024 * 1024))
    assert "larger than" in info.value.message


def test_deep_nesting_rejected() -> None:
    err = error_of("a: " + "[" * 200 + "]" * 200)
    assert err.code == "yaml_too_deep"
    assert "deeper than" in err.message


def test_deep_nesting_json_document_rejected() -> None:
    doc: dict = {}
    cur = doc
    for _ in range(100):
        cur["a"] = {}
        cur = cur["a"]
    with pytest.raises(ValidationFailed) as info:
        check_document(doc)
    assert info.value.code == "yaml_too_deep"


def test_duplicate_keys_rejected_with_line() -> None:
    err = error_of('version: "1.0"\nname: a\nname: b\n')
    assert err.code == "yaml_duplicate_key"
    assert "duplicate key 'name'" in err.message
    assert err.details["errors"][0]["line"] == 3


def test_python_tags_refused() -> None:
    err = error_of("a: !!python/object/apply:os.system ['echo pwned']\n")
    assert "not valid YAML" in err.message


def test_invalid_utf8_rejected() -> None:
    err = error_of(b"name: \xff\xfe\n")
    assert err.code == "invalid_encoding"


def test_not_a_mapping() -> None:
    assert error_of("- a\n- b\n").code == "not_a_mapping"


def test_syntax_error_has_line() -> None:
    err = error_of("version: '1.0'\nresources: [\n  - a: b\n")
    assert err.details["errors"][0].get("line")


def test_timestamps_stay_strings() -> None:
    assert parse_source("a: 2024-01-01\n")["a"] == "2024-01-01"


def test_binary_and_sets_refused() -> None:
    assert error_of("a: !!binary aGVsbG8=\n").code == "invalid_type"
    assert error_of("a: !!set {x, y}\n").code == "invalid_type"
