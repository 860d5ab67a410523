"""Cost estimation: the price book (shipped YAML, a settings file, or the admin's active one) and line items."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from aicdn_project.errors import ValidationFailed
from blueprints.analysis import sizing
from blueprints.analysis.gcpause import paused_gc

SHIPPED_PRICE_BOOK = Path(__file__).resolve().parent / "pricebook.yaml"
TIERS = ("hdd", "standard", "ssd", "nvme")
UNIT_KEYS = (
    "vcpu_month",
    "ram_gb_month",
    "gpu_month",
    "instance_month",
    "loadbalancer_month",
    "backup_gb_month",
    "kubernetes_control_plane_month",
    "network_month",
)
_PRICE = {"type": "number", "minimum": 0, "maximum": 1_000_000}
PRICE_BOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "currency", "provider_sheets", "reference_sheet", "sheets"],
    "properties": {
        "version": {"type": "string", "minLength": 1, "maxLength": 64},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "hours_per_month": {"type": "number", "minimum": 1},
        "provider_sheets": {
            "type": "object",
            "required": ["proxmox", "simulator", "docker", "kubernetes"],
            "additionalProperties": {"type": "string"},
        },
        "reference_sheet": {"type": "string"},
        "sheets": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": [*UNIT_KEYS, "storage_gb_month"],
                "properties": {
                    "label": {"type": "string"},
                    "basis": {"type": "string"},
                    **dict.fromkeys(UNIT_KEYS, _PRICE),
                    "storage_gb_month": {
                        "type": "object",
                        "required": list(TIERS),
                        "properties": dict.fromkeys(TIERS, _PRICE),
                        "additionalProperties": False,
                    },
                },
            },
        },
    },
}


def price_book_errors(data: Any) -> list[dict[str, str]]:
    """Every structural problem of a price book, each with a JSON path; [] when it is usable."""
    errors = []
    for error in Draft202012Validator(PRICE_BOOK_SCHEMA).iter_errors(data):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        errors.append({"path": path, "message": error.message})
    if not errors:
        sheets = data["sheets"]
        for provider, sheet in data["provider_sheets"].items():
            if sheet not in sheets:
                errors.append({"path": f"$.provider_sheets.{provider}", "message": f"no sheet named {sheet!r}"})
        if data["reference_sheet"] not in sheets:
            errors.append({"path": "$.reference_sheet", "message": f"no sheet named {data['reference_sheet']!r}"})
    return sorted(errors, key=lambda e: e["path"])


def check_price_book(data: Any) -> dict[str, Any]:
    errors = price_book_errors(data)
    if errors:
        raise ValidationFailed(
            f"price book is invalid: {errors[0]['path']}: {errors[0]['message']}",
            code="invalid_price_book",
            details={"errors": errors},
        )
    return data


@lru_cache(maxsize=8)
def _load_file(path: str, mtime: float) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return check_price_book(yaml.safe_load(handle))


def load_price_book_file(path: str | Path) -> dict[str, Any]:
    """A price book YAML file, validated (cached until the file changes)."""
    path = Path(path)
    return copy.deepcopy(_load_file(str(path), path.stat().st_mtime))


def default_price_book() -> dict[str, Any]:
    """The file named by settings.AICDN_PRICE_BOOK_PATH when set, otherwise the shipped price book."""
    from django.conf import settings

    override = getattr(settings, "AICDN_PRICE_BOOK_PATH", "") if settings.configured else ""
    return load_price_book_file(override or SHIPPED_PRICE_BOOK)


def stored_price_book() -> dict[str, Any] | None:
    """The admin's active PriceBook, or None (none active, or Django / the database not available here)."""
    from django.apps import apps

    if not apps.ready:  # used outside Django (the benchmark, scripts): file price books only
        return None
    from django.core.exceptions import SynchronousOnlyOperation
    from django.db import DatabaseError

    model = apps.get_model("blueprints", "PriceBook")
    try:
        row = model.objects.filter(is_active=True).only("data").first()
    except (DatabaseError, SynchronousOnlyOperation):
        # No database here (or an async context): the file price book is the documented fallback.
        return None
    return check_price_book(row.data) if row is not None else None


def resolve_price_book(price_book: dict[str, Any] | None) -> dict[str, Any]:
    """The price book given; else the admin's active one; else the AICDN_PRICE_BOOK_PATH file or the shipped YAML."""
    if price_book is not None:
        return check_price_book(price_book)
    return stored_price_book() or default_price_book()


def _line(res_name: str, rtype: str, provider: str, item: str, qty: float, unit: str, price: float) -> dict[str, Any]:
    return {
        "resource": res_name,
        "type": rtype,
        "provider": provider,
        "item": item,
        "quantity": round(qty, 4),
        "unit": unit,
        "unit_price": price,
        "monthly": round(qty * price, 2),
    }


