"""The DAG executor: a worker claims a deployment under a lease, applies its plan with bounded parallelism through
the environment's engine, persists every resource operation and the recorded state, and streams events.

A worker killed mid-run leaves operations `running` and a lease that stops being renewed. Once the lease expires,
another worker claims the deployment (a conditional update: exactly one wins) and resumes it: finished operations
are kept, unfinished ones run again. That is safe because every engine operation is idempotent through its labels
(a retried create adopts what the first try made, update converges, delete of what is gone succeeds).

engines never imports iprs: the IPR side calls `deployment_open` / `deployment_claim` / `deployment_execute` and
records the outcome with `deployment_finish` in the transaction that moves the IPR (iprs/services/deployment.py).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from aicdn_project import metrics
from aicdn_project.errors import ApplicationError
from aicdn_project.realtime import publish
from engines.base import Engine, EngineContext, EngineError
from engines.models import (
    FINAL_DEPLOYMENT_STATUSES,
    Deployment,
    DeploymentStatus,
    Environment,
    OperationStatus,
    ResourceOperation,
    ResourceState,
    ResourceStatus,
)
from engines.selectors import environment_engine
from engines.services import resource_state_delete, resource_state_record

logger = logging.getLogger(__name__)

DS = DeploymentStatus
OS = OperationStatus
CREATE, UPDATE, REPLACE, DELETE, NOOP = "create", "update", "replace", "delete", "noop"
APPLY_ACTIONS = (CREATE, UPDATE, REPLACE)
# Operation statuses that satisfy a dependency. A skipped operation is a no-op (a skipped one after a failure is
# never waited on: nothing is scheduled once something failed).
_DONE = (OS.SUCCEEDED, OS.SKIPPED)


class LeaseLost(Exception):
    """This worker no longer holds the deployment: its lease expired and another worker claimed it, or it was
    cancelled. The run stops scheduling, lets operations in flight finish, and leaves the outcome to the holder."""


@dataclass
class DeploymentOutcome:
    deployment_id: int
    succeeded: bool
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)


def lease_seconds() -> int:
    return int(settings.AICDN_DEPLOY_LEASE_SECONDS)


def _event_group(ipr_id: int) -> str:
    return f"ipr-{ipr_id}"


def _now_iso() -> str:
    return timezone.now().isoformat()


# --- the deployment row: open, claim, heartbeat, release, finish, cancel ---------------------------------------


def deployment_open(
    *, ipr_id: int, environment: Environment, target_version: Any, plan: Mapping[str, Any]
) -> Deployment:
    """The deployment of `ipr_id`, created on first call with one pending operation per plan action (idempotent)."""
    existing = Deployment.objects.filter(ipr_id=ipr_id).first()
    if existing is not None:
        return existing
    document = target_version.document or {}
    entries = {r["name"]: r for r in document.get("resources") or []}
    try:
        with transaction.atomic():
            deployment = Deployment.objects.create(
                ipr_id=ipr_id, environment=environment, target_version=target_version, plan=dict(plan or {})
            )
            operations = []
            for position, action in enumerate((plan or {}).get("actions") or [], start=1):
                kind = action["action"]
                operations.append(
                    ResourceOperation(
                        deployment=deployment,
                        position=int(action.get("order") or position),
                        resource=action["name"],
                        type=action["type"],
                        action=kind,
                        depends_on=list(action.get("depends_on") or []),
                        spec=dict(entries.get(action["name"], {})) if kind in APPLY_ACTIONS else {},
                        status=OS.SKIPPED if kind == NOOP else OS.PENDING,
                        output={"reason": "no changes"} if kind == NOOP else {},
                    )
                )
            ResourceOperation.objects.bulk_create(operations)
    except IntegrityError:
        # Another worker opened it between our read and our insert.
        return Deployment.objects.get(ipr_id=ipr_id)
    return deployment


def deployment_claim(*, deployment_id: int, owner: str) -> Deployment | None:
    """Take the deployment for `owner` if it is queued or its holder's lease expired; None when someone else holds it.

    One conditional UPDATE decides: under concurrent claims the database lets exactly one of them match the row.
    """
    now = timezone.now()
    claimable = (
        Q(status=DS.QUEUED)
        | Q(status=DS.RUNNING, lease_expires_at__lt=now)
        | Q(status=DS.RUNNING, lease_expires_at__isnull=True)
    )
    won = Deployment.objects.filter(claimable, pk=deployment_id).update(
        status=DS.RUNNING,
        lease_owner=owner[:200],
        lease_expires_at=now + timedelta(seconds=lease_seconds()),
        heartbeat_at=now,
        attempt=F("attempt") + 1,
        started_at=Coalesce(F("started_at"), now),
        updated_at=now,
    )
    if won != 1:
        return None
    deployment = Deployment.objects.select_related("environment").get(pk=deployment_id)
    publish(
        _event_group(deployment.ipr_id),
        {
            "type": "deployment.started",
            "ipr": deployment.ipr_id,
            "deployment": deployment.pk,
            "attempt": deployment.attempt,
            "resumed": deployment.attempt > 1,
            "environment": deployment.environment.name,
            "at": _now_iso(),
        },
    )
    return deployment


def deployment_heartbeat(*, deployment_id: int, owner: str) -> None:
    """Renew `owner`'s lease; LeaseLost when another worker claimed the deployment or it was cancelled."""
    now = timezone.now()
    renewed = Deployment.objects.filter(pk=deployment_id, status=DS.RUNNING, lease_owner=owner[:200]).update(
        lease_expires_at=now + timedelta(seconds=lease_seconds()), heartbeat_at=now
    )
    if renewed != 1:
        raise LeaseLost(f"deployment {deployment_id} is no longer held by {owner}")


