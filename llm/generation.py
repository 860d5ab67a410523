"""Blueprint generation: the model fills the intent, the extractor reads the facts, the compiler builds the document.

`generate_blueprint` is the one service every interface (API, tools, chat) calls; `update_blueprint` is the
follow-up path ("add a Redis cache", "make it 5 web servers") starting from a current document.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aicdn_project.errors import ApplicationError, Conflict, PermissionDenied, ValidationFailed
from llm.client import ChatResult, LLMClient, get_client, json_schema_format
from llm.compiler import compile_blueprint, intent_from_document
from llm.extractor import extract
from llm.intent import Intent, intent_from_data, intent_problems, intent_schema
from llm.prompts import INTENT_MAX_TOKENS, intent_messages, repair_messages

if TYPE_CHECKING:
    from blueprints.models import BlueprintVersion

MAX_DESCRIPTION_CHARS = 4000


class GenerationFailed(ApplicationError):
    """The model's answer stayed unusable after the repair round, or the request names nothing to build."""

    status_code = 422
    default_code = "generation_failed"


@dataclass
class IntentAnswer:
    intent: Intent
    result: ChatResult
    repaired: bool
    model_seconds: float


def _parse(content: str) -> tuple[Any, list[str]]:
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        return None, [f"the answer is not valid JSON ({exc.msg} at position {exc.pos})"]
    return data, intent_problems(data)


def request_intent(description: str, *, current: Intent | None = None, client: LLMClient | None = None) -> IntentAnswer:
    """Ask the model for the intent under the JSON schema; one repair round on invalid output, then a clear error."""
    client = client or get_client()
    messages = intent_messages(description, current.as_dict() if current else None)
    options = {
        "response_format": json_schema_format("infrastructure_intent", intent_schema()),
        "max_tokens": INTENT_MAX_TOKENS,
        "temperature": 0.0,
    }
    started = time.monotonic()
    result = client.chat(messages, **options)
    data, problems = _parse(result.content)
    repaired = False
    if problems:
        repaired = True
        result = client.chat(repair_messages(messages, result.content, problems), **options)
        data, problems = _parse(result.content)
        if problems:
            raise GenerationFailed(
                "the model did not produce a usable structure for this request, even after one correction: "
                + "; ".join(problems)
                + ". Rephrase the request with the parts and counts you need.",
                details={"problems": problems, "answer": result.content[:1000]},
            )
    return IntentAnswer(intent_from_data(data), result, repaired, time.monotonic() - started)


def generate_blueprint(
    *,
    description: str,
    user: Any = None,
    save: bool = False,
    current: dict[str, Any] | None = None,
    blueprint_id: int | None = None,
    message: str = "",
    client: LLMClient | None = None,
) -> dict[str, Any]:
    """Turn a request (or, with `current`, a change to a blueprint) into a validated blueprint document.

    Returns {"document", "intent", "assumptions", "model", "timings", "valid", "errors", "repaired"} and, when saved,
    "version". Saving creates a new blueprint, or a new version of `blueprint_id` (which needs `user` to own it).
    """
    text = (description or "").strip()
    if not text:
        raise ValidationFailed("describe the infrastructure you need", code="empty_description")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise ValidationFailed(
            f"the description is {len(text)} characters; keep it under {MAX_DESCRIPTION_CHARS}",
            code="description_too_long",
        )
    if save and user is None:
        raise PermissionDenied("saving a generated blueprint needs a user", code="no_user")
    started = time.monotonic()
    base_intent = intent_from_document(current) if current else None
    answer = request_intent(text, current=base_intent, client=client)
    t_extract = time.monotonic()
    facts = extract(text)
    t_compile = time.monotonic()
    compiled = compile_blueprint(answer.intent, facts, description=text, base=current)
    done = time.monotonic()
    if compiled.intent.empty:
        raise GenerationFailed(
            "I could not find any infrastructure in this request. Say what you need, for example "
            "'two web servers behind a load balancer with a PostgreSQL database'.",
            code="nothing_to_build",
            details={"intent": answer.intent.as_dict()},
        )
    output: dict[str, Any] = {
        "document": compiled.document,
        "intent": compiled.intent.as_dict(),
        "model_intent": answer.intent.as_dict(),
        "facts": facts.as_dict(),
        "assumptions": compiled.assumptions,
        "model": answer.result.model,
        "repaired": answer.repaired,
        "timings": {
            "model_s": round(answer.model_seconds, 3),
            "extract_s": round(t_compile - t_extract, 4),
            "compile_s": round(done - t_compile, 4),
            "total_s": round(time.monotonic() - started, 3),
            "tokens_in": answer.result.metrics.tokens_in,
            "tokens_out": answer.result.metrics.tokens_out,
        },
        "valid": compiled.valid,
        "errors": compiled.errors,
    }
    if save:
        if not compiled.valid:
            raise ValidationFailed(
                "the generated blueprint is invalid and was not saved", details={"errors": compiled.errors}
            )
        output["version"], output["document"] = _save(
            compiled.document, user=user, blueprint_id=blueprint_id, message=message or text
        )
    return output


def update_blueprint(current_document: dict[str, Any], instruction: str, **options: Any) -> dict[str, Any]:
    """A follow-up: the current document's intent plus the requested change, compiled over the current document."""
    return generate_blueprint(description=instruction, current=current_document, **options)


def _save(
    document: dict[str, Any], *, user: Any, blueprint_id: int | None, message: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    from blueprints import services

    if blueprint_id is not None:
        version, created = services.blueprint_version_create(
            blueprint_id=blueprint_id, author=user, document=document, message=message[:500]
        )
    else:
        base = document["name"]
        named: BlueprintVersion | None = None
        for attempt in range(1, 21):
            # Generated names are generic ("web-app-production"): number them rather than refuse a second one.
            candidate = dict(document, name=base if attempt == 1 else f"{base[:56]}-{attempt}")
            try:
                named = services.blueprint_create(owner=user, document=candidate, message=message[:500])
                break
            except Conflict as exc:
                if exc.code != "blueprint_exists":
                    raise
        if named is None:
            raise Conflict(f"you already have 20 blueprints named like {base!r}; name this one", code="name_taken")
        version, created = named, True
    info = {
        "id": version.pk,
        "blueprint_id": version.blueprint_id,
        "blueprint_name": version.blueprint.name,
        "number": version.number,
        "commit_id": version.commit_id,
        "created": created,
    }
    return info, version.document
