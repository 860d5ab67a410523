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

import heapq
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
from django.db import IntegrityError, connection, connections, transaction
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


# The writer stores finished operations in batches: at most STORE_BATCH per transaction, gathered for STORE_LINGER s.
STORE_BATCH = 64
STORE_LINGER = 0.005
_FLUSH = object()


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
    outcome = {DS.SUCCEEDED.value: "succeeded", DS.FAILED.value: "failed", DS.CANCELLED.value: "cancelled"}[status]

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
    started: float = 0.0  # monotonic time it was marked running in this run
    error: str = ""  # why it failed in this run


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
    delay = min(cap, base * 2.0 ** (attempt - 1))
    return delay * random.uniform(0.8, 1.2)  # jitter, so retries of parallel operations spread out


class _SQL:
    """The executor's per-operation statements, written out (only identifiers are formatted in: every value is a
    query parameter).

    They run once or twice for every resource operation, on threads sharing one GIL with the engine calls; built
    through the ORM each took 0.3-1 ms of CPU to compile (an UPDATE filtered across the lease join compiles a
    subquery), which bench/deploy.py measured as the executor's main overhead. Values go through the model fields'
    own database preparation, so both backends get what the ORM would send.
    """

    @staticmethod
    def _q(name: str) -> str:
        return connection.ops.quote_name(name)

    @classmethod
    def _tables(cls) -> tuple[str, str]:
        return cls._q(ResourceOperation._meta.db_table), cls._q(Deployment._meta.db_table)

    @classmethod
    def _held(cls) -> str:
        # The lease holder's condition on the deployment row: [deployment id, "running", owner].
        return f"SELECT 1 FROM {cls._tables()[1]} WHERE id = %s AND status = %s AND lease_owner = %s"  # noqa: S608

    @classmethod
    def mark_running(cls, count: int) -> str:
        # [status, started_at, updated_at, *ids, "pending", *lease]
        ops = cls._tables()[0]
        return (
            f"UPDATE {ops} SET status = %s, started_at = %s, updated_at = %s, attempts = attempts + 1, "  # noqa: S608
            f"error = '' WHERE id IN ({', '.join(['%s'] * count)}) AND status = %s AND EXISTS ({cls._held()})"
        )

    @classmethod
    def lease_held(cls) -> str:
        # [*lease]; locks the deployment row where the database can.
        return cls._held() + (" FOR UPDATE" if connection.features.has_select_for_update else "")

    @classmethod
    def store_finished(cls) -> str:
        # [status, output, error, finished_at, duration_ms, updated_at, id]
        ops = cls._tables()[0]
        return (
            f"UPDATE {ops} SET status = %s, output = %s, error = %s, finished_at = %s, duration_ms = %s, "  # noqa: S608
            "updated_at = %s WHERE id = %s"
        )

    @staticmethod
    def datetime(value: Any) -> Any:
        return ResourceOperation._meta.get_field("finished_at").get_db_prep_save(value, connection)

    @staticmethod
    def json(value: Any) -> Any:
        return ResourceOperation._meta.get_field("output").get_db_prep_save(value, connection)


@dataclass
class _Finished:
    """What a slot thread hands back for one operation: the engine's answer, not yet stored (the writer stores it)."""

    op: _Op
    status: str  # succeeded | failed | lease_lost
    attempt: int
    outcome: dict[str, Any] | None = None
    error: str = ""
    finished_at: Any = None
    duration_ms: float = 0.0


