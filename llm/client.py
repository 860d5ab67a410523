"""The only module that talks HTTP to the model server: OpenAI-compatible chat completions (llama.cpp, vLLM).

Sync and async, plain and streaming (SSE ``data:`` lines), ``response_format`` with a JSON schema, native
``tool_calls`` when the server returns them, timeouts, retries with backoff on connection errors and 5xx, a
``ServiceUnavailable`` naming the URL when the server is down, and metrics observers that receive one
``CallMetrics`` per call (time to first token, tokens/s, tokens in and out, model, outcome).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

from aicdn_project.errors import ApplicationError, ServiceUnavailable

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE = 0.5  # seconds; doubles per attempt
BACKOFF_MAX = 8.0


class LLMError(ApplicationError):
    """The model server answered, but not with something usable (a 4xx, a malformed body)."""

    status_code = 502
    default_code = "llm_error"


# --- results and metrics -------------------------------------------------------------------------------------------


@dataclass
class CallMetrics:
    """One call as a metrics module sees it. Token counts come from the server's `usage`; None when it sent none."""

    model: str
    base_url: str
    stream: bool
    outcome: str  # "ok" | "http_error" | "unavailable" | "timeout" | "bad_response"
    duration_s: float
    ttft_s: float | None = None  # time to first token (streaming only; None for a plain call)
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_per_s: float | None = None
    attempts: int = 1
    error: str | None = None


MetricsObserver = Callable[[CallMetrics], None]
_observers: list[MetricsObserver] = []
_observers_lock = threading.Lock()


def add_metrics_observer(observer: MetricsObserver) -> None:
    with _observers_lock:
        if observer not in _observers:
            _observers.append(observer)


def remove_metrics_observer(observer: MetricsObserver) -> None:
    with _observers_lock:
        if observer in _observers:
            _observers.remove(observer)


def _notify(metrics: CallMetrics) -> None:
    with _observers_lock:
        observers = list(_observers)
    for observer in observers:
        try:
            observer(metrics)
        except Exception:  # a broken metrics sink must never break a chat
            logger.exception("LLM metrics observer %r failed", observer)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any] | None  # None when `raw_arguments` is not a JSON object
    raw_arguments: str


@dataclass
class ChatResult:
    content: str
    tool_calls: list[ToolCall]
    finish_reason: str | None
    model: str
    metrics: CallMetrics
    raw: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        """The content parsed as JSON (what `response_format` asked for); LLMError when it is not JSON."""
        try:
            return json.loads(self.content)
        except ValueError as exc:
            raise LLMError(
                f"the model's answer is not JSON: {exc}", code="llm_bad_json", details={"content": self.content[:500]}
            ) from exc


@dataclass
class ChatDelta:
    """A piece of streamed text (`content`); the stream's last event is the ChatResult."""

    content: str


