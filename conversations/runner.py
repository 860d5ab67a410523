"""Runs chat turns away from the socket or request that asked for them, so a client that leaves mid-answer still
finds the finished message.

One daemon thread owns an asyncio loop for the process. Each turn runs the (synchronous) agent in a worker thread
at once; every event goes straight from the worker to an optional local sink (the SSE request or the websocket that
started the turn), and a pump coroutine on that loop sends it to the conversation's channels group (websockets of
any process). Nothing here is cancelled when a client goes away. A turn that is running when the web process itself
stops is lost with it: its message stays "running" until `conversations.services.turn_abandon_stale` (run by
`turn_start` when a start is refused, for messages older than RUNNING_TURN_TIMEOUT) marks it failed, and until then
a new turn in that conversation is refused."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections

from conversations import publisher

logger = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]
_END = object()
GROUP_TOKEN_INTERVAL = 0.2  # seconds between token publications to a conversation's group


class TurnRunner:
    def __init__(self, max_workers: int = 4) -> None:
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=serve, name="chat-turn-loop", daemon=True).start()
                started.wait()
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._max_workers, thread_name_prefix="chat-turn"
                )
                self._loop = loop
            return self._loop

    def submit(
        self,
        *,
        user_id: int,
        conversation_id: Any,
        message_id: int,
        sink: Sink | None = None,
        origin: str = "",
    ) -> concurrent.futures.Future:
        """Start a turn; the future resolves when the message is stored and every event was sent."""
        return self._submit(str(conversation_id), sink, origin, _run_turn, user_id, str(conversation_id), message_id)

    def submit_gated(
        self, *, conversation_id: Any, sink: Sink | None = None, origin: str = "", **turn: Any
    ) -> concurrent.futures.Future:
        """Start a turn whose messages the caller is still storing: `services.turn_run_gated(**turn)`."""
        return self._submit(str(conversation_id), sink, origin, _run_gated_turn, turn)

    def _submit(self, conversation_id: str, sink: Sink | None, origin: str, fn: Callable[..., Any], *args: Any) -> Any:
        loop = self._ensure()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def emit(event: Any) -> None:
            # The local sink first, straight from the worker (sinks are thread-safe hand-overs): one thread hop
            # fewer on the way to the client that asked than going through the loop.
            if sink is not None:
                try:
                    sink(event)
                except Exception:
                    logger.warning("a chat event sink failed", exc_info=True)
            loop.call_soon_threadsafe(queue.put_nowait, event)

        # The worker starts at once (no hop through the loop first); the pump drains its events on the loop.
        assert self._executor is not None
        work = self._executor.submit(fn, *args, emit)
        work.add_done_callback(lambda _f: loop.call_soon_threadsafe(queue.put_nowait, _END))
        return asyncio.run_coroutine_threadsafe(self._pump(conversation_id, queue, work, origin), loop)

    async def _pump(
        self,
        conversation_id: str,
        queue: asyncio.Queue[Any],
        work: concurrent.futures.Future,
        origin: str,
    ) -> None:
        """Publish the turn's events to the conversation's group, in order. Tokens go out at most once per
        GROUP_TOKEN_INTERVAL, merged (the socket or request that started the turn got each one already, through its
        sink): a channel-layer send per token cost daphne ~0.3 ms of CPU each, taken from a local model that
        generates on the same cores (bench/chat_latency.py --model real measured ~3 ms more per token)."""
        loop = asyncio.get_running_loop()
        pending = ""  # token text not yet published
        last_sent = -GROUP_TOKEN_INTERVAL
        flush_at: float | None = None

        async def publish(event: dict[str, Any]) -> None:
            try:
                await publisher.apublish_event(conversation_id, event, origin=origin)
            except Exception:  # the channel layer being down must not stop the turn or the local sink
                logger.warning("could not publish a chat event to the channel layer", exc_info=True)

        while True:
            try:
                if flush_at is None:
                    event = await queue.get()
                else:
                    event = await asyncio.wait_for(queue.get(), max(0.0, flush_at - loop.time()))
            except TimeoutError:
                event = None  # time to send what is pending
            merged = isinstance(event, dict) and event.get("type") == "token" and set(event) == {"type", "text"}
            if merged:
                pending += str(event["text"])
                if loop.time() - last_sent < GROUP_TOKEN_INTERVAL:
                    flush_at = flush_at or last_sent + GROUP_TOKEN_INTERVAL
                    continue
            if pending:  # before any other event, and when the interval is up
                await publish({"type": "token", "text": pending})
                pending, last_sent, flush_at = "", loop.time(), None
            if event is _END:
                break
            if event is not None and not merged:
                await publish(event)
        work.result()  # re-raises a failure of the turn itself, logged by the future's consumer


def _run_turn(user_id: int, conversation_id: str, message_id: int, emit: Sink) -> None:
    from django.contrib.auth import get_user_model

    from conversations import services

    try:
        user = get_user_model().objects.get(pk=user_id)
        services.turn_run(user=user, conversation_id=conversation_id, message_id=message_id, emit=emit)
    finally:
        # A worker thread's connections are its own: close them, or they pile up (and block a test database drop).
        connections.close_all()


def _run_gated_turn(turn: dict[str, Any], emit: Sink) -> None:
    from conversations import services

    try:
        services.turn_run_gated(**turn, emit=emit)
    finally:
        connections.close_all()


_runner: TurnRunner | None = None
_runner_lock = threading.Lock()


def get_runner() -> TurnRunner:
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = TurnRunner(max_workers=getattr(settings, "CHAT_MAX_CONCURRENT_TURNS", 4))
        return _runner


def start_turn(
    *, user_id: int, conversation_id: Any, message_id: int, sink: Sink | None = None, origin: str = ""
) -> Any:
    """Run a stored turn. `sink` gets every event first, in this process (the SSE stream or the socket that asked);
    `origin` names that socket's channel in the group copies, so it can drop what it already has."""
    future = get_runner().submit(
        user_id=user_id, conversation_id=conversation_id, message_id=message_id, sink=sink, origin=origin
    )
    future.add_done_callback(_log_failure)
    return future


def start_gated_turn(*, conversation_id: Any, sink: Sink | None = None, origin: str = "", **turn: Any) -> Any:
    """Start the agent before the turn is stored; see `services.turn_run_gated` (the caller resolves turn["gate"])."""
    future = get_runner().submit_gated(conversation_id=conversation_id, sink=sink, origin=origin, **turn)
    future.add_done_callback(_log_failure)
    return future


def _log_failure(future: concurrent.futures.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("a chat turn failed", exc_info=future.exception())