class _Run:
    """One worker's run of one deployment: the engine calls of its operations and the rows that record them.

    The scheduler marks a batch of ready operations running in one statement, slot threads make the engine calls
    (at most `parallelism` at a time) and hand each answer straight back, and one writer thread stores finished
    operations in batches (a transaction each). So an engine slot is never held by bookkeeping, and dependents start
    as soon as the engine answered. An operation whose answer is not stored yet when the worker dies is `running` in
    the database: the next holder runs it again, which every engine operation allows (idempotent through labels).
    """

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

    @property
    def _lease(self) -> list[Any]:
        return [self.deployment.pk, DS.RUNNING, self.owner]

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

    def mark_running(self, ops: list[_Op]) -> bool:
        """Mark a batch of pending operations running (one statement, fenced by the lease); False when the lease is
        gone. (Fewer rows than asked would mean another holder touched them: then those that were marked are reset
        to pending by whoever runs the deployment next, like any operation a worker left running.)"""
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                _SQL.mark_running(len(ops)),
                [OS.RUNNING, *[_SQL.datetime(now)] * 2, *[op.pk for op in ops], OS.PENDING, *self._lease],
            )
            if cursor.rowcount != len(ops):
                return False
        started = time.monotonic()
        for op in ops:
            op.attempts += 1
            op.started = started
            self._event(op, OS.RUNNING, op.attempts)
        return True

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

    def run_operation(self, op: _Op) -> _Finished:
        """The engine call(s) of one operation marked running, with retries of transient errors. Stores nothing on
        the way out: the writer does (retries record their attempt count as they happen)."""
        attempt = op.attempts
        try:
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
                        return self._finished(op, OS.FAILED, attempt, error=f"{message}{why}")
                    metrics.RESOURCE_OPERATIONS.labels(engine=self.kind, operation=op.action, result="retry").inc()
                    self._event(op, "retrying", attempt, message)
                    time.sleep(_backoff(tries))
                    attempt += 1
                    if not self._fenced(op).update(attempts=attempt, error=message[:10000]):
                        return _Finished(op, "lease_lost", attempt)
                except ApplicationError as exc:
                    metrics.RESOURCE_OPERATIONS.labels(engine=self.kind, operation=op.action, result="error").inc()
                    return self._finished(op, OS.FAILED, attempt, error=exc.message)
        except Exception as exc:  # a bug or a database outage: the operation failed, the scheduler stops cleanly
            logger.exception("operation %s %s of deployment %s crashed", op.action, op.resource, self.deployment.pk)
            return self._finished(op, OS.FAILED, attempt, error=f"{type(exc).__name__}: {exc}")
        metrics.RESOURCE_OPERATIONS.labels(engine=self.kind, operation=op.action, result="ok").inc()
        return self._finished(op, OS.SUCCEEDED, attempt, outcome=outcome)

    def _finished(
        self, op: _Op, status: str, attempt: int, *, outcome: dict[str, Any] | None = None, error: str = ""
    ) -> _Finished:
        return _Finished(
            op,
            status,
            attempt,
            outcome=outcome,
            error=error,
            finished_at=timezone.now(),
            duration_ms=(time.monotonic() - op.started) * 1000,
        )

    def store(self, batch: list[_Finished]) -> bool:
        """Store finished operations and the recorded state they leave, in one transaction under the lease; their
        events follow the commit. False (nothing stored) when another worker holds the deployment now: it runs these
        (idempotent) operations again and records them itself."""
        with transaction.atomic(), connection.cursor() as cursor:
            # The deployment row, locked: a claim by another worker waits for this commit (PostgreSQL; SQLite
            # serialises writers anyway), so nothing is stored for a lease that changed hands.
            cursor.execute(_SQL.lease_held(), self._lease)
            if cursor.fetchone() is None:
                return False
            rows, ready = [], []
            for item in batch:
                op = item.op
                if item.status == OS.SUCCEEDED:
                    output = self._output(item.outcome or {})
                    rows.append((OS.SUCCEEDED, output, "", item.finished_at, item.duration_ms, op.pk))
                    if op.action == DELETE:
                        resource_state_delete(environment=self.environment, name=op.resource)
                    else:
                        ready.append(self._ready_state(op, (item.outcome or {}).get("result")))
                    self._event(op, OS.SUCCEEDED, item.attempt)
                else:
                    rows.append((OS.FAILED, {}, item.error[:10000], item.finished_at, item.duration_ms, op.pk))
                    resource = op.spec if op.action != DELETE else {"name": op.resource, "type": op.type}
                    # A failed create leaves a `failed` record (the next plan replaces it); a failed update or delete
                    # keeps the spec that is deployed and marks it failed.
                    resource_state_record(
                        environment=self.environment,
                        resource=resource,
                        status=ResourceStatus.FAILED,
                        deployment_id=self.ctx.deployment_id,
                        error=item.error,
                    )
                    self._event(op, OS.FAILED, item.attempt, item.error)
            now = _SQL.datetime(timezone.now())
            cursor.executemany(
                _SQL.store_finished(),
                [
                    (status, _SQL.json(output), error, _SQL.datetime(at), ms, now, pk)
                    for status, output, error, at, ms, pk in rows
                ],
            )
            self._record_ready(ready)
        return True

    @staticmethod
    def _output(outcome: dict[str, Any]) -> dict[str, Any]:
        res = outcome.get("result")
        output: dict[str, Any] = {"deleted_ids": outcome["deleted_ids"]} if outcome.get("deleted_ids") else {}
        if res is not None:
            output.update(
                object_ids=res.object_ids,
                outputs=res.outputs,
                status=res.status,
                adopted=res.adopted,
                changed=res.changed,
            )
        return output

    def _ready_state(self, op: _Op, res: Any) -> ResourceState:
        return ResourceState(
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

    @staticmethod
    def _record_ready(states: list[ResourceState]) -> None:
        """`resource_state_record(status=READY, result=res)` for a batch, in one statement (INSERT ... ON CONFLICT
        DO UPDATE).

        For READY the recorded spec is always the new entry, so no read of the existing row is needed; the service
        reads it first and then runs update_or_create (a SELECT, a SELECT FOR UPDATE and two savepoints): six round
        trips per resource, on the path of every deployed resource. Failures still go through the service.
        """
        if not states:
            return
        ResourceState.objects.bulk_create(
            states,
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


class _Pool:
    """Threads for one deployment run: `size` slot threads making engine calls and one writer storing what they
    finished. Each keeps its own database connection for the whole run (opening one per operation costs a
    PostgreSQL backend fork each time) and closes it when the run ends.

    Everything comes back to the scheduler on one queue: ("finished", _Finished) from a slot as soon as its engine
    call returns, and ("stored", count, problem) from the writer after each batch, problem being None, "lease_lost"
    or an error message.
    """

    def __init__(self, size: int, run: _Run, *, name: str) -> None:
        self._run = run
        self._tasks: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._writes: queue.SimpleQueue[_Finished | object | None] = queue.SimpleQueue()
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._slot, name=f"{name}-{i}", daemon=True) for i in range(size)]
        self._writer = threading.Thread(target=self._write, name=f"{name}-writer", daemon=True)
        for thread in [*self._threads, self._writer]:
            thread.start()

    def _slot(self) -> None:
        try:
            while (op := self._tasks.get()) is not None:
                self._events.put(("finished", self._run.run_operation(op)))
        finally:
            connections.close_all()

    def _write(self) -> None:
        try:
            stop = False
            while not stop:
                first = self._writes.get()
                if first is None:
                    break
                if not isinstance(first, _Finished):  # a flush with nothing held
                    continue
                batch = [first]
                # What else finishes within STORE_LINGER goes in the same transaction: a transaction per operation
                # cost the writer more CPU than the operations' own rows (measured with bench/deploy.py), and a
                # few milliseconds' delay in recording is off every operation's path.
                until = time.monotonic() + STORE_LINGER
                while len(batch) < STORE_BATCH:
                    try:
                        item = self._writes.get(timeout=max(0.0, until - time.monotonic()))
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                    if not isinstance(item, _Finished):  # the end, or a flush: nothing more is running
                        break
                    batch.append(item)
                problem: str | None = None
                try:
                    if not self._run.store(batch):
                        problem = "lease_lost"
                except Exception as exc:  # a database outage: the run stops scheduling and fails
                    logger.exception("could not store %d finished operation(s)", len(batch))
                    problem = f"could not store the operations' results: {type(exc).__name__}: {exc}"
                self._events.put(("stored", len(batch), problem))
        finally:
            connections.close_all()

    def submit(self, op: _Op) -> None:
        self._tasks.put(op)

    def store(self, finished: _Finished) -> None:
        self._writes.put(finished)

    def flush(self) -> None:
        """Nothing else is running: the writer stores what it holds without waiting for more."""
        self._writes.put(_FLUSH)

    def events(self, timeout: float) -> list[tuple[Any, ...]]:
        """What came back: waits up to `timeout` s for the first, then takes whatever else is there."""
        try:
            found = [self._events.get(timeout=timeout)] if timeout > 0 else [self._events.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                found.append(self._events.get_nowait())
            except queue.Empty:
                return found

    def shutdown(self) -> None:
        """Let operations in flight finish and their results be stored, then stop every thread. (After a normal run
        the scheduler has already handed every result to the writer; after an error it may not have.)"""
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join()
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event[0] == "finished" and event[1].status != "lease_lost":
                self._writes.put(event[1])
        self._writes.put(None)
        self._writer.join()


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
    store_error: str | None = None
    in_flight = unstored = 0
    # The DAG as counters: an operation is ready when its count of unfinished prerequisites reaches 0; the ready
    # heap yields the longest remaining chain first.
    waiting_on = {name: sum(1 for p in op.prerequisites if ops[p].status not in _DONE) for name, op in ops.items()}
    dependents: dict[str, list[str]] = {name: [] for name in ops}
    for op in ops.values():
        for pre in op.prerequisites:
            dependents[pre].append(op.resource)
    ready: list[tuple[int, int, str]] = []
    for name, op in ops.items():
        if op.status == OS.PENDING and not waiting_on[name]:
            heapq.heappush(ready, (-op.priority, op.position, name))
    todo = sum(1 for op in ops.values() if op.status == OS.PENDING)
    pool = _Pool(min(parallelism, max(1, todo)), run, name=f"deploy-{deployment.pk}")
    try:
        while True:
            if not failures and lease_lost is None and store_error is None and ready and in_flight < parallelism:
                batch = [ops[heapq.heappop(ready)[2]] for _ in range(min(len(ready), parallelism - in_flight))]
                if run.mark_running(batch):
                    for op in batch:
                        op.status = OS.RUNNING
                        pool.submit(op)
                    in_flight += len(batch)
                else:
                    lease_lost = f"deployment {deployment.pk} is no longer held by {owner}"
            if not in_flight and not unstored:
                break
            if not in_flight:
                pool.flush()
            timeout = max(0.0, interval - (time.monotonic() - last_beat))
            for event in pool.events(timeout):
                if event[0] == "stored":
                    unstored -= event[1]
                    if event[2] == "lease_lost":
                        lease_lost = lease_lost or "lost the lease while storing finished operations"
                    elif event[2] is not None:
                        store_error = store_error or event[2]
                    continue
                finished: _Finished = event[1]
                op = finished.op
                in_flight -= 1
                if finished.status == "lease_lost":
                    lease_lost = lease_lost or f"lost the lease while running {op.resource}"
                    continue
                op.status = finished.status
                pool.store(finished)
                unstored += 1
                if finished.status == OS.FAILED:
                    op.error = finished.error
                    failures.append(op)
                    continue
                for name in dependents[op.resource]:
                    waiting_on[name] -= 1
                    if not waiting_on[name] and ops[name].status == OS.PENDING:
                        heapq.heappush(ready, (-ops[name].priority, ops[name].position, name))
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
        message = first.error or ResourceOperation.objects.get(pk=first.pk).error
        pending = sum(1 for op in ops.values() if op.status == OS.PENDING)
        error = f"{first.action} {first.resource} failed: {message}"
        if pending:
            error += f"; {pending} operation(s) not run"
        return DeploymentOutcome(deployment.pk, False, error, summary)
    if store_error is not None:
        return DeploymentOutcome(deployment.pk, False, store_error, summary)
    stuck = [op.resource for op in ops.values() if op.status == OS.PENDING]
    if stuck:  # unreachable with a plan from compute_plan (acyclic), kept as a guard against a hand-made one
        return DeploymentOutcome(deployment.pk, False, f"unsatisfiable dependencies: {', '.join(stuck)}", summary)
    return DeploymentOutcome(deployment.pk, True, "", summary)
