"""The HTTP client against the scripted OpenAI-compatible server: bodies, parsing, streaming, retries, errors."""

from __future__ import annotations

import asyncio
import json

import pytest

from aicdn_project.errors import ServiceUnavailable
from llm.client import (
    CallMetrics,
    ChatDelta,
    ChatResult,
    LLMClient,
    LLMError,
    add_metrics_observer,
    get_client,
    json_schema_format,
    remove_metrics_observer,
    resolve_base_url,
)
from tests.llm.conftest import completion


@pytest.fixture
def observed() -> list[CallMetrics]:
    seen: list[CallMetrics] = []
    add_metrics_observer(seen.append)
    yield seen
    remove_metrics_observer(seen.append)


def test_chat_sends_openai_body_and_parses_answer(scripted, observed):
    scripted.reply_content('{"a": 1}')
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    result = get_client().chat(
        [{"role": "user", "content": "hi"}],
        response_format=json_schema_format("thing", schema),
        max_tokens=20,
        temperature=0.0,
    )
    sent = scripted.requests[0]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["stream"] is False and sent["max_tokens"] == 20 and sent["temperature"] == 0.0
    assert result.json() == {"a": 1}
    assert result.finish_reason == "stop"
    assert result.metrics.tokens_in == 50 and result.metrics.tokens_out == 7
    assert [m.outcome for m in observed] == ["ok"]
    assert observed[0].model == "scripted" and observed[0].stream is False


def test_native_tool_calls_are_parsed(scripted):
    scripted.reply_json(
        completion(
            tool_calls=[
                {"id": "c1", "type": "function", "function": {"name": "get_ipr_status", "arguments": '{"ipr_id": 4}'}},
                {"id": "c2", "type": "function", "function": {"name": "broken", "arguments": "{not json"}},
            ]
        )
    )
    tools = [{"type": "function", "function": {"name": "get_ipr_status", "parameters": {"type": "object"}}}]
    result = get_client().chat([{"role": "user", "content": "status?"}], tools=tools, tool_choice="auto")
    assert scripted.requests[0]["tools"] == tools and scripted.requests[0]["tool_choice"] == "auto"
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("c1", "get_ipr_status", {"ipr_id": 4}),
        ("c2", "broken", None),
    ]
    assert result.tool_calls[1].raw_arguments == "{not json"


def test_stream_yields_deltas_then_result(scripted, observed):
    scripted.reply_stream(["Hel", "lo", " world"])
    events = list(get_client().stream([{"role": "user", "content": "hi"}]))
    assert [e.content for e in events if isinstance(e, ChatDelta)] == ["Hel", "lo", " world"]
    final = events[-1]
    assert isinstance(final, ChatResult) and final.content == "Hello world"
    assert scripted.requests[0]["stream"] is True
    assert scripted.requests[0]["stream_options"] == {"include_usage": True}
    assert final.metrics.ttft_s is not None and final.metrics.ttft_s <= final.metrics.duration_s
    assert final.metrics.tokens_out == 3
    assert observed[-1].stream is True and observed[-1].outcome == "ok"


def test_streamed_tool_call_fragments_are_joined(scripted):
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c9", "function": {"name": "get_"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "blueprint"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"id":'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": " 7}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    scripted.replies.append({"stream": chunks})
    events = list(get_client().stream([{"role": "user", "content": "x"}]))
    assert len(events) == 1  # no text, only the result
    call = events[0].tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("c9", "get_blueprint", {"id": 7})
    assert events[0].finish_reason == "tool_calls"


def test_retries_5xx_then_succeeds(scripted, no_backoff, observed):
    scripted.reply_status(503, "Loading model")
    scripted.reply_status(502, "bad gateway")
    scripted.reply_content("ok")
    result = get_client().chat([{"role": "user", "content": "x"}])
    assert result.content == "ok"
    assert len(scripted.requests) == 3
    assert observed[-1].attempts == 3


def test_5xx_after_retries_is_service_unavailable(scripted, no_backoff):
    for _ in range(3):
        scripted.reply_status(503, "Loading model")
    with pytest.raises(ServiceUnavailable) as info:
        get_client().chat([{"role": "user", "content": "x"}])
    assert scripted.base_url in info.value.message and "503" in info.value.message
    assert len(scripted.requests) == 3