def deployment_release(*, deployment_id: int, owner: str) -> bool:
    """Give a claimed deployment back (queued, no lease) when the run cannot go on now, e.g. the environment is busy."""
    return bool(
        Deployment.objects.filter(pk=deployment_id, status=DS.RUNNING, lease_owner=owner[:200]).update(
            status=DS.QUEUED, lease_owner="", lease_expires_at=None, updated_at=timezone.now()
        )
    )


def deployment_finish(*, ipr_id: int, succeeded: bool, error: str = "", result: dict[str, Any] | None = None) -> bool:
    """Record the outcome of the IPR's deployment (if it has one that is not final); the IPR side calls this in the
    transaction that moves the IPR, so the two never disagree. Events and metrics follow the commit."""
    deployment = Deployment.objects.select_related("environment").filter(ipr_id=ipr_id).first()
    if deployment is None or deployment.status in FINAL_DEPLOYMENT_STATUSES:
        return False
    status = DS.SUCCEEDED if succeeded else DS.FAILED
    _finalise(deployment, status=status, error=error, result=result)
    return True


def deployment_cancel(*, ipr_id: int, reason: str) -> bool:
    """Stop the IPR's deployment (an admin aborted it, or another IPR took the environment over). A worker still
    running it finds its lease gone at the next heartbeat and stops scheduling."""
    deployment = Deployment.objects.select_related("environment").filter(ipr_id=ipr_id).first()
    if deployment is None or deployment.status in FINAL_DEPLOYMENT_STATUSES:
        return False
    _finalise(deployment, status=DS.CANCELLED, error=reason, result=None)
    return True


def _finalise(deployment: Deployment, *, status: str, error: str, result: dict[str, Any] | None) -> None:
    now = timezone.now()
    changed = Deployment.objects.filter(pk=deployment.pk, status=deployment.status).update(
        status=status,
        finished_at=now,
        error=error[:10000],
        result=result,
        lease_owner="",
        lease_expires_at=None,
        updated_at=now,
    )
    if changed != 1:
        return
    if status != DS.SUCCEEDED:
        # Whatever never ran is not going to: say so, so progress views show no forever-pending rows.
        why = "was cancelled" if status == DS.CANCELLED else "failed"
        ResourceOperation.objects.filter(deployment=deployment, status=OS.PENDING).update(
            status=OS.SKIPPED, error=f"not run: the deployment {why}"
        )
    env, engine = deployment.environment.name, deployment.environment.engine
    started = deployment.started_at or deployment.created_at
    duration = max(0.0, (now - started).total_seconds())
    outcome = {DS.SUCCEEDED: "succeeded", DS.FAILED: "failed", DS.CANCELLED: "cancelled"}[status]

    def count() -> None:
        metrics.DEPLOYMENTS.labels(environment=env, engine=engine, result=outcome).inc()
        metrics.DEPLOYMENT_DURATION.labels(engine=engine, result=outcome).observe(duration)

    transaction.on_commit(count)
    publish(
        _event_group(deployment.ipr_id),
        {
            "type": "deployment.finished",
            "ipr": deployment.ipr_id,
            "deployment": deployment.pk,
            "status": status,
            "error": error[:2000],
            "duration_s": round(duration, 3),
            "at": now.isoformat(),
        },
    )


