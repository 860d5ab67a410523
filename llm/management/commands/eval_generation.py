"""`manage.py eval_generation FILE`: score blueprint generation on a YAML set of requests with expected properties."""

from __future__ import annotations

import json
import logging

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aicdn_project.errors import ApplicationError
from llm.client import LLMClient
from llm.evaluation import CaseResult, load_cases, run


class Command(BaseCommand):
    help = "Run generation on each case of a YAML file, print per-case results, the score and the timings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="YAML list of {id, request, expect} (or {id, base, request, expect})")
        parser.add_argument("--base-url", help="model server (default: LLM_BASE_URL, else the local server)")
        parser.add_argument("--limit", type=int, help="run only the first N cases")
        parser.add_argument("--json", dest="json_out", help="also write the results to this JSON file")

    def handle(self, *args: object, **options: object) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            cases = load_cases(str(options["file"]))
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if options.get("limit"):
            cases = cases[: int(options["limit"])]  # type: ignore[call-overload]
        client = LLMClient(base_url=options.get("base_url") or None)  # type: ignore[arg-type]

        def show(result: CaseResult) -> None:
            status = "PASS" if result.passed else "FAIL"
            seconds = f"{result.seconds:5.2f}s" if result.seconds is not None else "   -  "
            self.stdout.write(f"{status} {seconds} {result.id:<28} {result.request[:70]}")
            for problem in result.mismatches:
                self.stdout.write(f"      - {problem}")
            if result.error:
                self.stdout.write(f"      - error: {result.error}")
            self.stdout.flush()

        self.stdout.write(f"model server: {client.base_url}  model: {client.model}  cases: {len(cases)}")
        try:
            report = run(cases, client=client, on_result=show)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        times = sorted(report.seconds)
        median = report.median_seconds
        self.stdout.write(
            f"\nscore: {report.passed}/{len(report.results)} = {100 * report.score:.1f} % fully correct; "
            f"valid blueprints: {report.valid}/{len(report.results)}"
        )
        if times:
            self.stdout.write(
                f"seconds per request: median {median:.2f}, min {times[0]:.2f}, max {times[-1]:.2f} (n={len(times)})"
            )
        if options.get("json_out"):
            with open(str(options["json_out"]), "w") as handle:
                json.dump(
                    {
                        "score": report.score,
                        "passed": report.passed,
                        "total": len(report.results),
                        "valid": report.valid,
                        "median_seconds": median,
                        "results": [r.__dict__ for r in report.results],
                    },
                    handle,
                    indent=2,
                )
