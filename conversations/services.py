"""Conversation writes: create, start a turn, run it (the agent) and persist what it said and did, open an IPR."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from aicdn_project.errors import Conflict, ValidationFailed
from conversations import publisher, selectors
from conversations.models import Conversation, Message, MessageRole, MessageStatus
from llm.agent import MAX_MESSAGE_CHARS, Agent
from llm.client import LLMClient
from llm.tools import ToolContext, run_tool

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
# Events kept on the assistant message so a reloaded page shows what the turn produced.
_KEPT_EVENTS = ("blueprint", "ipr")
# A turn makes at most a handful of model calls, each bounded by LLM_TIMEOUT; one running far longer has died.
RUNNING_TURN_TIMEOUT = 15 * 60
# How long a gated turn waits for its caller to store the turn (turn_start: one short transaction).
GATE_TIMEOUT = 60.0


class StaleContext(Exception):
    """A gated turn's context was read before the conversation last changed: the turn runs again from a new read."""


def _title_from(text: str) -> str:
    words = " ".join(text.split())
    return words if len(words) <= 80 else words[:77].rsplit(" ", 1)[0] + "..."


def conversation_create(*, owner: Any, title: str = "") -> Conversation:
    return Conversation.objects.create(owner=owner, title=_title_from(title or ""))


def message_text_check(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed(
            "send a non-empty message", code="empty_message", details={"errors": [{"path": "$.message"}]}
        )
    stripped: str = text.strip()
    if len(stripped) > MAX_MESSAGE_CHARS:
        raise ValidationFailed(
            f"the message is {len(stripped)} characters; keep it under {MAX_MESSAGE_CHARS}", code="message_too_long"
        )
    return stripped


def turn_abandon_stale(*, conversation: Conversation) -> int:
    """Mark turns that have been running longer than RUNNING_TURN_TIMEOUT as failed (their process died)."""
    cutoff = timezone.now() - timedelta(seconds=RUNNING_TURN_TIMEOUT)
    return conversation.messages.filter(status=MessageStatus.RUNNING, created_at__lt=cutoff).update(
        status=MessageStatus.FAILED,
        error={"error": "abandoned", "message": "the turn did not finish (the server stopped while it ran)"},
        finished_at=timezone.now(),
    )


def turn_start(*, user: Any, text: Any, conversation_id: Any = None) -> tuple[Conversation, Message, Message]:
    """Record the user's message and a running assistant message; Conflict when a turn already runs."""
    conversation, user_message, reply, _previous = _turn_start(user=user, text=text, conversation_id=conversation_id)
    return conversation, user_message, reply


def turn_start_since(
    *, user: Any, text: Any, conversation_id: Any, stamp: datetime | None
) -> tuple[Conversation, Message, bool]:
    """`turn_start` for a caller that already read the turn's context (`turn_prepare`): also says whether the
    conversation is unchanged since that read (its `updated_at` is still `stamp`: no turn ended, no IPR was opened
    from it, no blueprint change), i.e. whether that context is still the conversation's."""
    conversation, _user_message, reply, previous = _turn_start(user=user, text=text, conversation_id=conversation_id)
    return conversation, reply, stamp is not None and previous == stamp


def _turn_start(
    *, user: Any, text: Any, conversation_id: Any
) -> tuple[Conversation, Message, Message, datetime | None]:
    text = message_text_check(text)
    with transaction.atomic():
        if conversation_id in (None, ""):
            conversation, previous = conversation_create(owner=user, title=text), None
        else:
            # Locked: concurrent starts of one conversation queue here (PostgreSQL); SQLite serialises writers.
            conversation = selectors.conversation_get(user=user, conversation_id=conversation_id, for_update=True)
            previous = conversation.updated_at
            if not conversation.title:
                conversation.title = _title_from(text)
        user_message, reply = _turn_messages(conversation, text)
        conversation.save(update_fields=["title", "updated_at"])
    return conversation, user_message, reply, previous


def _turn_messages(conversation: Conversation, text: str) -> tuple[Message, Message]:
    """Insert the user's message and the running reply in one statement. The database allows one running message
    per conversation: a refusal means a turn runs, unless that turn is stale (its process died), which is then
    marked failed and the insert tried once more."""
    for attempt in (1, 2):
        pair = [
            Message(conversation=conversation, role=MessageRole.USER, content=text),
            Message(conversation=conversation, role=MessageRole.ASSISTANT, status=MessageStatus.RUNNING),
        ]
        try:
            with transaction.atomic():
                Message.objects.bulk_create(pair)
            return pair[0], pair[1]
        except IntegrityError as exc:
            if attempt == 2 or not turn_abandon_stale(conversation=conversation):
                raise Conflict("the assistant is still answering in this conversation", code="turn_running") from exc
    raise AssertionError("unreachable")


def _message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "role": message.role,
        "status": message.status,
        "content": message.content,
        "tool_calls": message.tool_calls,
        "tokens_in": message.tokens_in,
        "tokens_out": message.tokens_out,
        "model": message.model,
        "timings": message.timings,
        "error": message.error,
        "created_at": message.created_at.isoformat() if message.created_at else None,
        "finished_at": message.finished_at.isoformat() if message.finished_at else None,
    }