def deployments_stalled(*, now: Any = None) -> list[int]:
    """IPR ids whose deployment needs a worker: running with an expired lease (its worker died), or opened and
    never claimed for a whole lease (the worker died between opening and claiming)."""
    now = now or timezone.now()
    stale_open = now - timedelta(seconds=lease_seconds())
    rows = Deployment.objects.filter(
        Q(status=DS.RUNNING, lease_expires_at__lt=now) | Q(status=DS.QUEUED, created_at__lt=stale_open)
    ).order_by("pk")
    return list(rows.values_list("ipr_id", flat=True))


# --- running the plan -------------------------------------------------------------------------------------------


@dataclass
class _Op:
    """The scheduler's view of one operation (the row is the truth; this avoids re-reading it every tick)."""

    pk: int
    resource: str
    type: str
    action: str
    position: int
    depends_on: list[str]
    spec: dict[str, Any]
    status: str
    attempts: int
    prerequisites: list[str] = field(default_factory=list)
    priority: int = 0


@dataclass
class _OpResult:
    status: str  # succeeded | failed | lease_lost
    error: str = ""


def _prerequisites(ops: dict[str, _Op]) -> None:
    """Fill each operation's prerequisites: the DAG the executor walks.

    create / update / replace wait for what they depend on. A delete waits for every create / update / replace (a
    kept resource may still point at what goes away until it is changed) and for the deletes of the resources that
    depended on it: dependents go first, in reverse dependency order.
    """
    applying = [name for name, op in ops.items() if op.action != DELETE]
    for op in ops.values():
        if op.action != DELETE:
            op.prerequisites = [d for d in op.depends_on if d in ops and ops[d].action != DELETE]
        else:
            dependents = [o.resource for o in ops.values() if o.action == DELETE and op.resource in o.depends_on]
            op.prerequisites = applying + dependents


def _priorities(ops: dict[str, _Op]) -> None:
    """Priority = length of the longest chain of operations waiting on this one (critical path first)."""
    waiting_on: dict[str, list[str]] = {name: [] for name in ops}
    for op in ops.values():
        for pre in op.prerequisites:
            waiting_on[pre].append(op.resource)
    memo: dict[str, int] = {}
    for start in sorted(ops, key=lambda n: ops[n].position, reverse=True):
        # Iterative post-order DFS: a 200-deep chain must not hit Python's recursion limit.
        stack = [(start, False)]
        while stack:
            name, expanded = stack.pop()
            if name in memo:
                continue
            if expanded:
                memo[name] = 1 + max((memo[w] for w in waiting_on[name]), default=0)
                continue
            stack.append((name, True))
            stack.extend((w, False) for w in waiting_on[name] if w not in memo)
    for name, op in ops.items():
        op.priority = memo.get(name, 1)


def _backoff(attempt: int) -> float:
    base = float(settings.AICDN_DEPLOY_RETRY_BACKOFF)
    cap = float(settings.AICDN_DEPLOY_RETRY_BACKOFF_MAX)
    delay = min(cap, base * (2 ** (attempt - 1)))
    return delay * random.uniform(0.8, 1.2)  # jitter, so retries of parallel operations spread out


