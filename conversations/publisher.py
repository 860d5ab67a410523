"""The one publisher of conversation events: every event of a turn goes to the channels group of its conversation."""

from __future__ import annotations

from typing import Any

from channels.layers import get_channel_layer

from aicdn_project.realtime import publish


def group_name(conversation_id: Any) -> str:
    return f"conversation-{conversation_id}"


def ipr_group_name(ipr_id: int) -> str:
    """The group iprs/engines publish IPR and deployment events to (engines.executor: `ipr-<id>`)."""
    return f"ipr-{ipr_id}"


def publish_event(conversation_id: Any, event: dict[str, Any]) -> None:
    """From a service: sent once the surrounding transaction commits."""
    publish(group_name(conversation_id), {"type": "chat.event", "event": event})


async def apublish_event(conversation_id: Any, event: dict[str, Any], *, origin: str = "") -> None:
    """From the turn runner's event loop, per token: sent at once (turn events are not tied to a transaction).
    `origin`: the channel of the socket that already got the event in-process (consumers.ChatConsumer drops it)."""
    layer = get_channel_layer()
    if layer is not None:
        message = {"type": "chat.event", "event": event}
        if origin:
            message["origin"] = origin
        await layer.group_send(group_name(conversation_id), message)
