"""Tampering with audit rows directly in the database (edit, delete, reorder) is reported by audit_verify."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from aicdn_project.audit import audit_verify, compute_hash, event_payload
from aicdn_project.models import AppendOnlyError, AuditEvent
from iprs import services

TABLE = AuditEvent._meta.db_table


@pytest.fixture
def trail(open_ipr, users, enqueued):
    """A real trail from a whole IPR life: created, opened, reviewed, approved, queued."""
    ipr = open_ipr()
    services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk, comment="lgtm")
    services.ipr_deploy(actor=users["operator"], ipr_id=ipr.pk)
    events = list(AuditEvent.objects.order_by("seq"))
    assert len(events) >= 6
    report = audit_verify()
    assert report.ok and report.checked == len(events)
    return events


def _sql(statement: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement.replace("{t}", connection.ops.quote_name(TABLE)), params)


def test_the_model_refuses_updates_and_deletes(trail):
    event = trail[0]
    event.action = "something.else"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()


def test_an_edited_row_is_reported(trail):
    target = trail[3]
    _sql("UPDATE {t} SET actor_name = %s WHERE seq = %s", ["mallory", target.seq])
    report = audit_verify()
    assert not report.ok
    assert report.broken_at == target.seq
    assert "content does not match" in report.reason
    with pytest.raises(CommandError, match=f"#{target.seq}"):
        call_command("audit_verify")


def test_an_edited_row_with_a_recomputed_hash_breaks_the_next_link(trail):
    target = trail[2]
    forged = AuditEvent.objects.get(pk=target.pk)
    forged.after = {"forged": True}
    new_hash = compute_hash(forged.prev_hash, event_payload(forged))
    _sql("UPDATE {t} SET after = %s, hash = %s WHERE seq = %s", ['{"forged": true}', new_hash, target.seq])
    report = audit_verify()
    assert not report.ok
    assert report.broken_at == target.seq + 1
    assert "does not link" in report.reason


def test_a_deleted_row_is_reported(trail):
    target = trail[2]
    _sql("DELETE FROM {t} WHERE seq = %s", [target.seq])
    report = audit_verify()
    assert not report.ok
    assert report.broken_at == target.seq + 1
    assert "sequence gap" in report.reason


def test_a_deleted_last_row_is_reported(trail):
    last = trail[-1]
    _sql("DELETE FROM {t} WHERE seq = %s", [last.seq])
    report = audit_verify()
    assert not report.ok
    assert "events removed" in report.reason


def test_reordered_rows_are_reported(trail):
    a, b = trail[1], trail[2]
    # Swap the two rows' positions (seq is unique, so move one aside first).
    _sql("UPDATE {t} SET seq = %s WHERE seq = %s", [10_000_000, a.seq])
    _sql("UPDATE {t} SET seq = %s WHERE seq = %s", [a.seq, b.seq])
    _sql("UPDATE {t} SET seq = %s WHERE seq = %s", [b.seq, 10_000_000])
    report = audit_verify()
    assert not report.ok
    assert report.broken_at == a.seq