class _Run:
    """One worker's run of one deployment."""

    def __init__(self, deployment: Deployment, owner: str, engine: Engine, ctx: EngineContext) -> None:
        self.deployment = deployment
        self.owner = owner[:200]
        self.engine = engine
        self.ctx = ctx
        self.environment = deployment.environment
        self.kind = deployment.environment.engine
        self.group = _event_group(deployment.ipr_id)
        self.max_attempts = int(settings.AICDN_DEPLOY_MAX_ATTEMPTS)

    # -- persistence, each write fenced by the lease: a worker that lost the deployment writes nothing more

    def _fenced(self, op: _Op) -> Any:
        return ResourceOperation.objects.filter(
            pk=op.pk, deployment__status=DS.RUNNING, deployment__lease_owner=self.owner
        )

    def _event(self, op: _Op, status: str, attempt: int, error: str = "") -> None:
        publish(
            self.group,
            {
                "type": "deployment.operation",
                "ipr": self.deployment.ipr_id,
                "deployment": self.deployment.pk,
                "resource": op.resource,
                "action": op.action,
                "status": status,
                "attempt": attempt,
                "error": error[:2000],
                "at": _now_iso(),
            },
        )

    def _call(self, op: _Op) -> dict[str, Any]:
        """One engine call for the operation; returns what to store as its output."""

        def timed(operation: str, call: Callable[[], Any]) -> Any:
            with metrics.ENGINE_LATENCY.labels(engine=self.kind, operation=operation).time():
                return call()

        if op.action in (CREATE, UPDATE):
            fn = self.engine.create if op.action == CREATE else self.engine.update
            res = timed(op.action, lambda: fn(op.spec, self.ctx))
            return {"result": res, "deleted_ids": []}
        if op.action == REPLACE:
            # Replaced = removed, then made again from the new entry; both halves are idempotent, so a retry (or a
            # resumed run) that finds the old objects gone just creates.
            gone = timed("delete", lambda: self.engine.delete(op.resource, self.ctx))
            res = timed("create", lambda: self.engine.create(op.spec, self.ctx))
            return {"result": res, "deleted_ids": gone.deleted_ids}
        gone = timed("delete", lambda: self.engine.delete(op.resource, self.ctx))
        return {"result": None, "deleted_ids": gone.deleted_ids}

    def run_operation(self, op: _Op) -> _OpResult:
        try:
            return self._run_operation(op)
        except Exception as exc:  # a bug or a database outage: the operation failed, the scheduler stops cleanly
            logger.exception("operation %s %s of deployment %s crashed", op.action, op.resource, self.deployment.pk)
            return _OpResult(OS.FAILED, f"{type(exc).__name__}: {exc}")

    def _run_operation(self, op: _Op) -> _OpResult:
        started = timezone.now()
        t0 = time.monotonic()
        attempt = op.attempts + 1
        if (
            not self._fenced(op)
            .filter(status=OS.PENDING)
            .update(status=OS.RUNNING, started_at=started, attempts=attempt, error="")
        ):
            return _OpResult("lease_lost")
        self._event(op, OS.RUNNING, attempt)
        tries = 0
        while True:
            tries += 1
            try:
                outcome = self._call(op)
                break
            except EngineError as exc:
                message = exc.message
                if exc.permanent or tries >= self.max_attempts:
                    metrics.RESOURCE_OPERATIONS.labels(engine=self.kind, operation=op.action, result="error").inc()
                    why = "" if exc.permanent else f" (gave up after {tries} attempts)"
                    return self._failed(op, f"{message}{why}", attempt, t0)
                metrics.RESOURCE_OPERATIONS.labels(engine=self.kind, operation=op.action, result="retry").inc()
                self._event(op, "retrying", attempt, message)
                time.sleep(_backoff(tries))
                attempt += 1
                if not self._fenced(op).update(attempts=attempt, error=message[:10000]):
                    return _OpResult("lease_lost")
            except ApplicationError as exc:
                metrics.RESOURCE_OPERATIONS.labels(engine=self.kind, operation=op.action, result="error").inc()
                return self._failed(op, exc.message, attempt, t0)
        metrics.RESOURCE_OPERATIONS.labels(engine=self.kind, operation=op.action, result="ok").inc()
        return self._succeeded(op, outcome, attempt, t0)

    def _succeeded(self, op: _Op, outcome: dict[str, Any], attempt: int, t0: float) -> _OpResult:
        res = outcome["result"]
        output: dict[str, Any] = {"deleted_ids": outcome["deleted_ids"]} if outcome["deleted_ids"] else {}
        if res is not None:
            output.update(
                object_ids=res.object_ids,
                outputs=res.outputs,
                status=res.status,
                adopted=res.adopted,
                changed=res.changed,
            )
        with transaction.atomic():
            done = self._fenced(op).update(
                status=OS.SUCCEEDED,
                output=output,
                error="",
                finished_at=timezone.now(),
                duration_ms=(time.monotonic() - t0) * 1000,
            )
            if not done:
                # Applied, but another worker holds the deployment now: it re-runs this (idempotent) operation and
                # records the state itself.
                return _OpResult("lease_lost")
            if op.action == DELETE:
                resource_state_delete(environment=self.environment, name=op.resource)
            else:
                self._record_ready(op, res)
            self._event(op, OS.SUCCEEDED, attempt)
        return _OpResult(OS.SUCCEEDED)

    def _record_ready(self, op: _Op, res: Any) -> None:
        """`resource_state_record(status=READY, result=res)` in one statement (INSERT ... ON CONFLICT DO UPDATE).

        For READY the recorded spec is always the new entry, so no read of the existing row is needed; the service
        reads it first and then runs update_or_create (a SELECT, a SELECT FOR UPDATE and two savepoints): six round
        trips per operation, on the path of every deployed resource. Failures still go through the service.
        """
        ResourceState.objects.bulk_create(
            [
                ResourceState(
                    environment=self.environment,
                    name=op.spec["name"],
                    type=op.spec["type"],
                    spec=dict(op.spec),
                    status=ResourceStatus.READY,
                    deployment_id=self.ctx.deployment_id,
                    error="",
                    outputs=res.outputs,
                    engine_object_ids=res.object_ids,
                )
            ],
            update_conflicts=True,
            unique_fields=["environment", "name"],
            update_fields=[
                "type",
                "spec",
                "status",
                "deployment_id",
                "error",
                "outputs",
                "engine_object_ids",
                "updated_at",
            ],
        )

    def _failed(self, op: _Op, error: str, attempt: int, t0: float) -> _OpResult:
        with transaction.atomic():
            done = self._fenced(op).update(
                status=OS.FAILED,
                error=error[:10000],
                finished_at=timezone.now(),
                duration_ms=(time.monotonic() - t0) * 1000,
            )
            if not done:
                return _OpResult("lease_lost")
            resource = op.spec if op.action != DELETE else {"name": op.resource, "type": op.type}
            # A failed create leaves a `failed` record (the next plan replaces it); a failed update or delete keeps
            # the spec that is deployed and marks it failed.
            resource_state_record(
                environment=self.environment,
                resource=resource,
                status=ResourceStatus.FAILED,
                deployment_id=self.ctx.deployment_id,
                error=error,
            )
            self._event(op, OS.FAILED, attempt, error)
        return _OpResult(OS.FAILED, error)


