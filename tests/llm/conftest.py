"""LLM test fixtures: a scripted OpenAI-compatible HTTP server, and the real local model server (session-wide)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def completion(content: str = "", *, tool_calls: list[dict[str, Any]] | None = None, model: str = "scripted") -> dict:
    """A chat.completion body as llama.cpp / vLLM send it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57},
    }


def stream_chunks(pieces: list[str], *, model: str = "scripted") -> list[dict]:
    """chat.completion.chunk bodies for `pieces`, then a finish chunk and a usage-only chunk."""
    chunks: list[dict[str, Any]] = [
        {"object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    ]
    chunks += [
        {"object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {"content": piece}}]}
        for piece in pieces
    ]
    chunks.append(
        {
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    chunks.append(
        {
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 20, "completion_tokens": len(pieces), "total_tokens": 20 + len(pieces)},
        }
    )
    return chunks


class ScriptedServer:
    """Answers POST /v1/chat/completions with the next scripted reply and records every request body.

    A reply is a dict: {"json": body} | {"stream": [chunks]} | {"status": 503, "body": "..."} | {"sleep": s, ...}.
    """

    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode()
                self._send(200, body, "application/json")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(payload)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    reply = server.replies.pop(0) if server.replies else {"status": 500, "body": "script exhausted"}
                if reply.get("sleep"):
                    time.sleep(reply["sleep"])
                if "stream" in reply:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in reply["stream"]:
                        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                    self.close_connection = True
                elif "json" in reply:
                    self._send(reply.get("status", 200), json.dumps(reply["json"]).encode(), "application/json")
                else:
                    self._send(reply.get("status", 500), reply.get("body", "").encode(), "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reply_json(self, body: dict[str, Any], status: int = 200) -> None:
        self.replies.append({"json": body, "status": status})

    def reply_content(self, content: str) -> None:
        self.reply_json(completion(content))

    def reply_intent(self, **fields: Any) -> None:
        intent = {
            "web_servers": 0,
            "worker_servers": 0,
            "load_balancer": False,
            "database": "none",
            "database_instances": 0,
            "database_ha": False,
            "cache": "none",
            "kubernetes_nodes": 0,
        }
        intent.update(fields)
        self.reply_content(json.dumps(intent, separators=(",", ":")))

    def reply_stream(self, pieces: list[str]) -> None:
        self.replies.append({"stream": stream_chunks(pieces)})

    def reply_status(self, status: int, body: str = "") -> None:
        self.replies.append({"status": status, "body": body})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted(settings: Any) -> Iterator[ScriptedServer]:
    """A scripted server that `get_client()` talks to (LLM_BASE_URL points at it, retries back off instantly)."""
    server = ScriptedServer()
    settings.LLM_BASE_URL = server.base_url
    settings.LLM_MAX_RETRIES = 2
    settings.LLM_TIMEOUT = 10.0
    yield server
    server.close()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llm.client.BACKOFF_BASE", 0.0)


@pytest.fixture
def dead_url() -> str:
    """A URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(autouse=True)
def _no_rate_limits(settings: Any) -> None:
    """The generation endpoint is limited to a few calls a minute; these tests exercise generation, not limits."""
    settings.RATELIMIT_ENABLE = False
