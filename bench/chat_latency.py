"""Benchmark: time to first token (and time per token) at a websocket client of the chat vs. directly from the model
server, same prompt, alternating runs; prints medians and the difference (the chat pipeline's added latency).

The chat side is a real daphne (own SQLite database, the Redis channel layer) serving /ws/chat/<id>/; each run uses
a fresh conversation and sends "hello", which the agent's router answers with a reply generation only, so the
model receives exactly the messages the direct run sends (`Agent.reply_messages("hello", [], AgentState(), [])`).

Run:
  .venv/bin/python bench/chat_latency.py --model real [--base-url URL] [--runs 21]
  .venv/bin/python bench/chat_latency.py --model scripted [--runs 41] [--token-delay-ms 20] [--tokens 30]
--model real starts the local model server (llm_serve) on a free port unless --base-url names a running one.
--model scripted uses an in-process OpenAI-compatible server that streams fixed tokens at a fixed pace, so the
difference is the pipeline alone, without the model's own jitter. Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aicdn_project.settings")
os.environ.setdefault("SECRET_KEY", "bench-chat-latency-" + uuid.uuid4().hex)  # this process only reads settings

import logging  # noqa: E402

import django  # noqa: E402

django.setup()
logging.getLogger("httpx").setLevel(logging.WARNING)

import httpx  # noqa: E402
import websocket  # noqa: E402  (websocket-client)
from django.conf import settings  # noqa: E402

from llm.agent import REPLY_MAX_TOKENS, Agent, AgentState  # noqa: E402

MESSAGE = "hello"
SETUP = """
import json
from django.contrib.auth.models import Group, User
from django.contrib.sessions.backends.db import SessionStore
from conversations.services import conversation_create
u = User.objects.create_user('bench-chat', password='bench-chat-pw', is_staff=True)
u.groups.add(Group.objects.get(name='requesters'))
s = SessionStore()
s['_auth_user_id'] = str(u.pk)
s['_auth_user_backend'] = 'django.contrib.auth.backends.ModelBackend'
s['_auth_user_hash'] = u.get_session_auth_hash()
s.create()
print(json.dumps({"session": s.session_key, "conversations": [str(conversation_create(owner=u).pk) for _ in range(N)]}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PacedServer:
    """An OpenAI-compatible streaming endpoint: `tokens` chunks, `delay` seconds apart, first one at once."""

    def __init__(self, tokens: int, delay: float) -> None:
        pieces = [f"word{i} " for i in range(tokens)]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for i, piece in enumerate(pieces):
                    if i:
                        time.sleep(delay)
                    chunk = {"model": "paced", "choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                end = {"model": "paced", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


_http = httpx.Client(timeout=120)  # created once: building a client (its TLS context) costs tens of ms


def direct_run(base_url: str, messages: list[dict[str, str]], model: str) -> tuple[float, float, int]:
    """(time to first token, seconds per token after the first, tokens) straight from the model server."""
    body = {"model": model, "messages": messages, "stream": True, "max_tokens": REPLY_MAX_TOKENS, "temperature": 0.2}
    times: list[float] = []
    started = time.perf_counter()
    with _http.stream("POST", base_url + "/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                times.append(time.perf_counter())
    return per_run(started, times)


def per_run(started: float, times: list[float]) -> tuple[float, float, int]:
    if not times:
        raise RuntimeError("no token arrived")
    per_token = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
    return times[0] - started, per_token, len(times)


def ws_run(url: str, session: str, conversation_id: str) -> tuple[float, float, int]:
    """The same, at a websocket client of the chat: from sending the message to the first token frame."""
    ws_url = url.replace("http://", "ws://") + f"/ws/chat/{conversation_id}/"
    client = websocket.create_connection(ws_url, header=[f"Cookie: sessionid={session}"], origin=url, timeout=120)
    try:
        ready = json.loads(client.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"websocket refused: {ready}")
        times: list[float] = []
        started = time.perf_counter()
        client.send(json.dumps({"type": "message", "text": MESSAGE}))
        while True:
            event = json.loads(client.recv())
            if event["type"] == "token":
                times.append(time.perf_counter())
            elif event["type"] in ("done", "error"):
                if event["type"] == "error":
                    raise RuntimeError(f"turn failed: {event}")
                break
        return per_run(started, times)
    finally:
        client.close()


def start_daphne(base: Path, llm_url: str, runs: int) -> tuple[subprocess.Popen, str, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        DJANGO_SETTINGS_MODULE="aicdn_project.settings",
        DATABASE_URL=f"sqlite:///{base / 'bench.sqlite3'}",
        SECRET_KEY="bench-chat-" + uuid.uuid4().hex,
        AICDN_KEY_PREFIX=f"aicdn-bench-{uuid.uuid4().hex[:8]}",
        AICDN_VAR_DIR=str(base / "var"),
        RATELIMIT_RATES="chat=100000/m,api=100000/m",
        SESSION_COOKIE_SECURE="False",
        LLM_BASE_URL=llm_url,
        LOG_LEVEL="WARNING",
    )
    env.setdefault("REDIS_URL", f"unix://{ROOT / 'var' / 'redis.sock'}")
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
    out = subprocess.run(
        [*manage, "shell", "-c", SETUP.replace("range(N)", f"range({runs})")],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    setup = json.loads(out.splitlines()[-1])
    port = free_port()
    log = (base / "daphne.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aicdn_project.asgi:application"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/api/v1/monitoring/health", timeout=1).status_code == 200:
                return proc, url, setup
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"daphne did not start: {(base / 'daphne.log').read_text()[-2000:]}")


def summary(label: str, values: list[float], scale: float = 1000.0) -> float:
    median = statistics.median(values)
    low, high = min(values) * scale, max(values) * scale
    print(f"  {label:<34} median {median * scale:9.2f} ms   min {low:9.2f}   max {high:9.2f}")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("real", "scripted"), default="scripted")
    parser.add_argument("--base-url", default="", help="a running model server (real mode)")
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--tokens", type=int, default=30, help="scripted mode: tokens per reply")
    parser.add_argument("--token-delay-ms", type=float, default=20.0, help="scripted mode: pause between tokens")
    args = parser.parse_args()
    if args.runs < 20:
        parser.error("at least 20 runs")

    server = None
    if args.model == "scripted":
        llm_url = PacedServer(args.tokens, args.token_delay_ms / 1000).base_url
    elif args.base_url:
        llm_url = args.base_url.rstrip("/")
    else:
        from llm.local_model import LocalServerProcess

        server = LocalServerProcess(port=free_port()).start()
        llm_url = server.base_url
    model = settings.LLM_MODEL if args.model == "real" else "paced"
    messages = Agent(user=None, client=None).reply_messages(MESSAGE, [], AgentState(), [])

    with tempfile.TemporaryDirectory(prefix="aicdn-bench-chat-") as tmp:
        proc, url, setup = start_daphne(Path(tmp), llm_url, args.runs + 1)
        try:
            direct_run(llm_url, messages, model)  # warm the prompt cache and the connections
            ws_run(url, setup["session"], setup["conversations"][-1])
            direct: list[tuple[float, float, int]] = []
            chat: list[tuple[float, float, int]] = []
            for i in range(args.runs):
                direct.append(direct_run(llm_url, messages, model))
                chat.append(ws_run(url, setup["session"], setup["conversations"][i]))
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            if server is not None:
                server.stop()

    print(f"chat latency, model={args.model} ({llm_url}), {args.runs} alternating runs, message {MESSAGE!r}")
    d_ttft = summary("direct: time to first token", [r[0] for r in direct])
    w_ttft = summary("websocket: time to first token", [r[0] for r in chat])
    d_tok = summary("direct: time per later token", [r[1] for r in direct])
    w_tok = summary("websocket: time per later token", [r[1] for r in chat])
    print(f"  tokens per reply: direct median {statistics.median(r[2] for r in direct)}, "
          f"websocket median {statistics.median(r[2] for r in chat)}")  # fmt: skip
    print(f"  added time to first token: {(w_ttft - d_ttft) * 1000:.2f} ms (goal <= 5 ms)")
    print(f"  added time per token:      {(w_tok - d_tok) * 1000:.3f} ms (goal <= 1 ms)")


if __name__ == "__main__":
    main()
