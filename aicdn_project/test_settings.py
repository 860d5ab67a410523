"""Thin test override: same settings, faster password hashing, an isolated key prefix on a shared Redis."""

import os
import tempfile

os.environ.setdefault("AICDN_KEY_PREFIX", f"aicdn-test-{os.getpid()}")
# Test runs keep their metric samples out of the development var/prometheus directory.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="aicdn-test-metrics-"))

from aicdn_project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Every Django test client shares one address and one window; tests/ops turns the limits on where it tests them.
RATELIMIT_ENABLE = False

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not :memory:, so threads and subprocesses in the concurrency tests share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}  # noqa: F405

if "pool" in DATABASES["default"].get("OPTIONS", {}):  # noqa: F405
    # In-process tests race 50 threads on one IPR: they wait for a pooled connection rather than fail after 0.5 s.
    DATABASES["default"]["OPTIONS"]["pool"]["timeout"] = 30  # noqa: F405
