"""`manage.py llm_serve`: run llama.cpp's OpenAI-compatible server on the local model, in the foreground."""

from __future__ import annotations

import logging
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llm.local_model import RECIPES, ModelInstallError, serve_forever


class Command(BaseCommand):
    help = "Install the local model if needed, serve it on 127.0.0.1:LLM_LOCAL_PORT, warm the prompt cache."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, help="port (default: LLM_LOCAL_PORT)")
        parser.add_argument("--size", choices=sorted(RECIPES), help="model size (default: LLM_MODEL_SIZE)")
        parser.add_argument("--no-warm", action="store_true", help="skip the prompt-cache warm-up request")

    def handle(self, *args: object, **options: object) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll is noise

        def report(message: str) -> None:
            self.stdout.write(message)
            sys.stdout.flush()

        try:
            serve_forever(
                port=options.get("port"),  # type: ignore[arg-type]
                size=options.get("size"),  # type: ignore[arg-type]
                warm=not options["no_warm"],
                report=report,
            )
        except ModelInstallError as exc:
            raise CommandError(exc.message) from exc
