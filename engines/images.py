"""Which image a container-like resource runs: the blueprint image, an engine's default, then the image_map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engines.base import EngineError, specs_of

# Blueprint database / cache engine -> (image template, default version); {version} is specs.engine_version.
ENGINE_IMAGES = {
    "postgresql": ("postgres:{version}", "16"),
    "mysql": ("mysql:{version}", "8.4"),
    "mariadb": ("mariadb:{version}", "11"),
    "mongodb": ("mongo:{version}", "7"),
    "redis": ("redis:{version}", "7"),
    "memcached": ("memcached:{version}", "1.6"),
}
ENGINE_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mongodb": 27017, "redis": 6379, "memcached": 11211}
DEFAULT_PROXY_IMAGE = "nginx:1.27-alpine"
DEFAULT_IMAGE = "debian:12-slim"


def data_engine(resource: Mapping[str, Any]) -> str:
    """The database or cache engine of a resource, lower-cased (postgresql / redis when unspecified)."""
    default = "redis" if resource["type"] == "cache" else "postgresql"
    return str(specs_of(resource).get("engine") or default).lower()


def resolve_image(resource: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[str, list[str] | None]:
    """(image, command) for a container-like resource under an engine config.

    Order: load balancers run `proxy_image`; otherwise `specs.image`; databases and caches without one use
    `engine_images` (or ENGINE_IMAGES) for their engine and version; anything else `default_image`. Then
    `image_map` replaces the chosen reference (so a test daemon can run a local stand-in), and the command is
    `specs.command`, else `commands[image]`.
    """
    specs = specs_of(resource)
    rtype = resource["type"]
    if rtype == "loadbalancer":
        wanted = str(config.get("proxy_image", DEFAULT_PROXY_IMAGE))
    elif specs.get("image"):
        wanted = str(specs["image"])
    elif rtype in ("database", "cache"):
        engine = data_engine(resource)
        templates = {**{k: v[0] for k, v in ENGINE_IMAGES.items()}, **(config.get("engine_images") or {})}
        if engine not in templates:
            raise EngineError(
                f"no image for {rtype} engine {engine!r}; set engine_images.{engine} in the environment config",
                permanent=True,
                code="no_image",
            )
        version = str(specs.get("engine_version") or ENGINE_IMAGES.get(engine, ("", "latest"))[1])
        wanted = templates[engine].replace("{version}", version)
    else:
        wanted = str(config.get("default_image", DEFAULT_IMAGE))
    local = str((config.get("image_map") or {}).get(wanted, wanted))
    command = specs.get("command") or (config.get("commands") or {}).get(local)
    return local, (list(command) if command else None)


def resource_ports(resource: Mapping[str, Any]) -> list[tuple[int, int, str]]:
    """(port, target_port, protocol) of each port entry; databases and caches default to their engine's port."""
    specs = specs_of(resource)
    entries = specs.get("ports") or []
    if not entries and resource["type"] in ("database", "cache"):
        entries = [ENGINE_PORTS.get(data_engine(resource), 5432)]
    if not entries and resource["type"] == "loadbalancer":
        entries = [80]
    ports = []
    for entry in entries:
        if isinstance(entry, Mapping):
            proto = str(entry.get("protocol", "tcp"))
            ports.append((int(entry["port"]), int(entry.get("target_port", entry["port"])), proto))
        else:
            ports.append((int(entry), int(entry), "tcp"))
    return ports