def turn_prepare(*, user: Any, conversation_id: Any) -> tuple[Conversation, list[dict[str, str]], Any]:
    """What the agent reads before its first model call (the user's conversation, its history, its state); no
    writes. Read before `turn_start` stores the new message, the history is the same: it holds complete messages
    only, and no other turn can be running if that start succeeds."""
    conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
    history = selectors.agent_history(conversation=conversation)
    return conversation, history, selectors.agent_state(user=user, conversation=conversation)


def turn_run(
    *, user: Any, conversation_id: Any, message_id: int, emit: Emit, client: LLMClient | None = None
) -> Message:
    """Run the agent for the running assistant message, emitting its events, then persist the message.

    The message is stored before "done" / "error" is emitted, so whoever sees "done" can read it back; it is stored
    even when nobody listens any more (the emitter's failures are logged, never propagated).
    """
    conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
    reply = conversation.messages.get(pk=message_id, role=MessageRole.ASSISTANT)
    user_message = conversation.messages.filter(role=MessageRole.USER, id__lt=reply.pk).order_by("-id").first()
    history = selectors.agent_history(conversation=conversation, before_id=user_message.pk if user_message else None)
    state = selectors.agent_state(user=user, conversation=conversation)
    agent = Agent(user=user, client=client, conversation_id=str(conversation.pk))
    events = agent.run(user_message.content if user_message else "", history=history, state=state)
    return _drive(agent, events, None, conversation=conversation, reply=reply, state=state, emit=emit)


def turn_run_gated(
    *,
    user: Any,
    conversation: Conversation,
    text: str,
    history: list[dict[str, str]],
    state: Any,
    gate: Future,
    emit: Emit,
    client: LLMClient | None = None,
) -> Message | None:
    """Start the agent (its model request) at once, while the caller stores the turn with `turn_start` and then
    resolves `gate` with the running assistant message (or with turn_start's exception, or StaleContext when the
    context given here is no longer the conversation's: the caller then runs the stored turn with `turn_run`).

    Nothing is emitted and no tool runs before the gate opens: the agent is held at its first event (a tool call
    is yielded before the tool runs), so a refused start (another turn running, the constraint) costs only an
    abandoned model request and returns None. Once the gate opens, the turn runs and its message is persisted
    exactly as in `turn_run`, whoever still listens.
    """
    agent = Agent(user=user, client=client, conversation_id=str(conversation.pk))
    events = agent.run(text, history=history, state=state)
    first: dict[str, Any] | None = None
    failure: BaseException | None = None

    try:
        first = next(events)
    except StopIteration:
        pass
    except Exception as exc:  # handled like a failure inside the run, once the turn is known to exist
        failure = exc
    try:
        reply = gate.result(timeout=GATE_TIMEOUT)
    except BaseException:
        events.close()  # the start was refused (or never came): drop the model request, emit nothing
        return None
    return _drive(agent, events, first, conversation=conversation, reply=reply, state=state, emit=emit, failure=failure)


