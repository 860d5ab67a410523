"""kmock's Kubernetes emulator served on a loopback port in a background thread, for the real `kubernetes` client.

kmock 0.8 cannot create or read namespaces: its URL parser reads `/api/v1/namespaces` as "namespace-scoped
path, namespace missing" (`namespace, *parts = parts[1:]` on an empty list raises ValueError, so
POST /api/v1/namespaces answers 500), and `/api/v1/namespaces/NAME` as a namespace scope with no resource.
`install_namespace_fix` wraps kmock's `parse_path` so those two paths parse as the cluster-scoped `namespaces`
resource, which the emulator then stores like any object. Everything else is kmock's own code.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kmock
from kmock._internal import parsing, rendering

_original_parse_path = parsing.parse_path

# The resources our engine lists; kmock answers 404 to listing a resource it has never seen.
DECLARED = {
    "v1/namespaces": kmock.ResourceInfo(namespaced=False, kind="Namespace"),
    "apps/v1/deployments": kmock.ResourceInfo(namespaced=True, kind="Deployment"),
    "apps/v1/statefulsets": kmock.ResourceInfo(namespaced=True, kind="StatefulSet"),
    "v1/services": kmock.ResourceInfo(namespaced=True, kind="Service"),
    "v1/persistentvolumeclaims": kmock.ResourceInfo(namespaced=True, kind="PersistentVolumeClaim"),
}


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath(
            group="", version="v1", plural="namespaces", name=parts[3] if len(parts) == 4 else None
        )
    return _original_parse_path(path)


def install_namespace_fix() -> None:
    parsing.parse_path = _parse_path_with_namespaces
    rendering.parsing.parse_path = _parse_path_with_namespaces  # the module object is shared; kept explicit


def uninstall_namespace_fix() -> None:
    parsing.parse_path = _original_parse_path


class KubeEmulator:
    """A kmock KubernetesEmulator + Server on 127.0.0.1 with its own event loop thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.handler: Any = None
        self.server: Any = None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self) -> KubeEmulator:
        install_namespace_fix()
        self.thread.start()

        async def start() -> None:
            self.handler = kmock.KubernetesEmulator()
            await self.handler.__aenter__()
            for key, info in DECLARED.items():
                self.handler.resources[key] = info
            self.server = kmock.Server(self.handler)
            await self.server.__aenter__()

        self._run(start())
        return self

    @property
    def url(self) -> str:
        return str(self.server.url).rstrip("/")

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Live (not deleted) objects the emulator holds for a resource plural, e.g. "deployments"."""
        found = []
        for (resource, ns, _name), obj in list(self.handler.objects.items()):
            if resource.plural == plural and (namespace is None or ns == namespace) and not obj.deleted:
                found.append(dict(obj.raw))
        return found

    def stop(self) -> None:
        async def stop() -> None:
            await self.server.__aexit__(None, None, None)
            await self.handler.__aexit__(None, None, None)

        try:
            self._run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            uninstall_namespace_fix()
