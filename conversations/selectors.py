"""Reads of conversations, scoped to their owner, and the agent state a conversation implies."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from aicdn_project.errors import NotFound
from conversations.models import Conversation, Message, MessageRole, MessageStatus
from llm.agent import AgentState


def conversation_list(*, user: Any) -> QuerySet[Conversation]:
    return Conversation.objects.filter(owner=user).select_related("blueprint", "blueprint_version")


def conversation_get(*, user: Any, conversation_id: Any, for_update: bool = False) -> Conversation:
    """The user's own conversation; NotFound for a missing one and for someone else's alike (ids are not probed).
    `for_update` locks its row (and joins nothing, so no other row is locked)."""
    try:
        key = uuid.UUID(str(conversation_id))
    except ValueError:
        key = None
    rows = Conversation.objects.select_for_update().filter(owner=user) if for_update else conversation_list(user=user)
    conversation = rows.filter(pk=key).first() if key else None
    if conversation is None:
        raise NotFound(f"conversation {str(conversation_id)[:64]} not found", code="conversation_not_found")
    return conversation


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.all()


def conversation_ipr_list(*, user: Any, conversation: Conversation) -> list[dict[str, Any]]:
    """IPRs opened from this conversation that the user may see, oldest first."""
    from iprs.selectors import ipr_visible

    rows = ipr_visible(user=user).filter(conversation_id=str(conversation.pk)).order_by("created_at", "id")
    return [ipr_view(ipr) for ipr in rows]


def ipr_view(ipr: Any) -> dict[str, Any]:
    return {"id": ipr.pk, "state": ipr.state, "environment": ipr.environment.name, "title": ipr.title}


def ipr_states(*, user: Any, ipr_ids: list[int]) -> list[dict[str, Any]]:
    from iprs.selectors import ipr_visible

    return [ipr_view(ipr) for ipr in ipr_visible(user=user).filter(pk__in=ipr_ids).order_by("id")]


def agent_history(*, conversation: Conversation, before_id: int | None = None) -> list[dict[str, str]]:
    """The last complete messages before `before_id`, as the agent reads them."""
    qs = conversation.messages.filter(status=MessageStatus.COMPLETE).exclude(content="")
    if before_id is not None:
        qs = qs.filter(id__lt=before_id)
    rows = list(qs.order_by("-id").values("role", "content")[:4])
    return [{"role": r["role"], "content": r["content"]} for r in reversed(rows)]


def agent_state(*, user: Any, conversation: Conversation) -> AgentState:
    from engines.selectors import environment_list

    return AgentState(
        blueprint_id=conversation.blueprint_id,
        version_id=conversation.blueprint_version_id,
        blueprint_name=conversation.blueprint.name if conversation.blueprint else "",
        ipr_ids=[row["id"] for row in conversation_ipr_list(user=user, conversation=conversation)],
        environments=[env.name for env in environment_list()],
    )


def last_provenance(*, conversation: Conversation) -> dict[str, Any]:
    """The model, the latest generation intent and recent tool calls of the conversation (an IPR's provenance)."""
    model, intent = "", None
    calls: list[dict[str, Any]] = []
    for message in conversation.messages.filter(role=MessageRole.ASSISTANT).order_by("-id")[:10]:
        model = model or message.model
        if intent is None:
            intent = next((e.get("intent") for e in message.events if e.get("intent")), None)
        calls = list(message.tool_calls) + calls
    return {"model": model, "intent": intent, "tool_calls": calls[-10:]}
