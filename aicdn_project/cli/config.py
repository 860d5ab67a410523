"""Where the CLI finds its server and token: flags, then AICDN_URL / AICDN_TOKEN, then the config file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    if os.environ.get("AICDN_CONFIG"):
        return Path(os.environ["AICDN_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "ai-cdn" / "config.json"


def load() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(data: dict[str, Any]) -> Path:
    """Write the config readable by its owner only: it holds an API token."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(tmp, 0o600)  # O_CREAT's mode is ignored when a stale tmp file already existed
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class Settings:
    url: str
    token: str
    username: str


def resolve(url_flag: str | None = None) -> Settings:
    stored = load()
    url = url_flag or os.environ.get("AICDN_URL") or stored.get("url") or DEFAULT_URL
    url = url.rstrip("/")
    # A stored token goes only to the server it was issued by, never to another --url / AICDN_URL.
    same_server = (stored.get("url") or "").rstrip("/") == url
    if os.environ.get("AICDN_TOKEN"):
        return Settings(url=url, token=os.environ["AICDN_TOKEN"], username="")
    if same_server:
        return Settings(url=url, token=stored.get("token") or "", username=stored.get("username") or "")
    return Settings(url=url, token="", username="")