class _Pool:
    """Threads that run operations for one deployment run. Each keeps its own database connection for the whole run
    (opening one per operation costs a PostgreSQL backend fork each time) and closes it when the run ends."""

    def __init__(self, size: int, work: Callable[[_Op], _OpResult], *, name: str) -> None:
        self._work = work
        self._tasks: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[_Op, _OpResult]] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        try:
            while (op := self._tasks.get()) is not None:
                self._done.put((op, self._work(op)))
        finally:
            connections.close_all()

    def submit(self, op: _Op) -> None:
        self._tasks.put(op)

    def results(self, timeout: float) -> list[tuple[_Op, _OpResult]]:
        """Finished operations: waits up to `timeout` s for the first, then takes whatever else is done."""
        try:
            found = [self._done.get(timeout=timeout)] if timeout > 0 else [self._done.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                found.append(self._done.get_nowait())
            except queue.Empty:
                return found

    def shutdown(self) -> None:
        """Let operations in flight finish, then stop every thread."""
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join()


def _load_ops(deployment: Deployment) -> dict[str, _Op]:
    rows = ResourceOperation.objects.filter(deployment=deployment).order_by("position")
    return {
        r.resource: _Op(
            pk=r.pk,
            resource=r.resource,
            type=r.type,
            action=r.action,
            position=r.position,
            depends_on=list(r.depends_on or []),
            spec=dict(r.spec or {}),
            status=r.status,
            attempts=r.attempts,
        )
        for r in rows
    }


def _summary(ops: Iterable[_Op], deployment: Deployment, started: float) -> dict[str, Any]:
    ops = list(ops)
    counts: dict[str, int] = {}
    for op in ops:
        counts[op.status] = counts.get(op.status, 0) + 1
    return {
        "deployment": deployment.pk,
        "attempt": deployment.attempt,
        "operations": counts,
        "failed": [op.resource for op in ops if op.status == OS.FAILED],
        "run_seconds": round(time.monotonic() - started, 3),
    }


def deployment_execute(
    *,
    deployment_id: int,
    owner: str,
    heartbeat: Callable[[], None] | None = None,
    parallelism: int | None = None,
) -> DeploymentOutcome:
    """Apply the claimed deployment's remaining operations; returns the outcome without recording it (the caller
    does, with the IPR). Raises LeaseLost when another worker took the deployment over during the run.

    `heartbeat` is called with each lease renewal (the IPR side renews the environment's deploy lock there); if it
    raises, the run stops as if the lease were lost.
    """
    started = time.monotonic()
    deployment = Deployment.objects.select_related("environment").get(pk=deployment_id)
    if deployment.status != DS.RUNNING or deployment.lease_owner != owner[:200]:
        raise LeaseLost(f"deployment {deployment_id} is not claimed by {owner}")
    parallelism = max(1, int(parallelism or settings.AICDN_DEPLOY_PARALLELISM))
    # Operations a dead worker left running are run again: every engine operation is idempotent.
    ResourceOperation.objects.filter(deployment=deployment, status=OS.RUNNING).update(status=OS.PENDING)
    ops = _load_ops(deployment)
    _prerequisites(ops)
    _priorities(ops)
    failures = [op for op in ops.values() if op.status == OS.FAILED]
    try:
        engine, ctx = environment_engine(deployment.environment, deployment_id=f"dep-{deployment.pk}")
    except ApplicationError as exc:
        return DeploymentOutcome(deployment.pk, False, exc.message, _summary(ops.values(), deployment, started))

    run = _Run(deployment, owner, engine, ctx)
    interval = max(0.5, lease_seconds() / 4)
    last_beat = time.monotonic()
    lease_lost: str | None = None
    in_flight = 0
    todo = sum(1 for op in ops.values() if op.status == OS.PENDING)
    pool = _Pool(min(parallelism, max(1, todo)), run.run_operation, name=f"deploy-{deployment.pk}")
    try:
        while True:
            if not failures and lease_lost is None:
                ready = [
                    op
                    for op in ops.values()
                    if op.status == OS.PENDING and all(ops[p].status in _DONE for p in op.prerequisites)
                ]
                ready.sort(key=lambda o: (-o.priority, o.position))
                for op in ready[: parallelism - in_flight]:
                    op.status = OS.RUNNING
                    pool.submit(op)
                    in_flight += 1
            if not in_flight:
                break
            timeout = max(0.0, interval - (time.monotonic() - last_beat))
            for op, outcome in pool.results(timeout):
                in_flight -= 1
                if outcome.status == "lease_lost":
                    lease_lost = lease_lost or f"lost the lease while running {op.resource}"
                    continue
                op.status = outcome.status
                if outcome.status == OS.FAILED:
                    failures.append(op)
            if time.monotonic() - last_beat >= interval and lease_lost is None:
                last_beat = time.monotonic()
                try:
                    deployment_heartbeat(deployment_id=deployment.pk, owner=owner)
                    if heartbeat is not None:
                        heartbeat()
                except LeaseLost as exc:
                    lease_lost = str(exc)
                except ApplicationError as exc:  # the environment's deploy lock is gone (expired, released)
                    lease_lost = exc.message
    finally:
        pool.shutdown()
        close = getattr(engine, "close", None)
        if callable(close):
            close()
    if lease_lost is not None:
        raise LeaseLost(lease_lost)
    summary = _summary(ops.values(), deployment, started)
    if failures:
        first = min(failures, key=lambda o: o.position)
        failed_row = ResourceOperation.objects.get(pk=first.pk)
        pending = sum(1 for op in ops.values() if op.status == OS.PENDING)
        error = f"{first.action} {first.resource} failed: {failed_row.error}"
        if pending:
            error += f"; {pending} operation(s) not run"
        return DeploymentOutcome(deployment.pk, False, error, summary)
    stuck = [op.resource for op in ops.values() if op.status == OS.PENDING]
    if stuck:  # unreachable with a plan from compute_plan (acyclic), kept as a guard against a hand-made one
        return DeploymentOutcome(deployment.pk, False, f"unsatisfiable dependencies: {', '.join(stuck)}", summary)
    return DeploymentOutcome(deployment.pk, True, "", summary)
