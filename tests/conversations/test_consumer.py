"""The chat websocket through the real ASGI stack (session cookie, origin check, routing) with channels'
WebsocketCommunicator, the real Redis channel layer, and the scripted model server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from aicdn_project.asgi import application
from conversations import consumers, services
from conversations.models import Message, MessageStatus
from iprs.services import ipr_close
from tests.conversations.conftest import REPLY_PIECES, script_generate_turn
from tests.llm.conftest import stream_chunks

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def connect(conversation_id: Any, headers: list) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws/chat/{conversation_id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def events_until(communicator: WebsocketCommunicator, last: str, timeout: float = 20) -> list[dict]:
    events: list[dict] = []
    while True:
        event = await communicator.receive_json_from(timeout=timeout)
        events.append(event)
        if event["type"] == last:
            return events


async def closed_with(communicator: WebsocketCommunicator) -> tuple[dict, int]:
    error = await communicator.receive_json_from(timeout=5)
    close = await communicator.receive_output(timeout=5)
    assert close["type"] == "websocket.close"
    return error, close["code"]


@pytest.fixture
def conversation_of(session_headers):
    async def make(user):
        conversation = await sync_to_async(services.conversation_create)(owner=user)
        return conversation, await sync_to_async(session_headers)(user)

    return make


async def test_anonymous_socket_is_closed_with_4401(requester, session_headers):
    conversation = await sync_to_async(services.conversation_create)(owner=requester)
    communicator = await connect(conversation.pk, await sync_to_async(session_headers)(None))
    error, code = await closed_with(communicator)
    assert (error["error"], code) == ("not_authenticated", consumers.CLOSE_UNAUTHENTICATED)


async def test_someone_elses_conversation_is_closed_with_4403(requester, other_requester, session_headers):
    conversation = await sync_to_async(services.conversation_create)(owner=requester)
    headers = await sync_to_async(session_headers)(other_requester)
    for target in (conversation.pk, "00000000-0000-0000-0000-000000000000"):
        error, code = await closed_with(await connect(target, headers))
        assert (error["error"], code) == ("forbidden", consumers.CLOSE_FORBIDDEN)


async def test_a_foreign_origin_is_refused(requester, conversation_of):
    conversation, headers = await conversation_of(requester)
    headers = [(k, b"http://evil.example" if k == b"origin" else v) for k, v in headers]
    communicator = WebsocketCommunicator(application, f"/ws/chat/{conversation.pk}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


async def test_the_owner_gets_a_streamed_turn_and_the_message_is_stored(requester, conversation_of, scripted):
    conversation, headers = await conversation_of(requester)
    script_generate_turn(scripted)
    communicator = await connect(conversation.pk, headers)
    ready = await communicator.receive_json_from(timeout=5)
    assert ready == {"type": "ready", "conversation_id": str(conversation.pk), "iprs": []}
    await communicator.send_json_to({"type": "message", "text": "two web servers and a postgres database"})
    events = await events_until(communicator, "done")
    types = [e["type"] for e in events]
    assert types[:4] == ["start", "tool_call", "tool_result", "blueprint"]
    assert [e["text"] for e in events if e["type"] == "token"] == REPLY_PIECES
    done = events[-1]
    assert done["reply"]["content"] == "Your blueprint is ready." and done["reply"]["status"] == "complete"
    stored = await sync_to_async(Message.objects.get)(pk=done["reply"]["id"])
    assert stored.status == MessageStatus.COMPLETE and stored.tool_calls[0]["tool"] == "generate_blueprint"
    assert stored.tokens_out and stored.timings["total_ms"] > 0
    await communicator.disconnect()


async def test_another_socket_of_the_conversation_gets_the_turn_with_tokens_merged(
    requester, conversation_of, scripted, monkeypatch
):
    """The sender gets every token in-process; the conversation's other sockets get the same events through the
    channel layer, with tokens merged per GROUP_TOKEN_INTERVAL (here longer than the whole reply: one frame)."""
    from conversations import runner

    monkeypatch.setattr(runner, "GROUP_TOKEN_INTERVAL", 30.0)
    conversation, headers = await conversation_of(requester)
    script_generate_turn(scripted)
    sender, watcher = await connect(conversation.pk, headers), await connect(conversation.pk, headers)
    for socket in (sender, watcher):
        assert (await socket.receive_json_from(timeout=5))["type"] == "ready"
    await sender.send_json_to({"type": "message", "text": "two web servers and a postgres database"})
    sent, watched = await events_until(sender, "done"), await events_until(watcher, "done")
    assert [e["text"] for e in sent if e["type"] == "token"] == REPLY_PIECES
    # The first token goes out at once, the rest wait for the interval and leave, merged, before the next event.
    assert [e["text"] for e in watched if e["type"] == "token"] == [REPLY_PIECES[0], "".join(REPLY_PIECES[1:])]
    assert [e["type"] for e in watched if e["type"] != "token"] == [e["type"] for e in sent if e["type"] != "token"]
    assert watched[-1]["reply"] == sent[-1]["reply"]
    for socket in (sender, watcher):
        await socket.disconnect()


async def test_a_turn_taken_elsewhere_makes_the_socket_read_the_conversation_again(
    requester, conversation_of, scripted
):
    """The socket starts the model from the context it keeps; when the conversation changed meanwhile (a turn through
    the REST API here), storing the turn says so, and the turn runs again from a fresh read: the model sees it."""
    conversation, headers = await conversation_of(requester)
    socket = await connect(conversation.pk, headers)
    assert (await socket.receive_json_from(timeout=5))["type"] == "ready"
    scripted.reply_stream(["Hello ", "from REST."])
    await sync_to_async(services.chat_turn)(user=requester, text="hello", conversation_id=conversation.pk)
    scripted.reply_stream(["An ", "early ", "answer."])  # the request made from the kept (now old) context
    scripted.reply_stream(["Hello ", "again."])
    await socket.send_json_to({"type": "message", "text": "hello"})
    events = await events_until(socket, "done")
    assert events[-1]["reply"]["content"] == "Hello again."
    assert "".join(e["text"] for e in events if e["type"] == "token") == "Hello again."
    prompt = " ".join(m["content"] for m in scripted.requests[-1]["messages"])
    assert "assistant: Hello from REST." in prompt, prompt  # the fresh read has the other turn
    early = " ".join(m["content"] for m in scripted.requests[-2]["messages"])
    assert "Hello from REST." not in early  # the early request, from the kept context, did not (and was dropped)
    await socket.disconnect()


async def test_a_client_that_disconnects_mid_answer_still_finds_the_finished_message(
    requester, conversation_of, scripted
):
    conversation, headers = await conversation_of(requester)
    scripted.reply_intent(web_servers=2)
    scripted.replies.append({"stream": stream_chunks(["Finished ", "without ", "you."]), "sleep": 1.5})
    communicator = await connect(conversation.pk, headers)
    await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to({"type": "message", "text": "two web servers"})
    start = await communicator.receive_json_from(timeout=10)
    assert start["type"] == "start"
    await communicator.disconnect()  # the model is still generating (it sleeps 1.5 s before the reply)
    message = await sync_to_async(Message.objects.get)(pk=start["message_id"])
    assert message.status == MessageStatus.RUNNING
    for _ in range(200):
        await asyncio.sleep(0.1)
        await sync_to_async(message.refresh_from_db)()
        if message.status != MessageStatus.RUNNING:
            break
    assert (message.status, message.content) == (MessageStatus.COMPLETE, "Finished without you.")


async def test_messages_are_rate_limited_per_user(requester, conversation_of, scripted, chat_limits):
    conversation, headers = await conversation_of(requester)
    script_generate_turn(scripted)
    communicator = await connect(conversation.pk, headers)
    await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to({"type": "message", "text": "two web servers and a database"})
    await communicator.send_json_to({"type": "message", "text": "and one more thing"})
    events = await events_until(communicator, "done")
    refused = [e for e in events if e["type"] == "error"]
    assert len(refused) == 1 and refused[0]["error"] == "rate_limited" and refused[0]["details"]["group"] == "chat"
    assert await sync_to_async(Message.objects.filter(conversation=conversation).count)() == 2  # one turn only
    await communicator.send_json_to({"type": "ping"})  # still open after the refusal
    assert (await communicator.receive_json_from(timeout=5))["type"] == "pong"
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("frame", "error", "code"),
    [
        (json.dumps({"type": "message", "text": "x" * (16 * 1024)}), "frame_too_large", consumers.CLOSE_TOO_LARGE),
        ("{not json", "malformed", consumers.CLOSE_MALFORMED),
        (json.dumps(["message"]), "malformed", consumers.CLOSE_MALFORMED),
        (json.dumps({"type": "approve", "ipr": 1}), "malformed", consumers.CLOSE_MALFORMED),
    ],
)
async def test_oversized_or_malformed_frames_close_cleanly(requester, conversation_of, frame, error, code):
    conversation, headers = await conversation_of(requester)
    communicator = await connect(conversation.pk, headers)
    await communicator.receive_json_from(timeout=5)
    await communicator.send_to(text_data=frame)
    event, close_code = await closed_with(communicator)
    assert (event["error"], close_code) == (error, code)
    assert await sync_to_async(Message.objects.filter(conversation=conversation).count)() == 0


async def test_a_second_message_while_answering_is_refused(requester, conversation_of, scripted):
    conversation, headers = await conversation_of(requester)
    scripted.reply_intent(web_servers=1)
    scripted.replies.append({"stream": stream_chunks(["Slow."]), "sleep": 1.0})
    communicator = await connect(conversation.pk, headers)
    await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to({"type": "message", "text": "one web server"})
    await communicator.send_json_to({"type": "message", "text": "and a cache"})
    events = await events_until(communicator, "done")
    assert [e["error"] for e in events if e["type"] == "error"] == ["turn_running"]
    await communicator.disconnect()


async def test_ipr_status_and_deployment_progress_are_forwarded(
    requester, conversation_of, scripted, environment, monkeypatch
):
    monkeypatch.setattr(consumers, "IPR_POLL_SECONDS", 0.2)
    conversation, headers = await conversation_of(requester)
    script_generate_turn(scripted)
    communicator = await connect(conversation.pk, headers)
    await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to({"type": "message", "text": "two web servers and a postgres database"})
    await events_until(communicator, "done")
    result = await sync_to_async(services.conversation_open_ipr)(
        user=requester, conversation_id=conversation.pk, environment="staging"
    )
    ipr_id = result["ipr"]["id"]
    opened = await communicator.receive_json_from(timeout=5)
    assert opened == {"type": "ipr", "id": ipr_id, "state": "open", "environment": "staging", "title": opened["title"]}
    layer = get_channel_layer()
    operation = {"type": "deployment.operation", "ipr": ipr_id, "resource": "web", "action": "create", "status": "ok"}
    await layer.group_send(f"ipr-{ipr_id}", operation)
    forwarded = await communicator.receive_json_from(timeout=5)
    assert forwarded["type"] == "deployment" and forwarded["event"] == "operation" and forwarded["resource"] == "web"
    await layer.group_send(f"ipr-{ipr_id}", {"type": "deployment.paused", "ipr": ipr_id})  # a type added later
    assert (await communicator.receive_json_from(timeout=5))["event"] == "paused"
    await sync_to_async(ipr_close)(actor=requester, ipr_id=ipr_id, comment="not needed")
    update = await communicator.receive_json_from(timeout=5)
    assert (update["type"], update["id"], update["state"]) == ("ipr", ipr_id, "closed")
    await communicator.disconnect()
    # A new socket lists the conversation's IPRs on connect.
    again = await connect(conversation.pk, headers)
    ready = await again.receive_json_from(timeout=5)
    assert [(i["id"], i["state"]) for i in ready["iprs"]] == [(ipr_id, "closed")]
    await again.disconnect()
