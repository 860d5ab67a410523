"""Drift detection: the actual state read through the engine against the recorded state, stored as a DriftReport;
and the recorded state as a reconcile plan must see it."""

from __future__ import annotations

import logging
import time
from typing import Any

from aicdn_project import metrics
from aicdn_project.errors import ApplicationError, Conflict
from engines import labels as L
from engines.models import DriftReport, DriftStatus, Environment, ResourceState, ResourceStatus
from engines.selectors import deployed_state, deployment_running_in, environment_engine

logger = logging.getLogger(__name__)

# Statuses engines report for objects that are up (containers and VMs run, networks and volumes are available).
HEALTHY_STATUSES = frozenset({"running", "available", "ready", "active", "bound"})


def _changes(state: ResourceState, actual: Any) -> list[dict[str, Any]]:
    """Why the object the engine reports differs from the recorded resource (empty: it does not)."""
    reasons: list[dict[str, Any]] = []
    if actual.type and actual.type != state.type:
        reasons.append({"field": "type", "recorded": state.type, "actual": actual.type})
    wanted = L.spec_hash(state.spec)
    if actual.spec_hash != wanted:
        # Someone re-made or re-labelled the object with another spec than the one we applied.
        reasons.append({"field": "spec", "recorded": wanted, "actual": actual.spec_hash or "(unlabelled)"})
    if state.engine_object_ids and sorted(actual.object_ids) != sorted(state.engine_object_ids):
        reasons.append(
            {"field": "objects", "recorded": sorted(state.engine_object_ids), "actual": sorted(actual.object_ids)}
        )
    statuses = {s.strip() for s in str(actual.status).split(",") if s.strip()}
    if not statuses <= HEALTHY_STATUSES:
        reasons.append({"field": "status", "recorded": "running", "actual": actual.status})
    return reasons


def drift_check(*, environment: Environment) -> DriftReport:
    """Read every recorded resource and every labelled object through the engine; store and return the report.

    Refused (Conflict) while a deployment runs in the environment: half-applied state is not drift.
    """
    if deployment_running_in(environment) is not None:
        raise Conflict(
            f"a deployment is running in {environment.name}; check drift after it finishes",
            code="deployment_running",
            details={"environment": environment.name},
        )
    started = time.monotonic()
    states = list(ResourceState.objects.filter(environment=environment).order_by("name"))
    missing: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    unmanaged: list[dict[str, Any]] = []
    try:
        engine, ctx = environment_engine(environment)
        try:
            for state in states:
                with metrics.ENGINE_LATENCY.labels(engine=environment.engine, operation="read").time():
                    actual = engine.read(state.name, ctx)
                if actual is None:
                    missing.append({"name": state.name, "type": state.type})
                elif state.status == ResourceStatus.READY:
                    # Resources a failed run left behind have no agreed spec to compare with; the next plan
                    # replaces them anyway.
                    reasons = _changes(state, actual)
                    if reasons:
                        changed.append({"name": state.name, "type": state.type, "reasons": reasons})
            recorded = {state.name for state in states}
            with metrics.ENGINE_LATENCY.labels(engine=environment.engine, operation="read").time():
                managed = engine.list_managed(ctx)
            for obj in managed:
                if obj.resource_name not in recorded:
                    unmanaged.append(
                        {
                            "resource": obj.resource_name,
                            "type": obj.labels.get(L.TYPE, ""),
                            "kind": obj.kind,
                            "object_id": obj.object_id,
                            "object_name": obj.name,
                        }
                    )
        finally:
            close = getattr(engine, "close", None)
            if callable(close):
                close()
    except ApplicationError as exc:  # EngineError (unreachable, timeouts) or a missing secret
        metrics.DRIFT_CHECKS.labels(environment=environment.name, result="error").inc()
        return DriftReport.objects.create(
            environment=environment,
            status=DriftStatus.ERROR,
            error=exc.message,
            resources_checked=len(states),
            duration_ms=(time.monotonic() - started) * 1000,
        )
    drifted = bool(missing or changed or unmanaged)
    report = DriftReport.objects.create(
        environment=environment,
        status=DriftStatus.DRIFTED if drifted else DriftStatus.CLEAN,
        missing=missing,
        changed=changed,
        unmanaged=unmanaged,
        resources_checked=len(states),
        duration_ms=(time.monotonic() - started) * 1000,
    )
    metrics.DRIFT_CHECKS.labels(environment=environment.name, result=report.status).inc()
    for kind, found in (("missing", missing), ("modified", changed), ("unmanaged", unmanaged)):
        if found:
            metrics.DRIFT_FINDINGS.labels(environment=environment.name, kind=kind).inc(len(found))
    return report


def drift_report_link_reconcile(*, report: DriftReport, ipr_id: int) -> DriftReport:
    DriftReport.objects.filter(pk=report.pk).update(reconcile_ipr_id=ipr_id)
    report.reconcile_ipr_id = ipr_id
    return report


def reconcile_baseline(*, environment: Environment, report: DriftReport) -> dict[str, dict[str, Any]]:
    """The recorded state corrected by what the report found, for planning a reconcile of the deployed version:
    a missing resource is absent (so the plan creates it), a changed one is tainted (so the plan replaces it),
    an unmanaged object is a deployed resource the blueprint does not name (so the plan deletes it)."""
    state = deployed_state(environment)
    for item in report.missing:
        state.pop(item["name"], None)
    for item in report.changed:
        if item["name"] in state:
            state[item["name"]]["status"] = "tainted"
    for item in report.unmanaged:
        name = item.get("resource") or ""
        if name and name not in state:
            rtype = item.get("type") or "container"
            spec = {"name": name, "type": rtype}
            state[name] = {"name": name, "type": rtype, "spec": spec, "status": "ready", "outputs": {}}
    return state


def drift_summary(report: DriftReport) -> str:
    if report.status == DriftStatus.ERROR:
        return f"drift check failed: {report.error}"
    if report.status == DriftStatus.CLEAN:
        return f"no drift in {report.resources_checked} resource(s)"
    parts = []
    if report.missing:
        parts.append(f"{len(report.missing)} missing ({', '.join(i['name'] for i in report.missing)})")
    if report.changed:
        parts.append(f"{len(report.changed)} changed ({', '.join(i['name'] for i in report.changed)})")
    if report.unmanaged:
        names = sorted({i.get("resource") or i.get("object_name", "") for i in report.unmanaged})
        parts.append(f"{len(report.unmanaged)} unmanaged object(s) ({', '.join(names)})")
    return "; ".join(parts)
