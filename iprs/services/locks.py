"""The per-environment deploy lock: acquire, heartbeat, release (by the holder, or by an admin), lease expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from aicdn_project import roles
from aicdn_project.audit import audit_record
from aicdn_project.errors import Conflict, PermissionDenied
from iprs.models import IPR, EnvironmentLock

# A holder that stops heartbeating for this long is presumed dead and its lock is free again.
DEFAULT_LEASE_SECONDS = 300


def lock_row_for_update(environment: Any) -> EnvironmentLock:
    """The environment's lock row, created on first use, locked for the rest of the caller's transaction."""
    EnvironmentLock.objects.get_or_create(environment_id=environment.pk)
    return EnvironmentLock.objects.select_for_update().get(environment_id=environment.pk)


def lock_is_held(lock: EnvironmentLock, *, now: Any = None) -> bool:
    now = now or timezone.now()
    return lock.holder_ipr_id is not None and lock.expires_at is not None and lock.expires_at > now


def _lock_view(lock: EnvironmentLock) -> dict[str, Any]:
    return {
        "holder_ipr": lock.holder_ipr_id,
        "holder": lock.holder_name,
        "acquired_at": lock.acquired_at,
        "expires_at": lock.expires_at,
    }


def _audit(actor: Any, action: str, environment: Any, before: Any, after: Any) -> None:
    audit_record(
        actor=actor,
        action=action,
        object_type="environment",
        object_id=environment.pk,
        object_repr=environment.name,
        before=before,
        after=after,
    )


def environment_lock_acquire(
    *, environment: Any, ipr: IPR, holder_name: str = "", lease_seconds: int = DEFAULT_LEASE_SECONDS
) -> EnvironmentLock:
    """Take the lock for `ipr`; re-entrant for the same IPR (a resumed run); an expired lease is taken over."""
    with transaction.atomic():
        lock = lock_row_for_update(environment)
        now = timezone.now()
        if lock_is_held(lock, now=now) and lock.holder_ipr_id != ipr.pk:
            raise Conflict(
                f"{environment.name} is locked by IPR #{lock.holder_ipr_id} ({lock.holder_name or 'unknown'}) "
                f"since {lock.acquired_at:%Y-%m-%d %H:%M:%S} UTC",
                code="environment_locked",
                details=_lock_view(lock),
            )
        before = _lock_view(lock) if lock.holder_ipr_id is not None else None
        took_over = lock.holder_ipr_id is not None and lock.holder_ipr_id != ipr.pk
        if lock.holder_ipr_id != ipr.pk:
            lock.acquired_at = now
        lock.holder_ipr = ipr
        lock.holder_user_id = ipr.queued_by_id
        lock.holder_name = holder_name or (ipr.queued_by.get_username() if ipr.queued_by is not None else "")
        lock.heartbeat_at = now
        lock.expires_at = now + timedelta(seconds=lease_seconds)
        lock.save()
        after = _lock_view(lock)
        if took_over:
            after["took_over_expired_lock_of_ipr"] = before["holder_ipr"] if before else None
        _audit(ipr.queued_by or holder_name or "system", "environment.lock_acquired", environment, before, after)
        return lock


def environment_lock_heartbeat(
    *, environment: Any, ipr: IPR, lease_seconds: int = DEFAULT_LEASE_SECONDS
) -> EnvironmentLock:
    """Extend the holder's lease. Not audited: it changes no holder, and a long run would flood the chain."""
    with transaction.atomic():
        lock = lock_row_for_update(environment)
        now = timezone.now()
        if lock.holder_ipr_id != ipr.pk or not lock_is_held(lock, now=now):
            raise Conflict(
                f"IPR #{ipr.pk} does not hold the lock of {environment.name} (it expired or was released)",
                code="lock_lost",
                details=_lock_view(lock),
            )
        lock.heartbeat_at = now
        lock.expires_at = now + timedelta(seconds=lease_seconds)
        lock.save(update_fields=["heartbeat_at", "expires_at"])
        return lock


def environment_lock_release(*, environment: Any, actor: Any, ipr: IPR | None = None, reason: str = "") -> bool:
    """The holder IPR releases its lock; without `ipr`, an admin force-releases whatever holds it. Audited."""
    with transaction.atomic():
        lock = lock_row_for_update(environment)
        if ipr is None:
            if not roles.is_admin(actor):
                raise PermissionDenied("only admins may release another holder's deploy lock", code="not_admin")
        elif lock.holder_ipr_id != ipr.pk:
            return False  # already released or taken over after expiry: nothing of ours to release
        if lock.holder_ipr_id is None:
            return False
        before = _lock_view(lock)
        lock.holder_ipr = None
        lock.holder_user = None
        lock.holder_name = ""
        lock.acquired_at = lock.heartbeat_at = lock.expires_at = None
        lock.save()
        after: dict[str, Any] = {"released": True, "forced": ipr is None}
        if reason:
            after["reason"] = reason
        _audit(actor, "environment.lock_released", environment, before, after)
        return True
