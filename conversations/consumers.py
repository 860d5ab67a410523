"""`/ws/chat/<conversation_id>/`: the chat socket. Authenticates, checks ownership, limits and size-checks each
frame, starts turns (run elsewhere, see runner.py), and forwards the conversation's events and the live status and
deployment progress of the IPRs opened in it.

Client -> server frames: {"type": "message", "text": "..."} and {"type": "ping"}.
Server -> client frames: ready, start, tool_call, tool_result, blueprint, ipr, token, done, error, deployment, pong.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import time
from typing import Any

from asgiref.sync import SyncToAsync
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import close_old_connections, connections

from aicdn_project import metrics
from aicdn_project.errors import ApplicationError
from aicdn_project.ratelimit import check_rate, rejection_body, scope_key
from conversations import publisher, runner, selectors, services

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024
IPR_POLL_SECONDS = 3.0  # IPR state changes (approvals in the admin) are read back at this pace
# The agent's context (history, blueprint, IPRs, environments) is kept by the socket and re-read after every turn and
# when older than this: environment names (the only part no conversation change marks) are at most this stale.
CONTEXT_MAX_AGE = 20.0

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403  # someone else's conversation, or none with that id: one answer for both
CLOSE_MALFORMED = 1007
CLOSE_TOO_LARGE = 1009
CLOSE_UNSUPPORTED = 1003


def _keeps_connection() -> bool:
    return not getattr(connections["default"], "pool", None)


def _drop_if_broken() -> None:
    """Django's unusable-connection check (close_if_unusable_or_obsolete) without its age rule."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            if conn.is_usable():
                conn.errors_occurred = False
            else:
                conn.close()


def socket_db(fn: Any) -> Any:
    """channels' database_sync_to_async, except for unpooled connections (SQLite): the sockets' one sync thread keeps
    its connection between hops (checked for usability first, as Django does), instead of opening one per hop
    (~0.7 ms of CPU measured, and the message hop is on the first token's path). Pooled connections (PostgreSQL) go
    back to the pool before and after every hop, as with database_sync_to_async: one held per open socket would
    drain the pool."""

    def call(*args: Any, **kwargs: Any) -> Any:
        keep = _keeps_connection()
        _drop_if_broken() if keep else close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            if not keep:
                close_old_connections()

    return SyncToAsync(functools.wraps(fn)(call), thread_sensitive=True)


