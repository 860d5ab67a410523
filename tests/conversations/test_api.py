"""REST and SSE chat, the conversation endpoints, opening an IPR from a conversation, and the chat page's access."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from conversations import services
from conversations.models import Conversation, Message, MessageStatus
from iprs.models import IPR
from tests.conversations.conftest import GENERATE_REQUEST, REPLY_PIECES, forbidden_audit_events, script_generate_turn

pytestmark = pytest.mark.django_db(transaction=True)


def sse_events(response) -> list[tuple[str, dict]]:
    body = b"".join(response.streaming_content).decode()
    events = []
    for block in body.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        name = next(line[7:] for line in lines if line.startswith("event: "))
        data = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
        events.append((name, data))
    return events


def test_plain_chat_runs_a_turn_and_answers_with_the_stored_message(requester_api, requester, scripted):
    script_generate_turn(scripted)
    response = requester_api.post("/api/v1/conversation/chat", {"message": GENERATE_REQUEST}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    conversation = Conversation.objects.get(pk=body["conversation_id"])
    assert conversation.owner == requester and conversation.title.startswith("Create a web app")
    assert body["message"]["content"] == "Your blueprint is ready." and body["message"]["status"] == "complete"
    assert body["blueprint"]["version_id"] == conversation.blueprint_version_id
    assert [m.role for m in conversation.messages.all()] == ["user", "assistant"]


def test_sse_stream_speaks_the_cli_protocol(requester_api, scripted):
    script_generate_turn(scripted)
    response = requester_api.post("/api/v1/conversation/chat/stream", {"message": GENERATE_REQUEST}, format="json")
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    events = sse_events(response)
    names = [name for name, _ in events]
    assert names[:4] == ["start", "tool_call", "tool_result", "blueprint"] and names[-1] == "done"
    assert [data["text"] for name, data in events if name == "token"] == REPLY_PIECES
    assert events[1][1]["tool"] == "generate_blueprint"
    done = events[-1][1]
    assert Message.objects.get(pk=done["reply"]["id"]).status == MessageStatus.COMPLETE


def test_sse_continues_a_conversation_and_reports_model_errors(requester_api, requester, settings, dead_url):
    conversation = services.conversation_create(owner=requester)
    settings.LLM_BASE_URL, settings.LLM_MAX_RETRIES = dead_url, 0
    response = requester_api.post(
        "/api/v1/conversation/chat/stream",
        {"message": "what can you do", "conversation_id": str(conversation.pk)},
        format="json",
    )
    name, data = sse_events(response)[-1]
    assert name == "error" and data["error"] == "llm_unavailable" and isinstance(data["message"], str)
    assert conversation.messages.get(role="assistant").status == MessageStatus.FAILED


def test_chat_input_and_access_errors(requester_api, requester, other_requester, api):
    theirs = services.conversation_create(owner=other_requester)
    cases = [
        ({}, 400),
        ({"message": ""}, 400),
        ({"message": "x" * 5000}, 400),
        ({"message": "hi", "conversation_id": str(theirs.pk)}, 404),
        ({"message": "hi", "conversation_id": "not-a-uuid"}, 400),
    ]
    for path in ("/api/v1/conversation/chat", "/api/v1/conversation/chat/stream"):
        for body, status in cases:
            assert requester_api.post(path, body, format="json").status_code == status, (path, body)
        assert api.post(path, {"message": "hi"}, format="json").status_code == 401
        assert requester_api.post(path, "[1]", content_type="application/json").status_code == 400
    assert Message.objects.count() == 0


def test_session_clients_need_the_csrf_token(requester, scripted):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(requester)
    refused = browser.post("/api/v1/conversation/chat", {"message": "hi"}, content_type="application/json")
    assert refused.status_code == 403
    page = browser.get("/chat/")
    token = page.cookies["csrftoken"].value
    scripted.reply_stream(["Hello."])
    accepted = browser.post(
        "/api/v1/conversation/chat", {"message": "hi"}, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 200 and accepted.json()["message"]["content"] == "Hello."


def test_conversations_list_and_detail_are_the_owners(requester_api, requester, other_requester, as_client):
    mine = services.conversation_create(owner=requester, title="mine")
    services.conversation_create(owner=other_requester, title="theirs")
    assert [c["title"] for c in requester_api.get("/api/v1/conversations").json()] == ["mine"]
    detail = requester_api.get(f"/api/v1/conversations/{mine.pk}").json()
    assert detail["messages"] == [] and detail["iprs"] == [] and detail["current_blueprint"] is None
    assert as_client(other_requester).get(f"/api/v1/conversations/{mine.pk}").status_code == 404
    created = requester_api.post("/api/v1/conversations", {"title": "new"}, format="json")
    assert created.status_code == 201 and Conversation.objects.get(pk=created.json()["id"]).owner == requester


def test_open_ipr_from_a_conversation(requester_api, requester, scripted, environment, as_client, other_requester):
    script_generate_turn(scripted)
    conversation_id = requester_api.post(
        "/api/v1/conversation/chat", {"message": GENERATE_REQUEST}, format="json"
    ).json()["conversation_id"]
    path = f"/api/v1/conversations/{conversation_id}/ipr"
    assert as_client(other_requester).post(path, {"environment": "staging"}, format="json").status_code == 404
    assert requester_api.post(path, {"environment": "nowhere"}, format="json").status_code == 404
    response = requester_api.post(path, {"environment": "staging"}, format="json")
    assert response.status_code == 201, response.content
    ipr = IPR.objects.get(pk=response.json()["ipr"]["id"])
    assert (ipr.state, ipr.origin, ipr.conversation_id, ipr.author) == ("open", "chat", conversation_id, requester)
    assert ipr.ai_provenance["model"] == "scripted" and ipr.ai_provenance["intent"]["web_servers"] == 2
    assert ipr.ai_provenance["tool_calls"][0]["tool"] == "generate_blueprint"
    detail = requester_api.get(f"/api/v1/conversations/{conversation_id}").json()
    assert detail["iprs"] == [{"id": ipr.pk, "state": "open", "environment": "staging", "title": ipr.title}]
    assert forbidden_audit_events() == []


def test_open_ipr_needs_a_blueprint(requester_api, requester, environment):
    conversation = services.conversation_create(owner=requester)
    response = requester_api.post(
        f"/api/v1/conversations/{conversation.pk}/ipr", {"environment": "staging"}, format="json"
    )
    assert response.status_code == 409 and response.json()["error"] == "no_blueprint"


def test_chat_page_requires_login_and_escapes_nothing_into_html(client, requester):
    response = client.get("/chat/")
    assert response.status_code == 302 and response["Location"] == "/admin/login/?next=/chat/"
    assert client.get("/").headers["Location"] == "/chat/"
    client.force_login(requester)
    page = client.get("/chat/")
    html = page.content.decode()
    assert page.status_code == 200 and 'name="csrf-token"' in html and "conversations/chat.js" in html
    assert 'data-can-open-ipr="true"' in html
    script = client.get("/static/conversations/chat.js")
    source = b"".join(script.streaming_content).decode() if script.streaming else script.content.decode()
    assert "innerHTML" not in source and "insertAdjacentHTML" not in source and "textContent" in source


@pytest.fixture
def as_client():
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make
