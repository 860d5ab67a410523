"""Shared set-up of the deployment benchmarks: Django with a scratch database of its own, made and dropped here.

The scratch database is made with Django's test-database machinery: `aicdn_<bench>_<pid>` on the PostgreSQL server
of DATABASE_URL, or a SQLite file in a temporary directory. Events go to the Redis named by REDIS_URL, else the
embedded one under var/ (start it with `.venv/bin/python -m aicdn_project.launcher redis`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@contextmanager
def scratch_django(prefix: str) -> Iterator[str]:
    """Set up Django on a fresh, migrated scratch database; yields its DATABASE_URL; drops it afterwards."""
    workdir = tempfile.mkdtemp(prefix=f"aicdn-{prefix}-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aicdn_project.settings")
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 48)
    os.environ["AICDN_KEY_PREFIX"] = f"aicdn-{prefix}-{os.getpid()}"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(workdir, "prometheus")
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    import django
    from django.conf import settings

    django.setup()
    from django.db import connection

    from tests.deployments.workers import database_url

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db["TEST"]["NAME"] = os.path.join(workdir, "bench.sqlite3")
    else:  # never the test database a concurrent pytest run uses
        db["TEST"]["NAME"] = f"aicdn_{prefix.replace('-', '_')}_{os.getpid()}"
    old_name = db["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield database_url(settings.DATABASES["default"])
    except BaseException:
        print(f"scratch files (worker logs) kept in {workdir}", file=sys.stderr)
        raise
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    shutil.rmtree(workdir, ignore_errors=True)


def machine() -> str:
    import platform

    cpus = os.cpu_count()
    return f"{platform.node()}: {cpus} CPU(s), Python {platform.python_version()}, {platform.platform()}"
