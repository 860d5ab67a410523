"""Benchmark: `manage.py eval_generation` on the shipped cases (tests/llm/eval_cases.yaml) with the default local
model, which this script starts on a free port (installing it first if needed) unless --base-url names a running
server. Prints the command's per-case lines, the score and the median seconds per request; goals: at least 90 %
fully correct, every output a valid blueprint, median at most 3 s with a warm prompt cache.

Run: .venv/bin/python bench/generation.py [--base-url URL] [--cases FILE]   (prints figures; not a test)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aicdn_project.settings")
os.environ.setdefault("SECRET_KEY", "bench-generation-" + uuid.uuid4().hex)  # this process only reads settings

import django  # noqa: E402

django.setup()

from tests.stress.live import free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", default="", help="a running model server")
    parser.add_argument("--cases", default=str(ROOT / "tests" / "llm" / "eval_cases.yaml"))
    args = parser.parse_args()
    server = None
    base_url = args.base_url.rstrip("/")
    if not base_url:
        from llm.local_model import LocalServerProcess

        server = LocalServerProcess(port=free_port()).start()  # installs, loads and warms the prompt cache
        base_url = server.base_url
    try:
        command = [sys.executable, str(ROOT / "manage.py"), "eval_generation", args.cases, "--base-url", base_url]
        return subprocess.run(command, cwd=ROOT, check=False).returncode
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
