"""Thin test override: same settings, faster password hashing, an isolated key prefix on a shared Redis."""

import os

os.environ.setdefault("AICDN_KEY_PREFIX", f"aicdn-test-{os.getpid()}")

from aicdn_project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