def json_schema_format(name: str, schema: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """The OpenAI `response_format` asking for JSON matching `schema` (honoured by llama.cpp and vLLM)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}


# --- the client ----------------------------------------------------------------------------------------------------


def resolve_base_url(base_url: str | None = None) -> str:
    """Explicit URL, else LLM_BASE_URL, else the local server; always ending in /v1."""
    url = (base_url or settings.LLM_BASE_URL or f"http://127.0.0.1:{settings.LLM_LOCAL_PORT}/v1").rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class _Accumulator:
    """Folds SSE chunks into the final answer: content, tool-call fragments by index, usage, finish reason."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.tools: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self.model: str | None = None

    def add(self, chunk: dict[str, Any]) -> str:
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get("timings"):
            self.timings = chunk["timings"]
        text = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text += delta["content"]
            for fragment in delta.get("tool_calls") or []:
                slot = self.tools.setdefault(fragment.get("index", 0), {"id": "", "name": "", "arguments": ""})
                slot["id"] = fragment.get("id") or slot["id"]
                function = fragment.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if text:
            self.content.append(text)
        return text

    def message(self) -> dict[str, Any]:
        calls = [
            {"id": t["id"], "type": "function", "function": {"name": t["name"], "arguments": t["arguments"]}}
            for _, t in sorted(self.tools.items())
        ]
        return {"content": "".join(self.content), "tool_calls": calls}


def _parse_tool_calls(message: dict[str, Any]) -> list[ToolCall]:
    calls = []
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        raw = function.get("arguments") or ""
        if isinstance(raw, dict):  # some servers send an object, the spec says a JSON string
            raw = json.dumps(raw)
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except ValueError:
            parsed = None
        calls.append(
            ToolCall(
                id=call.get("id") or f"call_{i}",
                name=function.get("name") or "",
                arguments=parsed if isinstance(parsed, dict) else None,
                raw_arguments=raw,
            )
        )
    return calls


class LLMClient:
    """An OpenAI-compatible chat-completions client. Cheap to share: holds one pooled httpx.Client."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.model = model or settings.LLM_MODEL
        self.api_key = settings.LLM_API_KEY if api_key is None else api_key
        self.timeout = float(settings.LLM_TIMEOUT if timeout is None else timeout)
        self.max_retries = int(settings.LLM_MAX_RETRIES if max_retries is None else max_retries)
        self._transport = transport
        self._async_transport = async_transport
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _timeout(self) -> httpx.Timeout:
        # Connecting should be instant on a healthy server; generating may legitimately take long.
        return httpx.Timeout(self.timeout, connect=min(5.0, self.timeout))

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self._timeout(), headers=self._headers(), transport=self._transport)
            return self._http

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def body(
        self,
        messages: list[dict[str, Any]],
        *,
        stream: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        if response_format is not None:
            body["response_format"] = response_format
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        body.update(extra)
        return body

    # -- error mapping shared by sync and async ---------------------------------------------------------------------

    def _unavailable(self, exc: Exception | None, status: int | None, text: str, metrics: CallMetrics) -> Exception:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            metrics.outcome, metrics.error = "timeout", type(exc).__name__
            return ServiceUnavailable(
                f"the model server at {self.base_url} did not answer within {self.timeout:.0f} s",
                code="llm_timeout",
                details={"url": self.url},
            )
        if exc is not None:
            metrics.outcome, metrics.error = "unavailable", type(exc).__name__
            return ServiceUnavailable(
                f"the model server at {self.base_url} is not reachable ({type(exc).__name__}: {exc}); "
                "start it with `manage.py llm_serve` or set LLM_BASE_URL",
                code="llm_unavailable",
                details={"url": self.url, "attempts": metrics.attempts},
            )
        metrics.outcome, metrics.error = "unavailable", f"HTTP {status}"
        return ServiceUnavailable(
            f"the model server at {self.base_url} answered HTTP {status} after {metrics.attempts} attempt(s): "
            f"{text[:200]}",
            code="llm_unavailable",
            details={"url": self.url, "status": status},
        )

    def _rejected(self, status: int, text: str, metrics: CallMetrics) -> LLMError:
        metrics.outcome, metrics.error = "http_error", f"HTTP {status}"
        return LLMError(
            f"the model server at {self.base_url} rejected the request: HTTP {status}: {text[:300]}",
            details={"url": self.url, "status": status},
        )

    @staticmethod
    def _backoff(attempt: int) -> float:
        delay: float = BACKOFF_BASE * 2**attempt
        return min(BACKOFF_MAX, delay)

    def _finish(self, acc_or_data: Any, metrics: CallMetrics, started: float) -> ChatResult:
        if isinstance(acc_or_data, _Accumulator):
            message, usage, timings = acc_or_data.message(), acc_or_data.usage, acc_or_data.timings
            finish_reason, model, raw = acc_or_data.finish_reason, acc_or_data.model, {}
        else:
            data = acc_or_data
            try:
                choice = data["choices"][0]
                message = choice.get("message") or {}
            except (KeyError, IndexError, TypeError) as exc:
                metrics.outcome, metrics.error = "bad_response", "no choices"
                metrics.duration_s = time.monotonic() - started
                _notify(metrics)
                raise LLMError(f"the model server at {self.base_url} sent no choices", details={"body": data}) from exc
            usage, timings = data.get("usage") or {}, data.get("timings") or {}
            finish_reason, model, raw = choice.get("finish_reason"), data.get("model"), data
        metrics.duration_s = time.monotonic() - started
        metrics.tokens_in = usage.get("prompt_tokens")
        metrics.tokens_out = usage.get("completion_tokens")
        if timings.get("predicted_per_second"):
            metrics.tokens_per_s = float(timings["predicted_per_second"])  # llama.cpp measures it itself
        elif metrics.tokens_out:
            generating = metrics.duration_s - (metrics.ttft_s or 0.0)
            metrics.tokens_per_s = metrics.tokens_out / generating if generating > 0 else None
        metrics.model = model or self.model
        metrics.outcome = "ok"
        _notify(metrics)
        return ChatResult(
            content=message.get("content") or "",
            tool_calls=_parse_tool_calls(message),
            finish_reason=finish_reason,
            model=metrics.model,
            metrics=metrics,
            raw=raw,
        )

    def _chunk(self, line: str, metrics: CallMetrics, started: float) -> dict[str, Any] | None:
        try:
            return _sse_chunk(line, self.base_url)
        except LLMError as exc:
            metrics.outcome, metrics.error = "bad_response", exc.message[:200]
            raise self._fail(exc, metrics, started) from None

    def _metrics(self, stream: bool) -> CallMetrics:
        return CallMetrics(model=self.model, base_url=self.base_url, stream=stream, outcome="ok", duration_s=0.0)

    def _fail(self, error: Exception, metrics: CallMetrics, started: float) -> Exception:
        metrics.duration_s = time.monotonic() - started
        _notify(metrics)
        return error

    # -- sync ------------------------------------------------------------------------------------------------------

    def chat(self, messages: list[dict[str, Any]], **options: Any) -> ChatResult:
        """One completion. Options: tools, tool_choice, response_format, max_tokens, temperature, any server extra."""
        body = self.body(messages, stream=False, **options)
        metrics, started = self._metrics(False), time.monotonic()
        attempt = 0
        while True:
            metrics.attempts = attempt + 1
            try:
                response = self._client().post(self.url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                if attempt < self.max_retries:
                    time.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                raise self._fail(self._unavailable(exc, None, "", metrics), metrics, started) from exc
            except httpx.TimeoutException as exc:
                raise self._fail(self._unavailable(exc, None, "", metrics), metrics, started) from exc
            if response.status_code in RETRY_STATUSES:
                if attempt < self.max_retries:
                    time.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                raise self._fail(
                    self._unavailable(None, response.status_code, response.text, metrics), metrics, started
                )
            if response.status_code >= 400:
                raise self._fail(self._rejected(response.status_code, response.text, metrics), metrics, started)
            try:
                data = response.json()
            except ValueError as exc:
                metrics.outcome, metrics.error = "bad_response", "not JSON"
                raise self._fail(
                    LLMError(f"the model server at {self.base_url} sent a body that is not JSON"), metrics, started
                ) from exc
            return self._finish(data, metrics, started)

    def stream(self, messages: list[dict[str, Any]], **options: Any) -> Iterator[ChatDelta | ChatResult]:
        """Yield ChatDelta per streamed piece of text, then one ChatResult (full text, tool calls, metrics)."""
        body = self.body(messages, stream=True, **options)
        metrics, started = self._metrics(True), time.monotonic()
        attempt = 0
        while True:
            metrics.attempts = attempt + 1
            try:
                with self._client().stream("POST", self.url, json=body) as response:
                    if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                        response.read()
                        time.sleep(self._backoff(attempt))
                        attempt += 1
                        continue
                    if response.status_code >= 400:
                        text = response.read().decode("utf-8", "replace")
                        error = (
                            self._unavailable(None, response.status_code, text, metrics)
                            if response.status_code in RETRY_STATUSES
                            else self._rejected(response.status_code, text, metrics)
                        )
                        raise self._fail(error, metrics, started)
                    acc = _Accumulator()
                    for line in response.iter_lines():
                        chunk = self._chunk(line, metrics, started)
                        if chunk is None:
                            continue
                        if chunk is _DONE:
                            break
                        text = acc.add(chunk)
                        if text:
                            if metrics.ttft_s is None:
                                metrics.ttft_s = time.monotonic() - started
                            yield ChatDelta(text)
                    yield self._finish(acc, metrics, started)
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt < self.max_retries:
                    time.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                raise self._fail(self._unavailable(exc, None, "", metrics), metrics, started) from exc
            except (httpx.TimeoutException, httpx.RemoteProtocolError) as exc:
                # Mid-stream failures are not retried: the caller has already seen part of the answer.
                raise self._fail(self._unavailable(exc, None, "", metrics), metrics, started) from exc

    def models(self) -> list[str]:
        """Model ids the server lists (GET /v1/models); ServiceUnavailable when it is down."""
        try:
            response = self._client().get(f"{self.base_url}/models")
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"the model server at {self.base_url} is not reachable ({type(exc).__name__})",
                code="llm_unavailable",
                details={"url": self.base_url},
            ) from exc
        if response.status_code != 200:
            raise ServiceUnavailable(
                f"the model server at {self.base_url} answered HTTP {response.status_code} to /models",
                code="llm_unavailable",
            )
        return [m.get("id", "") for m in response.json().get("data", [])]

    # -- async -----------------------------------------------------------------------------------------------------

    def _async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self._timeout(), headers=self._headers(), transport=self._async_transport)

    async def achat(self, messages: list[dict[str, Any]], **options: Any) -> ChatResult:
        """The async twin of `chat` (same retries, errors and metrics)."""
        result: ChatResult | None = None
        async for event in self.astream(messages, _plain=True, **options):
            if isinstance(event, ChatResult):
                result = event
        assert result is not None
        return result

    async def astream(
        self, messages: list[dict[str, Any]], *, _plain: bool = False, **options: Any
    ) -> AsyncIterator[ChatDelta | ChatResult]:
        """The async twin of `stream`: ChatDelta per piece of text, then the ChatResult."""
        body = self.body(messages, stream=not _plain, **options)
        metrics, started = self._metrics(not _plain), time.monotonic()
        attempt = 0
        async with self._async_client() as http:
            while True:
                metrics.attempts = attempt + 1
                try:
                    async with http.stream("POST", self.url, json=body) as response:
                        if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                            await response.aread()
                            await asyncio.sleep(self._backoff(attempt))
                            attempt += 1
                            continue
                        if response.status_code >= 400:
                            text = (await response.aread()).decode("utf-8", "replace")
                            error = (
                                self._unavailable(None, response.status_code, text, metrics)
                                if response.status_code in RETRY_STATUSES
                                else self._rejected(response.status_code, text, metrics)
                            )
                            raise self._fail(error, metrics, started)
                        if _plain:
                            raw = await response.aread()
                            try:
                                data = json.loads(raw)
                            except ValueError as exc:
                                metrics.outcome, metrics.error = "bad_response", "not JSON"
                                raise self._fail(
                                    LLMError(f"the model server at {self.base_url} sent a body that is not JSON"),
                                    metrics,
                                    started,
                                ) from exc
                            yield self._finish(data, metrics, started)
                            return
                        acc = _Accumulator()
                        async for line in response.aiter_lines():
                            chunk = self._chunk(line, metrics, started)
                            if chunk is None:
                                continue
                            if chunk is _DONE:
                                break
                            text = acc.add(chunk)
                            if text:
                                if metrics.ttft_s is None:
                                    metrics.ttft_s = time.monotonic() - started
                                yield ChatDelta(text)
                        yield self._finish(acc, metrics, started)
                        return
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    if attempt < self.max_retries:
                        await asyncio.sleep(self._backoff(attempt))
                        attempt += 1
                        continue
                    raise self._fail(self._unavailable(exc, None, "", metrics), metrics, started) from exc
                except (httpx.TimeoutException, httpx.RemoteProtocolError) as exc:
                    raise self._fail(self._unavailable(exc, None, "", metrics), metrics, started) from exc


_DONE: dict[str, Any] = {}


def _sse_chunk(line: str, base_url: str) -> dict[str, Any] | None:
    """One SSE line -> the chunk dict, _DONE at `data: [DONE]`, None for comments/blank/other fields."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if not payload:
        return None
    if payload == "[DONE]":
        return _DONE
    try:
        chunk: dict[str, Any] = json.loads(payload)
    except ValueError as exc:
        raise LLMError(f"the model server at {base_url} streamed a line that is not JSON: {payload[:200]}") from exc
    if isinstance(chunk, dict) and "error" in chunk and not chunk.get("choices"):
        raise LLMError(f"the model server at {base_url} reported an error mid-stream: {chunk['error']}")
    return chunk


_default_clients: dict[tuple[Any, ...], LLMClient] = {}
_default_lock = threading.Lock()


def get_client() -> LLMClient:
    """The shared client for the current settings (a settings override in tests gets its own client)."""
    key = (
        resolve_base_url(),
        settings.LLM_MODEL,
        settings.LLM_API_KEY,
        settings.LLM_TIMEOUT,
        settings.LLM_MAX_RETRIES,
    )
    with _default_lock:
        client = _default_clients.get(key)
        if client is None:
            client = _default_clients[key] = LLMClient()
        return client