def test_4xx_is_not_retried(scripted, no_backoff, observed):
    scripted.reply_status(400, "response_format is malformed")
    with pytest.raises(LLMError) as info:
        get_client().chat([{"role": "user", "content": "x"}])
    assert "HTTP 400" in info.value.message and "malformed" in info.value.message
    assert len(scripted.requests) == 1
    assert observed[-1].outcome == "http_error"


def test_server_down_names_the_url(dead_url, no_backoff, observed):
    client = LLMClient(base_url=dead_url, max_retries=1)
    with pytest.raises(ServiceUnavailable) as info:
        client.chat([{"role": "user", "content": "x"}])
    assert dead_url in info.value.message
    assert info.value.code == "llm_unavailable" and info.value.status_code == 503
    assert observed[-1].outcome == "unavailable" and observed[-1].attempts == 2
    with pytest.raises(ServiceUnavailable):
        list(client.stream([{"role": "user", "content": "x"}]))
    with pytest.raises(ServiceUnavailable):
        client.models()


def test_read_timeout_is_not_retried(scripted):
    scripted.replies.append({"sleep": 1.5, "json": completion("late")})
    client = LLMClient(base_url=scripted.base_url, timeout=0.5, max_retries=2)
    with pytest.raises(ServiceUnavailable) as info:
        client.chat([{"role": "user", "content": "x"}])
    assert info.value.code == "llm_timeout"
    assert len(scripted.requests) == 1


def test_broken_observer_does_not_break_the_call(scripted):
    def broken(metrics: CallMetrics) -> None:
        raise RuntimeError("metrics sink down")

    add_metrics_observer(broken)
    try:
        scripted.reply_content("fine")
        assert get_client().chat([{"role": "user", "content": "x"}]).content == "fine"
    finally:
        remove_metrics_observer(broken)


def test_async_stream_and_chat(scripted, no_backoff):
    scripted.reply_stream(["a", "b"])
    scripted.reply_status(503, "busy")
    scripted.reply_content("plain")
    client = LLMClient(base_url=scripted.base_url)

    async def run() -> tuple[list, ChatResult]:
        events = [e async for e in client.astream([{"role": "user", "content": "x"}])]
        plain = await client.achat([{"role": "user", "content": "y"}])
        return events, plain

    events, plain = asyncio.run(run())
    assert [e.content for e in events[:-1]] == ["a", "b"] and events[-1].content == "ab"
    assert plain.content == "plain" and plain.metrics.attempts == 2
    assert scripted.requests[-1]["stream"] is False


def test_async_server_down(dead_url, no_backoff):
    client = LLMClient(base_url=dead_url, max_retries=0)
    with pytest.raises(ServiceUnavailable) as info:
        asyncio.run(client.achat([{"role": "user", "content": "x"}]))
    assert dead_url in info.value.message


def test_api_key_is_sent_as_bearer(scripted):
    scripted.reply_content("x")
    LLMClient(base_url=scripted.base_url, api_key="sk-test").chat([{"role": "user", "content": "x"}])
    assert scripted.headers[0]["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://gpu:8000", "http://gpu:8000/v1"),
        ("http://gpu:8000/v1/", "http://gpu:8000/v1"),
        ("http://gpu:8000/v1", "http://gpu:8000/v1"),
    ],
)
def test_base_url_normalised(given, expected):
    assert resolve_base_url(given) == expected


def test_default_base_url_is_local_server(settings):
    settings.LLM_BASE_URL = ""
    settings.LLM_LOCAL_PORT = 8123
    assert resolve_base_url() == "http://127.0.0.1:8123/v1"


def test_bad_json_content_raises(scripted):
    scripted.reply_content("not json at all")
    result = get_client().chat([{"role": "user", "content": "x"}])
    with pytest.raises(LLMError) as info:
        result.json()
    assert info.value.code == "llm_bad_json"
    assert json.dumps(info.value.details)


def test_error_event_mid_stream_is_reported(scripted, observed):
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "par"}}]},
        {"error": {"code": 500, "message": "context shift failed"}},
    ]
    scripted.replies.append({"stream": chunks})
    events = []
    with pytest.raises(LLMError) as info:
        for event in get_client().stream([{"role": "user", "content": "x"}]):
            events.append(event)
    assert [e.content for e in events] == ["par"]
    assert "context shift failed" in info.value.message
    assert observed[-1].outcome == "bad_response"