def _drive(
    agent: Agent,
    events: Iterator[dict[str, Any]],
    first: dict[str, Any] | None,
    *,
    conversation: Conversation,
    reply: Message,
    state: Any,
    emit: Emit,
    failure: BaseException | None = None,
) -> Message:
    def send(event: dict[str, Any]) -> None:
        try:
            emit(event)
        except Exception:  # a listener that went away must not stop the turn
            logger.warning("could not emit a %s event", event.get("type"), exc_info=True)

    kept: list[dict[str, Any]] = []
    final: dict[str, Any] | None = None
    send({"type": "start", "conversation_id": str(conversation.pk), "message_id": reply.pk})
    try:
        if failure is not None:
            raise failure
        for event in itertools.chain([first] if first is not None else [], events):
            if event["type"] in ("done", "error"):
                final = event
                break
            if event["type"] in _KEPT_EVENTS:
                kept.append(event)
            send(event)
    except Exception as exc:  # a bug or a database error: the message must still end, as failed
        logger.exception("chat turn %s failed", reply.pk)
        final = {"type": "error", "error": "internal_error", "message": f"the turn failed: {type(exc).__name__}"}
    result = agent.result
    failed = final is None or final["type"] == "error"
    reply.content = result.content
    reply.status = MessageStatus.FAILED if failed else MessageStatus.COMPLETE
    reply.tool_calls = result.tool_calls
    reply.events = kept
    reply.error = {k: v for k, v in (final or {}).items() if k != "type"} if failed else None
    reply.tokens_in, reply.tokens_out = result.tokens_in or None, result.tokens_out or None
    reply.model = result.model or ""
    reply.timings = result.timings
    reply.finished_at = timezone.now()
    with transaction.atomic():
        reply.save()
        changes: dict[str, Any] = {"updated_at": timezone.now()}
        if state.version_id and state.version_id != conversation.blueprint_version_id:
            changes.update(blueprint_id=state.blueprint_id, blueprint_version_id=state.version_id)
        Conversation.objects.filter(pk=conversation.pk).update(**changes)
    view = _message_view(reply)
    if failed:
        send({**(final or {"type": "error", "error": "internal_error", "message": "the turn failed"}), "reply": view})
    else:
        send({"type": "done", "conversation_id": str(conversation.pk), "reply": view})
    return reply


def chat_turn(
    *, user: Any, text: Any, conversation_id: Any = None, emit: Emit | None = None, client: LLMClient | None = None
) -> Message:
    """Start and run one turn in the calling thread (scripts and tests; the web interfaces use the runner)."""
    conversation, _user_message, reply = turn_start(user=user, text=text, conversation_id=conversation_id)
    return turn_run(
        user=user, conversation_id=conversation.pk, message_id=reply.pk, emit=emit or (lambda e: None), client=client
    )


def conversation_open_ipr(
    *, user: Any, conversation_id: Any, environment: Any, title: str = "", description: str = ""
) -> dict[str, Any]:
    """The page's "Open IPR" button: the create_ipr tool for the conversation's current blueprint, as the user."""
    conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
    if conversation.blueprint_id is None:
        raise Conflict("this conversation has no blueprint yet: describe what you need first", code="no_blueprint")
    provenance = selectors.last_provenance(conversation=conversation)
    ctx = ToolContext(
        user=user,
        conversation_id=str(conversation.pk),
        model=provenance["model"],
        intent=provenance["intent"],
        tool_calls=provenance["tool_calls"],
        origin="chat",
    )
    arguments: dict[str, Any] = {"blueprint_id": conversation.blueprint_id, "environment": environment}
    if title:
        arguments["title"] = title
    if description:
        arguments["description"] = description
    result = run_tool("create_ipr", arguments, ctx=ctx)
    event = {"type": "ipr", **result["ipr"]}
    with transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
        publisher.publish_event(conversation.pk, event)
    return result
