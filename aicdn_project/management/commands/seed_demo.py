"""Creates the demo users on first run (passwords generated, stored under var/ mode 600) and prints them."""

from __future__ import annotations

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from aicdn_project import roles

DEMO_USERS = (
    ("requester", roles.REQUESTERS, False),
    ("reviewer1", roles.REVIEWERS, False),
    ("reviewer2", roles.REVIEWERS, False),
    ("operator", roles.OPERATORS, False),
    ("admin", roles.ADMINS, True),
)


class Command(BaseCommand):
    help = "Create the demo users once and print their credentials."

    def handle(self, *args, **options) -> None:
        path = settings.VAR_DIR / "demo-credentials.json"
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        User = get_user_model()
        with transaction.atomic():
            for username, role, superuser in DEMO_USERS:
                user = User.objects.filter(username=username).first()
                if user is None:
                    password = secrets.token_urlsafe(12)
                    user = User.objects.create_user(
                        username=username, password=password, is_staff=True, is_superuser=superuser
                    )
                    user.groups.add(Group.objects.get(name=role))
                    stored[username] = password
        path.write_text(json.dumps(stored, indent=2))
        path.chmod(0o600)
        lines = ["Demo users (role: username / password):"]
        for username, role, _ in DEMO_USERS:
            password = stored.get(username, "(set before this install; unchanged)")
            lines.append(f"  {role[:-1]:<10} {username:<10} {password}")
        lines.append(f"  (kept in {path})")
        self.stdout.write("\n".join(lines))
