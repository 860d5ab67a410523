"""Cost optimisation: deterministic recommendations that never weaken what the security audit guards."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

from aicdn_project.errors import ValidationFailed
from blueprints.analysis import sizing
from blueprints.analysis.cost import monthly_total, price_resource, resolve_price_book
from blueprints.analysis.security import audit_document, context_for, resource_findings, severity_at_least
from blueprints.validation import dependency_edges, format_size, parse_size, validate_document

DEV_SCHEDULE = {"startup": "08:00", "shutdown": "20:00", "weekdays_only": True}
# Floors for non-production rightsizing: small enough to save, large enough to boot the usual stacks.
RIGHTSIZE_FLOOR = {"cpu": 2, "memory_gb": 4}
CONSOLIDATE_MIN_COUNT = 4
CONSOLIDATE_MAX_CPU = 2
# (old value, new value) per dotted field of one resource entry.
Change = dict[str, dict[str, Any]]
Proposal = tuple[dict[str, Any], Change, str]


def _set(res: dict[str, Any], field: str, value: Any, change: Change) -> None:
    """Set a top-level or specs.<key> field on a copied entry and record the change."""
    if field.startswith("specs."):
        key = field.removeprefix("specs.")
        specs = res.setdefault("specs", {})
        old = specs.get(key)
        if value is None:
            specs.pop(key, None)
        else:
            specs[key] = value
    else:
        old = res.get(field)
        res[field] = value
    change[field] = {"old": old, "new": value}


def _storage_tier(res: dict[str, Any], production: bool) -> Proposal | None:
    """Application and data disks (not databases): NVMe to SSD in production, down to standard elsewhere."""
    if res["type"] not in ("compute", "volume", "kubernetes_cluster") or not sizing.storage_gb(res):
        return None
    tier = sizing.storage_tier(res)
    # Production keeps SSD latency; other environments go down to standard disks.
    cheaper = {"nvme": "ssd"} if production else {"nvme": "standard", "ssd": "standard"}
    new_tier = cheaper.get(tier)
    if new_tier is None:
        return None
    out, change = copy.deepcopy(res), {}
    _set(out, "specs.storage_tier", new_tier, change)
    why = f"{tier} storage costs more per GB than {new_tier}; " + (
        "application disks and volumes rarely need NVMe latency (databases keep theirs)."
        if production
        else "outside production, standard disks serve development and test load."
    )
    return out, change, why


def _consolidate(res: dict[str, Any], production: bool) -> Proposal | None:
    """Many small VMs -> half as many twice as large: same capacity, fewer per-instance overheads."""
    count = int(res.get("count", 1))
    if res["type"] != "compute" or count < CONSOLIDATE_MIN_COUNT or sizing.cpu_of(res) > CONSOLIDATE_MAX_CPU:
        return None
    specs = res.get("specs") or {}
    new_count = max(2, math.ceil(count / 2))
    factor = count / new_count
    out, change = copy.deepcopy(res), {}
    _set(out, "count", new_count, change)
    _set(out, "specs.cpu", math.ceil(sizing.cpu_of(res) * factor), change)
    _set(out, "specs.memory", format_size(math.ceil(parse_size(specs.get("memory", "1GB")) * factor)), change)
    if specs.get("storage"):
        _set(out, "specs.storage", format_size(math.ceil(parse_size(specs["storage"]) * factor)), change)
    why = (
        f"{count} instances of {sizing.cpu_of(res):g} vCPU each pay {count} per-instance overheads (OS, monitoring, "
        f"patching); {new_count} instances with the same total vCPU, RAM and disk pay {new_count}, and still "
        "leave at least two for redundancy."
    )
    return out, change, why


def _rightsize(res: dict[str, Any], production: bool) -> Proposal | None:
    """Outside production, halve vCPU and RAM down to a floor: non-production copies rarely need full size."""
    if production or res["type"] not in ("compute", "container", "database", "cache", "kubernetes_cluster"):
        return None
    specs = res.get("specs") or {}
    if "cpu" not in specs and "memory" not in specs:
        return None
    out, change = copy.deepcopy(res), {}
    cpu = specs.get("cpu")
    if cpu and cpu > RIGHTSIZE_FLOOR["cpu"]:
        _set(out, "specs.cpu", max(RIGHTSIZE_FLOOR["cpu"], math.ceil(cpu / 2)), change)
    memory = specs.get("memory")
    floor = RIGHTSIZE_FLOOR["memory_gb"] * sizing.GIB
    if memory and parse_size(memory) > floor:
        _set(out, "specs.memory", format_size(max(floor, (parse_size(memory) // 2 // sizing.GIB) * sizing.GIB)), change)
    if not change:
        return None
    why = "Sized like production, but this environment is not: half the vCPU and RAM (never below "
    why += f"{RIGHTSIZE_FLOOR['cpu']} vCPU / {RIGHTSIZE_FLOOR['memory_gb']}GB) is enough for non-production load."
    return out, change, why


def _fewer_replicas(res: dict[str, Any], production: bool) -> Proposal | None:
    """Outside production: one instance, no read replicas, no HA standby."""
    if production:
        return None
    specs = res.get("specs") or {}
    out, change = copy.deepcopy(res), {}
    rtype = res["type"]
    if rtype in ("compute", "container", "database", "cache") and int(res.get("count", 1)) > 1:
        _set(out, "count", 1, change)
    if rtype == "container" and int(specs.get("replicas") or 1) > 1:
        _set(out, "specs.replicas", 1, change)
    if rtype in ("database", "cache") and int(specs.get("replicas") or 0) > 0:
        _set(out, "specs.replicas", 0, change)
    if rtype in ("database", "cache", "loadbalancer") and specs.get("ha"):
        _set(out, "specs.ha", False, change)
    if not change:
        return None
    return out, change, "Outside production a single instance is enough; replicas and HA standbys only add cost."


def _scheduled_shutdown(res: dict[str, Any], production: bool, environment: str = "") -> Proposal | None:
    if environment not in ("development", "test") or res["type"] not in ("compute", "container"):
        return None
    if (res.get("specs") or {}).get("schedule"):
        return None
    out, change = copy.deepcopy(res), {}
    _set(out, "specs.schedule", dict(DEV_SCHEDULE), change)
    uptime = sizing.uptime_fraction({"schedule": DEV_SCHEDULE})
    why = (
        f"A {environment} machine is used in working hours: running it 08:00-20:00 on weekdays only "
        f"({uptime:.0%} of the month) stops paying for idle vCPU and RAM; disks are kept."
    )
    return out, change, why


KINDS: list[tuple[str, Callable[..., Proposal | None]]] = [
    ("storage_tier", _storage_tier),
    ("consolidate", _consolidate),
    ("rightsize", _rightsize),
    ("fewer_replicas", _fewer_replicas),
    ("scheduled_shutdown", _scheduled_shutdown),
]


def _check_target(target_reduction: Any) -> float:
    if isinstance(target_reduction, bool) or not isinstance(target_reduction, int | float):
        problem = "must be a number between 0 and 1 (0.3 = 30 %)"
    elif not 0 < target_reduction < 1:
        problem = f"must be between 0 and 1 exclusive (0.3 = 30 %), got {target_reduction}"
    else:
        return float(target_reduction)
    raise ValidationFailed(
        f"target_reduction {problem}",
        code="invalid_target_reduction",
        details={"errors": [{"path": "$.target_reduction", "message": problem}]},
    )


def _blocking(findings: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(f["rule_id"], f["resource"]) for f in findings if severity_at_least(f["severity"], "high")}


def _plan(
    document: dict[str, Any], book: dict[str, Any], target: float, banned: set[tuple[str, str]]
) -> tuple[dict[str, Any], list[dict[str, Any]], float, float]:
    working = copy.deepcopy(document)
    ctx = context_for(working)
    environment = sizing.environment_of(working)
    sheets, provider_sheets = book["sheets"], book["provider_sheets"]
    current = monthly_total(working, book)
    running = current
    recommendations: list[dict[str, Any]] = []
    for kind, propose in KINDS:
        for index, res in enumerate(working["resources"]):
            if running <= current * (1 - target) or (kind, res["name"]) in banned:
                continue
            extra = {"environment": environment} if kind == "scheduled_shutdown" else {}
            proposal = propose(res, ctx.production, **extra)
            if proposal is None:
                continue
            new_res, change, rationale = proposal
            sheet = sheets[provider_sheets[sizing.provider_of(working, res)]]
            saving = price_resource(res, sheet, "", lines=False)[0] - price_resource(new_res, sheet, "", lines=False)[0]
            if saving < 0.01:
                continue
            # Never trade security for money: a change that adds a high or critical finding is not proposed.
            if _blocking(resource_findings(ctx, index, new_res)) - _blocking(resource_findings(ctx, index, res)):
                continue
            working["resources"][index] = new_res
            ctx.by_name[new_res["name"]] = new_res
            running -= saving
            recommendations.append(
                {
                    "id": f"OPT-{len(recommendations) + 1:03d}",
                    "kind": kind,
                    "resource": res["name"],
                    "rationale": rationale,
                    "monthly_saving": round(saving, 2),
                    "change": change,
                }
            )
    return working, recommendations, current, running


def optimize(document: dict[str, Any], target_reduction: float, price_book: dict[str, Any] | None = None) -> dict:
    """Recommendations, in a fixed order, until the target reduction is reached (or none are left)."""
    target = _check_target(target_reduction)
    book = resolve_price_book(price_book)
    baseline = _blocking(audit_document(document)["findings"])
    banned: set[tuple[str, str]] = set()
    while True:
        optimized, recommendations, current, optimized_total = _plan(document, book, target, banned)
        # Whole-document check: catches findings that depend on other resources (e.g. load balancer targets).
        added = _blocking(audit_document(optimized)["findings"]) - baseline
        if not added:
            break
        related = dependency_edges(optimized)
        suspects = {name for _rule, name in added} | {dep for _rule, name in added for dep in related.get(name, ())}
        culprits = {(rec["kind"], rec["resource"]) for rec in recommendations if rec["resource"] in suspects}
        if not culprits:  # cannot attribute the finding: withdraw every recommendation rather than risk it
            culprits = {(rec["kind"], rec["resource"]) for rec in recommendations}
        if not culprits:
            break
        banned |= culprits
    errors = validate_document(optimized)
    if errors:
        raise RuntimeError(f"optimizer produced an invalid blueprint: {errors[0]}")
    optimized_total = monthly_total(optimized, book)
    reduction = (current - optimized_total) / current if current else 0.0
    return {
        "currency": book["currency"],
        "price_book_version": book["version"],
        "recommendations": recommendations,
        "current_monthly": round(current, 2),
        "optimized_monthly": round(optimized_total, 2),
        "monthly_saving": round(current - optimized_total, 2),
        "reduction": round(reduction, 4),
        "target_reduction": target,
        "target_reached": reduction >= target - 1e-9,
        "optimized_document": optimized,
    }