def price_resource(
    res: dict[str, Any], sheet: dict[str, Any], provider: str, *, lines: bool = True
) -> tuple[float, list[dict[str, Any]]]:
    """(monthly cost, line items) of one resource entry on one sheet; line items only when asked for."""
    rtype = res["type"]
    name = res["name"]
    specs = res.get("specs") or {}
    count = int(res.get("count", 1))
    n = sizing.instances(res)
    # (item, quantity, unit, unit price)
    parts: list[tuple[str, float, str, float]] = []
    if rtype in ("compute", "container", "database", "cache", "kubernetes_cluster"):
        uptime = sizing.uptime_fraction(specs)
        scheduled = "" if uptime == 1.0 else f" (scheduled, {uptime:.1%} uptime)"
        cpu = sizing.cpu_of(res)
        mem = sizing.memory_gb(res)
        gpu = int(specs.get("gpu") or 0)
        parts.append(("vcpu" + scheduled, cpu * n * uptime, "vCPU-month", sheet["vcpu_month"]))
        parts.append(("ram" + scheduled, mem * n * uptime, "GB RAM-month", sheet["ram_gb_month"]))
        if gpu:
            parts.append(("gpu" + scheduled, gpu * n * uptime, "GPU-month", sheet["gpu_month"]))
        if rtype != "kubernetes_cluster":
            parts.append(("instance overhead", n, "instance-month", sheet["instance_month"]))
        else:
            parts.append(("control plane", count, "cluster-month", sheet["kubernetes_control_plane_month"]))
    elif rtype == "loadbalancer":
        parts.append(("load balancer", n, "load balancer-month", sheet["loadbalancer_month"]))
    elif rtype == "network":
        parts.append(("network", count, "network-month", sheet["network_month"]))
    storage = sizing.storage_gb(res)
    if storage:
        tier = sizing.storage_tier(res)
        parts.append((f"storage ({tier})", storage * n, f"GB {tier}-month", sheet["storage_gb_month"][tier]))
        if sizing.backups_enabled(specs):
            # One backup copy of each primary's data (incremental backups; retention mostly dedups).
            primaries = count * (int(specs.get("nodes") or 3) if rtype == "kubernetes_cluster" else 1)
            parts.append(("backups", storage * primaries, "GB backup-month", sheet["backup_gb_month"]))
    total = 0.0
    items = []
    for item, qty, unit, price in parts:
        total += qty * price
        if lines:
            items.append(_line(name, rtype, provider, item, qty, unit, price))
    return total, items


def estimate_cost(document: dict[str, Any], price_book: dict[str, Any] | None = None) -> dict[str, Any]:
    """Monthly cost of a (valid) blueprint: line items per resource, totals, and the public-cloud reference."""
    book = resolve_price_book(price_book)
    with paused_gc(len(document.get("resources") or ())):
        return _estimate(document, book)


def _estimate(document: dict[str, Any], book: dict[str, Any]) -> dict[str, Any]:
    sheets = book["sheets"]
    provider_sheets = book["provider_sheets"]
    reference = sheets[book["reference_sheet"]]
    line_items: list[dict[str, Any]] = []
    by_resource: dict[str, float] = {}
    used: dict[str, str] = {}
    total = 0.0
    reference_total = 0.0
    for res in document.get("resources") or []:
        provider = sizing.provider_of(document, res)
        sheet_name = provider_sheets[provider]
        used[provider] = sheet_name
        monthly, items = price_resource(res, sheets[sheet_name], provider)
        line_items.extend(items)
        by_resource[res["name"]] = round(monthly, 2)
        total += monthly
        reference_total += price_resource(res, reference, provider, lines=False)[0]
    return {
        "currency": book["currency"],
        "monthly_total": round(total, 2),
        "price_book_version": book["version"],
        "provider_sheet": {
            provider: {"sheet": sheet, "label": sheets[sheet].get("label", sheet)} for provider, sheet in used.items()
        },
        "line_items": line_items,
        "by_resource": by_resource,
        "reference_sheet": book["reference_sheet"],
        "reference_cloud_total": round(reference_total, 2),
    }


def monthly_total(document: dict[str, Any], price_book: dict[str, Any]) -> float:
    """Just the total (no line items), for callers that price many variants."""
    sheets, provider_sheets = price_book["sheets"], price_book["provider_sheets"]
    return sum(
        price_resource(res, sheets[provider_sheets[sizing.provider_of(document, res)]], "", lines=False)[0]
        for res in document.get("resources") or []
    )


def cost_delta(
    old: dict[str, Any] | None, new: dict[str, Any], price_book: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Monthly cost difference between two documents (old None = nothing yet), total and per resource."""
    book = resolve_price_book(price_book)
    new_cost = estimate_cost(new, book)
    old_cost = estimate_cost(old, book) if old is not None else {"by_resource": {}, "monthly_total": 0.0}
    old_by, new_by = old_cost["by_resource"], new_cost["by_resource"]
    by_resource = {}
    for name in [*new_by, *(n for n in old_by if n not in new_by)]:
        before, after = old_by.get(name, 0.0), new_by.get(name, 0.0)
        by_resource[name] = {"old": before, "new": after, "delta": round(after - before, 2)}
    old_total = old_cost["monthly_total"]
    new_total = new_cost["monthly_total"]
    delta = round(new_total - old_total, 2)
    return {
        "old_total": old_total,
        "new_total": new_total,
        "delta": delta,
        "delta_percent": round(delta / old_total * 100, 2) if old_total else None,
        "currency": book["currency"],
        "price_book_version": book["version"],
        "by_resource": by_resource,
    }
