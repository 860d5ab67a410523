"""Reading blueprint text as hostile input: safe YAML (or JSON), size, depth, alias and duplicate-key limits."""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from aicdn_project.errors import PayloadTooLarge, ValidationFailed

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_ALIASES = 100
# Upper bound on nodes after alias expansion: a 100,000-resource blueprint is far below it, a billion laughs far above.
MAX_EXPANDED_NODES = 5_000_000


def _error(message: str, *, path: str = "$", line: int | None = None, code: str = "parse_error") -> ValidationFailed:
    item: dict[str, Any] = {"path": path, "message": message}
    if line is not None:
        item["line"] = line
    return ValidationFailed(message, code=code, details={"errors": [item]})


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, deep nesting and alias floods, and keeps timestamps as strings."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                raise _error(
                    f"too many YAML aliases (more than {MAX_ALIASES}); alias expansion is limited",
                    line=event.start_mark.line + 1,
                    code="yaml_alias_limit",
                )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise _error(
                    f"document nests deeper than {MAX_DEPTH} levels",
                    line=event.start_mark.line + 1,
                    code="yaml_too_deep",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        seen: dict[Any, int] = {}
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                hash(key)
            except TypeError as exc:
                raise _error("mapping keys must be plain scalars", line=key_node.start_mark.line + 1) from exc
            if key in seen:
                raise _error(
                    f"duplicate key {key!r} (first defined on line {seen[key]})",
                    line=key_node.start_mark.line + 1,
                    code="yaml_duplicate_key",
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# Dates stay strings: a blueprint is JSON-shaped data, and "2024-01-01" must not become a datetime.
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def _check_json_shape(value: Any) -> None:
    """Walk the loaded value with a node budget: rejects alias bombs and non-JSON types (sets, bytes)."""
    budget = MAX_EXPANDED_NODES
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        item, path = stack.pop()
        budget -= 1
        if budget < 0:
            raise _error(
                f"document expands to more than {MAX_EXPANDED_NODES} nodes (alias bomb?)", code="yaml_alias_limit"
            )
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise _error(f"mapping key {k!r} must be a string", path=path, code="invalid_key")
                stack.append((v, f"{path}.{k}"))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
        elif item is None or isinstance(item, str | bool | int | float):
            if isinstance(item, float) and (item != item or item in (float("inf"), float("-inf"))):
                raise _error("NaN and infinite numbers are not allowed", path=path, code="invalid_number")
        else:
            raise _error(f"unsupported value type {type(item).__name__}", path=path, code="invalid_type")


def parse_source(source: str | bytes, *, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Parse blueprint text (YAML or JSON) into a plain dict, or raise ValidationFailed / PayloadTooLarge."""
    if isinstance(source, bytes):
        if len(source) > max_bytes:
            raise PayloadTooLarge(f"blueprint is larger than {max_bytes} bytes", details={"limit": max_bytes})
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(f"blueprint is not valid UTF-8 (byte {exc.start})", code="invalid_encoding") from exc
    if len(source.encode("utf-8")) > max_bytes:
        raise PayloadTooLarge(f"blueprint is larger than {max_bytes} bytes", details={"limit": max_bytes})
    if "\x00" in source:
        raise _error("blueprint contains a NUL character", code="invalid_encoding")
    if not source.strip():
        raise _error("blueprint is empty", code="empty")
    try:
        loader = _StrictLoader(source)
        try:
            value = loader.get_single_data()
        finally:
            loader.dispose()
    except ValidationFailed:
        raise
    except (yaml.MarkedYAMLError, ConstructorError) as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise _error(f"not valid YAML: {exc.problem or exc}", line=line) from exc
    except yaml.YAMLError as exc:
        raise _error(f"not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise _error(f"document nests deeper than {MAX_DEPTH} levels", code="yaml_too_deep") from exc
    if not isinstance(value, dict):
        raise _error("a blueprint must be a mapping with version, name and resources", code="not_a_mapping")
    _check_json_shape(value)
    return value


def check_document(document: Any) -> dict[str, Any]:
    """Apply the same shape limits to a document that arrived as JSON rather than text."""
    if not isinstance(document, dict):
        raise _error("a blueprint must be an object with version, name and resources", code="not_a_mapping")
    encoded = json.dumps(document, separators=(",", ":"))
    if len(encoded.encode("utf-8")) > MAX_BYTES:
        raise PayloadTooLarge(f"blueprint is larger than {MAX_BYTES} bytes", details={"limit": MAX_BYTES})
    _depth_check(document)
    _check_json_shape(document)
    return document


def _depth_check(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _error(f"document nests deeper than {MAX_DEPTH} levels", code="yaml_too_deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def canonical_json(document: dict[str, Any]) -> str:
    """Canonical form: sorted keys, no whitespace, UTF-8; its sha256 is the version's identity."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_yaml(document: dict[str, Any]) -> str:
    """Readable YAML rendering (key order as given) used for diffs and display."""
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