class ChatConsumer(AsyncWebsocketConsumer):
    conversation_id: str = ""
    user: Any = None

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._local: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._forwarder: asyncio.Task | None = None
        self._context: tuple[Any, list[dict[str, str]], Any] | None = None
        self._context_at = 0.0
        self.ipr_ids: set[int] = set()
        self.ipr_states: dict[int, str] = {}
        self._stack = contextlib.ExitStack()
        self._poller: asyncio.Task | None = None
        self._groups: list[str] = []
        self.user = self.scope.get("user")
        await self.accept()  # accept, then close with a code the browser can read (a refused handshake has none)
        if self.user is None or not self.user.is_authenticated:
            await self._close_with("not_authenticated", "log in to chat", CLOSE_UNAUTHENTICATED)
            return
        requested = self.scope["url_route"]["kwargs"]["conversation_id"]
        try:
            conversation, iprs, context = await self._load(requested)
        except ApplicationError:
            await self._close_with("forbidden", "no such conversation of yours", CLOSE_FORBIDDEN)
            return
        self.conversation_id = str(conversation.pk)
        self._context, self._context_at = context, time.monotonic()
        self._stack.enter_context(metrics.websocket_connection("chat"))
        await self._join(publisher.group_name(self.conversation_id))
        for ipr in iprs:
            await self._follow_ipr(ipr["id"], ipr["state"])
        await self._send({"type": "ready", "conversation_id": self.conversation_id, "iprs": iprs})
        self._poller = asyncio.ensure_future(self._poll_iprs())
        self._forwarder = asyncio.ensure_future(self._forward_local())

    async def disconnect(self, code: int) -> None:
        for task in (getattr(self, "_poller", None), getattr(self, "_forwarder", None)):
            if task is not None:
                task.cancel()
        for group in getattr(self, "_groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        if hasattr(self, "_stack"):
            self._stack.close()

    # -- client frames ----------------------------------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.conversation_id:
            return
        if bytes_data is not None:
            await self._close_with("unsupported", "send JSON text frames", CLOSE_UNSUPPORTED)
            return
        if len((text_data or "").encode("utf-8")) > MAX_FRAME_BYTES:
            await self._close_with("frame_too_large", f"frames are limited to {MAX_FRAME_BYTES} bytes", CLOSE_TOO_LARGE)
            return
        try:
            frame = json.loads(text_data or "")
        except ValueError:
            frame = None
        if not isinstance(frame, dict) or frame.get("type") not in ("message", "ping"):
            await self._close_with("malformed", 'send {"type": "message", "text": "..."}', CLOSE_MALFORMED)
            return
        if frame["type"] == "ping":
            await self._send({"type": "pong"})
            return
        try:
            refused = await self._start(frame.get("text"))
        except ApplicationError as exc:
            await self._send({"type": "error", **exc.as_dict()})
            return
        if refused is not None:
            await self._send(refused)

    @socket_db
    def _start(self, text: Any) -> dict[str, Any] | None:
        """Count the message, start the agent's model request, then record the turn: one thread hop, as this is on
        the first-token path.

        The agent starts from the context this socket keeps (read when it opened and after every turn), so no read
        precedes the model request; storing the messages (turn_start) runs while the model answers, and the agent is
        held at its first event until it is stored (see services.turn_run_gated). The store also tells whether the
        conversation changed since that context was read (another tab's turn, say): then the early request is
        dropped and the turn runs from a fresh read. A refused start (Conflict: a turn is running, enforced by the
        database) reaches only this socket. The turn's events come back to this socket in-process (`_local_sink`);
        their copies on the channel layer are for the conversation's other sockets."""
        allowed, retry_after = check_rate(scope_key(self.scope), "chat")
        if not allowed:
            return {"type": "error", **rejection_body("chat", retry_after)}
        text = services.message_text_check(text)
        context = self._context if time.monotonic() - self._context_at < CONTEXT_MAX_AGE else None
        if context is None:
            context = services.turn_prepare(user=self.user, conversation_id=self.conversation_id)
        conversation, history, state = context
        gate: concurrent.futures.Future = concurrent.futures.Future()
        runner.start_gated_turn(
            conversation_id=self.conversation_id,
            sink=self._local_sink,
            origin=self.channel_name,
            user=self.user,
            conversation=conversation,
            text=text,
            history=history,
            state=state,
            gate=gate,
        )
        try:
            _conversation, reply, unchanged = services.turn_start_since(
                user=self.user, text=text, conversation_id=self.conversation_id, stamp=conversation.updated_at
            )
        except BaseException as exc:
            gate.set_exception(exc)
            raise
        self._context = None  # this turn changes the conversation: read again once it ends
        if unchanged:
            gate.set_result(reply)
        else:
            gate.set_exception(services.StaleContext())
            runner.start_turn(
                user_id=self.user.pk,
                conversation_id=self.conversation_id,
                message_id=reply.pk,
                sink=self._local_sink,
                origin=self.channel_name,
            )
        return None

    def _local_sink(self, event: dict[str, Any]) -> None:
        """The runner's events of a turn this socket started, handed over in-process (called on the runner's loop)."""
        self._loop.call_soon_threadsafe(self._local.put_nowait, event)

    async def _forward_local(self) -> None:
        while True:
            event = await self._local.get()
            try:
                await self._chat(event)
            except Exception:
                logger.warning("could not forward a chat event to its socket", exc_info=True)

    @socket_db
    def _read_context(self) -> tuple[Any, list[dict[str, str]], Any]:
        return services.turn_prepare(user=self.user, conversation_id=self.conversation_id)

    async def _refresh_context(self) -> None:
        try:
            context = await self._read_context()
        except Exception:
            logger.warning("could not read a chat socket's context", exc_info=True)
            return
        self._context, self._context_at = context, time.monotonic()

    @socket_db
    def _load(self, conversation_id: str) -> tuple[Any, list[dict[str, Any]], tuple[Any, list[dict[str, str]], Any]]:
        context = services.turn_prepare(user=self.user, conversation_id=conversation_id)  # NotFound: not theirs
        conversation = context[0]
        return conversation, selectors.conversation_ipr_list(user=self.user, conversation=conversation), context

    @socket_db
    def _ipr_states(self, ipr_ids: list[int]) -> list[dict[str, Any]]:
        return selectors.ipr_states(user=self.user, ipr_ids=ipr_ids)

    # -- group events -----------------------------------------------------------------------------------------------
    async def dispatch(self, message: dict[str, Any]) -> None:
        """channels' dispatch without its thread hop to close database connections before every handler (channels
        >= 4.2): every database access here goes through `socket_db`, which looks after its connections, and that
        hop was on the path of every chat message."""
        kind = message.get("type", "")
        if kind.startswith(("deployment.", "ipr.")) and not hasattr(self, kind.replace(".", "_")):
            await self.ipr_event(message)  # a newer event type on an IPR group: forwarded, never a crash
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {kind}")
        await handler(message)

    async def chat_event(self, message: dict[str, Any]) -> None:
        if message.get("origin") == self.channel_name:
            return  # this socket's own turn: its events came in-process
        await self._chat(message["event"])

    async def _chat(self, event: dict[str, Any]) -> None:
        if event.get("type") == "ipr" and isinstance(event.get("id"), int):
            await self._follow_ipr(event["id"], event.get("state", ""))
        await self._send(event)
        if event.get("type") in ("done", "error") and "reply" in event:  # a turn ended: its context is the new one
            await self._refresh_context()

    async def ipr_event(self, message: dict[str, Any]) -> None:
        """deployment.started / deployment.operation / deployment.finished / ipr.* from the IPR's group."""
        kind = message.get("type", "")
        payload = {k: v for k, v in message.items() if k != "type"}
        if kind.startswith("deployment."):
            await self._send({"type": "deployment", "event": kind.split(".", 1)[1], **payload})
            if kind != "deployment.operation":
                await self._refresh_iprs()
        else:
            await self._refresh_iprs()

    deployment_started = ipr_event
    deployment_operation = ipr_event
    deployment_finished = ipr_event

    # -- helpers ----------------------------------------------------------------------------------------------------
    async def _send(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(event, default=str))

    async def _close_with(self, error: str, message: str, code: int) -> None:
        await self._send({"type": "error", "error": error, "message": message})
        await self.close(code=code)

    async def _join(self, group: str) -> None:
        if group not in self._groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self._groups.append(group)

    async def _follow_ipr(self, ipr_id: int, state: str) -> None:
        self.ipr_ids.add(ipr_id)
        self.ipr_states[ipr_id] = state
        await self._join(publisher.ipr_group_name(ipr_id))

    async def _refresh_iprs(self) -> None:
        if not self.ipr_ids:
            return
        for ipr in await self._ipr_states(sorted(self.ipr_ids)):
            if self.ipr_states.get(ipr["id"]) != ipr["state"]:
                self.ipr_states[ipr["id"]] = ipr["state"]
                await self._send({"type": "ipr", **ipr})

    async def _poll_iprs(self) -> None:
        # IPR state changes are not published as events (only deployments are), so approvals, rejections and the
        # like are read back here; a deployment event triggers an immediate read as well.
        while True:
            await asyncio.sleep(IPR_POLL_SECONDS)
            try:
                await self._refresh_iprs()
            except Exception:
                logger.warning("could not refresh IPR states for a chat socket", exc_info=True)
            if time.monotonic() - self._context_at > CONTEXT_MAX_AGE / 2:
                await self._refresh_context()
