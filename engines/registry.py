"""The engine registry: `@register_engine("kind")` fills a dict; environments store the kind as a plain string."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from engines.base import Engine, UnknownEngine

_ENGINES: dict[str, type[Engine]] = {}

# Imported on first lookup, so a process that never deploys does not load the Docker or Kubernetes clients.
BUILTIN_MODULES = (
    "engines.simulator",
    "engines.docker_engine",
    "engines.proxmox_engine",
    "engines.kubernetes_engine",
)
_builtins_loaded = False


def register_engine(kind: str) -> Callable[[type[Engine]], type[Engine]]:
    def decorator(cls: type[Engine]) -> type[Engine]:
        existing = _ENGINES.get(kind)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise RuntimeError(f"engine kind {kind!r} is already registered by {existing.__module__}")
        cls.kind = kind
        _ENGINES[kind] = cls
        return cls

    return decorator


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def engine_kinds() -> list[str]:
    _load_builtins()
    return sorted(_ENGINES)


def get_engine_class(kind: str) -> type[Engine]:
    _load_builtins()
    try:
        return _ENGINES[kind]
    except KeyError:
        raise UnknownEngine(
            f"unknown engine {kind!r}; available: {', '.join(sorted(_ENGINES))}",
            details={"engine": kind, "available": sorted(_ENGINES)},
        ) from None
