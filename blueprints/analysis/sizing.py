"""How much capacity a resource entry stands for: instances, vCPU, RAM, storage and uptime, with the defaults."""

from __future__ import annotations

from typing import Any

from blueprints.validation import parse_size

GIB = 1024**3

# What a resource gets when its specs leave a size out (what the engines provision by default).
DEFAULT_SPECS: dict[str, dict[str, Any]] = {
    "compute": {"cpu": 1, "memory": "1GB", "storage": "10GB", "storage_tier": "standard"},
    "container": {"cpu": 0.5, "memory": "512MB", "storage": None, "storage_tier": "standard"},
    "database": {"cpu": 2, "memory": "4GB", "storage": "20GB", "storage_tier": "ssd"},
    "cache": {"cpu": 1, "memory": "1GB", "storage": None, "storage_tier": "ssd"},
    "loadbalancer": {"cpu": None, "memory": None, "storage": None, "storage_tier": "standard"},
    "network": {"cpu": None, "memory": None, "storage": None, "storage_tier": "standard"},
    "volume": {"cpu": None, "memory": None, "storage": "10GB", "storage_tier": "standard"},
    # Per worker node.
    "kubernetes_cluster": {"cpu": 4, "memory": "16GB", "storage": "100GB", "storage_tier": "ssd", "nodes": 3},
}
PRODUCTION = "production"


def environment_of(document: dict[str, Any]) -> str:
    return document.get("environment") or "development"


def provider_of(document: dict[str, Any], res: dict[str, Any]) -> str:
    return res.get("provider") or document.get("provider") or "simulator"


def backups_enabled(specs: dict[str, Any]) -> bool:
    backups = specs.get("backups")
    if isinstance(backups, dict):
        return backups.get("enabled", True) is not False
    return backups is True


def backup_retention_days(specs: dict[str, Any]) -> int | None:
    backups = specs.get("backups")
    if isinstance(backups, dict):
        return backups.get("retention_days")
    return None


def instances(res: dict[str, Any]) -> int:
    """Running copies a resource entry stands for (count x replicas, primaries + replicas + HA standby)."""
    specs = res.get("specs") or {}
    count = int(res.get("count", 1))
    rtype = res["type"]
    if rtype == "container":
        return count * max(1, int(specs.get("replicas") or 1))
    if rtype in ("database", "cache"):
        return count * (1 + int(specs.get("replicas") or 0) + (1 if specs.get("ha") else 0))
    if rtype == "kubernetes_cluster":
        return count * int(specs.get("nodes") or DEFAULT_SPECS["kubernetes_cluster"]["nodes"])
    if rtype == "loadbalancer":
        return count * (2 if specs.get("ha") else 1)
    return count


def cpu_of(res: dict[str, Any]) -> float:
    specs = res.get("specs") or {}
    value = specs.get("cpu", DEFAULT_SPECS[res["type"]]["cpu"])
    return float(value or 0)


def _size_gb(value: str | None) -> float:
    return parse_size(value) / GIB if value else 0.0


def memory_gb(res: dict[str, Any]) -> float:
    specs = res.get("specs") or {}
    return _size_gb(specs.get("memory", DEFAULT_SPECS[res["type"]]["memory"]))


def storage_gb(res: dict[str, Any]) -> float:
    specs = res.get("specs") or {}
    return _size_gb(specs.get("storage", DEFAULT_SPECS[res["type"]]["storage"]))


def storage_tier(res: dict[str, Any]) -> str:
    specs = res.get("specs") or {}
    return specs.get("storage_tier") or DEFAULT_SPECS[res["type"]]["storage_tier"]


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def uptime_fraction(specs: dict[str, Any]) -> float:
    """Share of the month a scheduled machine runs: daily window (startup..shutdown) x weekdays (5/7) if set."""
    schedule = specs.get("schedule")
    if not schedule:
        return 1.0
    daily = 1.0
    if schedule.get("startup") and schedule.get("shutdown"):
        window = (_minutes(schedule["shutdown"]) - _minutes(schedule["startup"])) % (24 * 60)
        daily = (window or 24 * 60) / (24 * 60)
    weekly = 5 / 7 if schedule.get("weekdays_only") else 1.0
    return daily * weekly
