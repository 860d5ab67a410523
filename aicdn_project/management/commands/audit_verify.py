"""manage.py audit_verify: recompute the audit hash chain and report the first broken link."""

from django.core.management.base import BaseCommand, CommandError

from aicdn_project.audit import audit_verify


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain; exits non-zero at the first broken link."

    def handle(self, *args, **options) -> None:
        report = audit_verify()
        if not report.ok:
            raise CommandError(f"audit chain BROKEN at event #{report.broken_at}: {report.reason}")
        self.stdout.write(f"audit chain OK: {report.checked} events verified")
