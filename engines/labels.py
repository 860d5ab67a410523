"""The labels every engine puts on what it creates, and the spec hash that makes a retried update a no-op."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

MANAGED = "ai-cdn.managed"
ENV = "ai-cdn.env"
RESOURCE = "ai-cdn.resource"
TYPE = "ai-cdn.type"
DEPLOYMENT = "ai-cdn.deployment"
SPEC_HASH = "ai-cdn.spec-hash"
INSTANCE = "ai-cdn.instance"

# Deployment ids become label values: Kubernetes allows at most 63 characters of [A-Za-z0-9._-].
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")


def spec_hash(resource: Mapping[str, Any]) -> str:
    """A short, stable hash of the blueprint resource entry: equal hashes mean nothing to change."""
    canonical = json.dumps(dict(resource), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def managed_labels(
    *, environment: str, resource: Mapping[str, Any], deployment_id: str, instance: int | None = None
) -> dict[str, str]:
    """The full label set for one object made for `resource` in `environment` by `deployment_id`."""
    labels = {
        MANAGED: "true",
        ENV: environment,
        RESOURCE: str(resource["name"]),
        TYPE: str(resource["type"]),
        DEPLOYMENT: deployment_id,
        SPEC_HASH: spec_hash(resource),
    }
    if instance is not None:
        labels[INSTANCE] = str(instance)
    return labels


def is_managed(labels: Mapping[str, Any] | None, *, environment: str, resource_name: str | None = None) -> bool:
    """True when the labels say we made the object for this environment (and this resource, when given)."""
    if not labels or labels.get(MANAGED) != "true" or labels.get(ENV) != environment:
        return False
    return resource_name is None or labels.get(RESOURCE) == resource_name


def valid_label_value(value: str) -> bool:
    return bool(_LABEL_VALUE.match(value))


def encode_description(labels: Mapping[str, str], text: str = "") -> str:
    """Labels as `key=value` lines for engines whose objects have a free-text description (Proxmox)."""
    lines = [f"{key}={labels[key]}" for key in sorted(labels)]
    return "\n".join(([text, ""] if text else []) + lines)


def decode_description(description: str | None) -> dict[str, str]:
    """The `ai-cdn.*=value` lines of a description; anything else in it is ignored."""
    labels: dict[str, str] = {}
    for line in (description or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.startswith("ai-cdn."):
            labels[key] = value
    return labels
