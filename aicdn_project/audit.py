"""The append-only, hash-chained audit trail: the one writer (`audit_record`) and the verifier."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from aicdn_project.context import current_origin
from aicdn_project.models import AuditChainHead, AuditEvent

GENESIS = "0" * 64


def _canonical(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_payload(ev: AuditEvent) -> dict[str, Any]:
    return {
        "seq": ev.seq,
        "occurred_at": ev.occurred_at.isoformat(),
        "actor_id": ev.actor_id,
        "actor_name": ev.actor_name,
        "action": ev.action,
        "object_type": ev.object_type,
        "object_id": ev.object_id,
        "object_repr": ev.object_repr,
        "before": ev.before,
        "after": ev.after,
        "request_id": ev.request_id,
        "client_ip": ev.client_ip,
        "channel": ev.channel,
    }


def compute_hash(prev_hash: str, payload: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + _canonical(payload)).encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def audit_record(
    *,
    actor: Any,
    action: str,
    object_type: str,
    object_id: Any,
    object_repr: str = "",
    before: Any = None,
    after: Any = None,
) -> AuditEvent:
    """Append one event. Call inside the caller's transaction so the event and the change commit together."""
    origin = current_origin.get()
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        user = actor if getattr(actor, "is_authenticated", False) else None
        ev = AuditEvent(
            seq=head.seq + 1,
            # Microseconds dropped: the canonical form must survive a database round trip on every backend.
            occurred_at=timezone.now().replace(microsecond=0),
            actor=user,
            actor_name=user.get_username() if user else (str(actor) if actor else "system"),
            action=action,
            object_type=object_type,
            object_id=str(object_id),
            object_repr=object_repr[:200],
            before=_jsonable(before),
            after=_jsonable(after),
            request_id=origin.request_id,
            client_ip=origin.client_ip,
            channel=origin.channel,
            prev_hash=head.last_hash,
        )
        ev.hash = compute_hash(ev.prev_hash, event_payload(ev))
        ev.save()
        AuditChainHead.objects.filter(pk=1).update(seq=ev.seq, last_hash=ev.hash)
    return ev


@dataclass
class ChainReport:
    ok: bool
    checked: int
    broken_at: int | None = None
    reason: str = ""


def audit_verify() -> ChainReport:
    """Recompute the chain; report the first broken link (edited, deleted or reordered rows, or a moved head)."""
    prev = GENESIS
    expected_seq = 1
    checked = 0
    for ev in AuditEvent.objects.order_by("seq").iterator(chunk_size=2000):
        if ev.seq != expected_seq:
            return ChainReport(False, checked, ev.seq, f"sequence gap: expected #{expected_seq}, found #{ev.seq}")
        if ev.prev_hash != prev:
            return ChainReport(False, checked, ev.seq, f"event #{ev.seq} does not link to the previous event's hash")
        if compute_hash(ev.prev_hash, event_payload(ev)) != ev.hash:
            return ChainReport(False, checked, ev.seq, f"event #{ev.seq} content does not match its hash")
        prev = ev.hash
        expected_seq += 1
        checked += 1
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.seq != checked or head.last_hash != prev):
        return ChainReport(
            False, checked, checked + 1, f"chain ends at #{checked} but the head records #{head.seq}: events removed"
        )
    return ChainReport(True, checked)
