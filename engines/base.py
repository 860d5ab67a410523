"""The engine interface: per-resource create / read / update / delete, listing, health and capabilities."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from aicdn_project.errors import ApplicationError, ValidationFailed

RESOURCE_TYPES = frozenset(
    {"compute", "container", "database", "cache", "loadbalancer", "network", "volume", "kubernetes_cluster"}
)

T = TypeVar("T")


class EngineError(ApplicationError):
    """An engine operation failed. `permanent` tells the executor whether retrying can help."""

    status_code = 502
    default_code = "engine_error"

    def __init__(self, message: str, permanent: bool = False, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message, code=code, details=details)
        self.permanent = permanent

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "permanent": self.permanent}


class UnknownEngine(ValidationFailed):
    default_code = "unknown_engine"


class InvalidEngineConfig(ValidationFailed):
    default_code = "invalid_engine_config"


@dataclass(frozen=True)
class EngineContext:
    """What one operation runs for: the environment, the deployment, and the resolved config and secrets."""

    environment: str
    deployment_id: str
    config: Mapping[str, Any] = field(default_factory=dict)
    # Values read from the process environment through Environment.secret_refs; never stored.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass
class ResourceResult:
    """The outcome of create / read / update: the engine's object ids and the outputs others may use."""

    name: str
    type: str
    status: str
    object_ids: list[str]
    outputs: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # True when create found objects a previous try had made (labels matched) instead of making new ones.
    adopted: bool = False
    # False when update found the objects already at the requested spec (a retried update).
    changed: bool = True

    @property
    def spec_hash(self) -> str:
        return self.labels.get("ai-cdn.spec-hash", "")

    @property
    def deployment_id(self) -> str:
        return self.labels.get("ai-cdn.deployment", "")


@dataclass
class DeleteResult:
    name: str
    deleted_ids: list[str]

    @property
    def existed(self) -> bool:
        return bool(self.deleted_ids)


@dataclass(frozen=True)
class ManagedObject:
    """One engine object carrying our labels, as drift detection sees it."""

    kind: str
    object_id: str
    name: str
    labels: dict[str, str]

    @property
    def resource_name(self) -> str:
        return self.labels.get("ai-cdn.resource", "")


@dataclass(frozen=True)
class HealthReport:
    ok: bool
    detail: str
    latency_ms: float = 0.0


class Engine(abc.ABC):
    """Base class of every engine plugin. Subclasses register with `@register_engine("kind")`.

    Contract, checked by tests/engines/test_conformance.py for every engine:
    - every object made carries `labels.managed_labels(...)` (Docker labels, Kubernetes labels, Proxmox
      tags + description), and `read` finds objects by those labels, never by a name alone;
    - `create` is idempotent: a retry finds what an earlier try made and adopts it (`adopted=True`);
    - `update` converges the objects to the resource entry; when the spec hash already matches it changes
      nothing (`changed=False`); when nothing exists it creates;
    - `delete` is idempotent: deleting what is not there succeeds with no ids;
    - failures raise `EngineError(message, permanent)`: permanent when retrying the same call cannot help
      (bad request, unsupported type, missing image), transient otherwise (timeouts, locks, 5xx, connections).
    """

    kind: ClassVar[str] = ""
    resource_types: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Mapping[str, Any] | None = None, secrets: Mapping[str, str] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.secrets: dict[str, str] = dict(secrets or {})

    @classmethod
    def for_context(cls, ctx: EngineContext) -> Engine:
        return cls(ctx.config, ctx.secrets)

    # ----------------------------------------------------------------- config

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> list[dict[str, str]]:
        """Errors in an environment's config for this engine, as [{"path", "message"}]; empty when valid."""
        if not isinstance(config, Mapping):
            return [{"path": "$", "message": "config must be an object"}]
        return []

    @classmethod
    def required_secrets(cls, config: Mapping[str, Any]) -> list[str]:
        """Secret keys (of Environment.secret_refs) this config needs at run time."""
        return []

    # ------------------------------------------------------------- queries

    def capabilities(self) -> frozenset[str]:
        """The resource types this engine can deploy."""
        return self.resource_types

    @abc.abstractmethod
    def health(self) -> HealthReport: ...

    # ---------------------------------------------------------- operations

    @abc.abstractmethod
    def create(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult: ...

    @abc.abstractmethod
    def read(self, name: str, ctx: EngineContext) -> ResourceResult | None: ...

    @abc.abstractmethod
    def update(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult: ...

    @abc.abstractmethod
    def delete(self, name: str, ctx: EngineContext) -> DeleteResult: ...

    @abc.abstractmethod
    def list_managed(self, ctx: EngineContext) -> list[ManagedObject]: ...

    # -------------------------------------------------------------- helpers

    def check_supported(self, resource: Mapping[str, Any]) -> None:
        rtype = resource.get("type")
        if rtype not in self.capabilities():
            raise EngineError(
                f"the {self.kind} engine cannot deploy resources of type {rtype!r}",
                permanent=True,
                code="unsupported_resource_type",
                details={"resource": resource.get("name"), "supported": sorted(self.capabilities())},
            )


def wait_until(probe: Callable[[], T | None], *, timeout: float, interval: float = 0.2, what: str = "operation") -> T:
    """Poll `probe` until it returns something other than None; a transient EngineError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise EngineError(f"timed out after {timeout:g}s waiting for {what}", permanent=False, code="timeout")
        time.sleep(interval)


def instance_count(resource: Mapping[str, Any]) -> int:
    return max(1, int(resource.get("count") or 1))


def specs_of(resource: Mapping[str, Any]) -> dict[str, Any]:
    return dict(resource.get("specs") or {})


def check_config_keys(config: Mapping[str, Any], types: Mapping[str, type | tuple[type, ...]]) -> list[dict[str, str]]:
    """Unknown keys and wrongly typed values of an engine config."""
    if not isinstance(config, Mapping):
        return [{"path": "$", "message": "config must be an object"}]
    errors = []
    for key, value in config.items():
        if key not in types:
            errors.append({"path": f"$.{key}", "message": f"unknown setting; known: {', '.join(sorted(types))}"})
        elif not isinstance(value, types[key]) or (isinstance(value, bool) and bool not in _as_tuple(types[key])):
            expected = " or ".join(t.__name__ for t in _as_tuple(types[key]))
            errors.append({"path": f"$.{key}", "message": f"must be {expected}"})
    return errors


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


class ConvergingEngine(Engine):
    """An engine whose create and update are one idempotent "make it so" (`_converge`): create reports a change,
    update never claims it adopted an earlier try's objects."""

    @abc.abstractmethod
    def _converge(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult: ...

    def create(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult:
        result = self._converge(resource, ctx)
        result.changed = True
        return result

    def update(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult:
        result = self._converge(resource, ctx)
        result.adopted = False
        return result
