"""Conversation endpoints: list/create/retrieve conversations, open an IPR from one, and chat (plain and SSE).

The two chat endpoints are async Django views: a turn takes seconds of model time, and a sync view under daphne
would hold the one thread every sync view shares. They authenticate exactly like the DRF views (token, or session
with its CSRF check) and run the turn through the runner, so it completes even when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aicdn_project.errors import ApplicationError
from aicdn_project.tokenauth import CachedTokenAuthentication
from conversations import runner, selectors, services
from conversations.api.serializers import (
    ChatInputSerializer,
    ConversationCreateSerializer,
    ConversationSerializer,
    MessageSerializer,
    OpenIPRSerializer,
)
from llm.agent import blueprint_snapshot

TURN_WAIT_SECONDS = 900  # the plain chat endpoint waits this long for a turn before answering 504


def _valid(serializer_class: type, data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def conversation_detail(*, user: Any, conversation_id: Any) -> dict[str, Any]:
    conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
    data = dict(ConversationSerializer(conversation).data)
    data["messages"] = MessageSerializer(selectors.message_list(conversation=conversation), many=True).data
    data["iprs"] = selectors.conversation_ipr_list(user=user, conversation=conversation)
    data["current_blueprint"] = None
    if conversation.blueprint_version_id:
        # A version no longer visible to the user (or removed) shows as none.
        with contextlib.suppress(ApplicationError):
            data["current_blueprint"] = blueprint_snapshot(user=user, version_id=conversation.blueprint_version_id)
    return data


class ConversationListView(APIView):
    """GET: the user's conversations, newest first. POST {"title"?}: start an empty one."""

    @extend_schema(responses=ConversationSerializer(many=True))
    def get(self, request: Request) -> Response:
        rows = selectors.conversation_list(user=request.user)[:200]
        return Response(ConversationSerializer(rows, many=True).data)

    @extend_schema(request=ConversationCreateSerializer, responses={201: ConversationSerializer})
    def post(self, request: Request) -> Response:
        data = _valid(ConversationCreateSerializer, request.data)
        conversation = services.conversation_create(owner=request.user, title=data["title"])
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)


class ConversationDetailView(APIView):
    """GET: one conversation of the user with its messages, IPRs and current blueprint (YAML, cost, findings)."""

    def get(self, request: Request, conversation_id: str) -> Response:
        return Response(conversation_detail(user=request.user, conversation_id=conversation_id))


class ConversationOpenIPRView(APIView):
    """POST {"environment", "title"?, "description"?}: open an IPR for the conversation's current blueprint."""

    @extend_schema(request=OpenIPRSerializer)
    def post(self, request: Request, conversation_id: str) -> Response:
        data = _valid(OpenIPRSerializer, request.data)
        result = services.conversation_open_ipr(user=request.user, conversation_id=conversation_id, **data)
        return Response(result, status=status.HTTP_201_CREATED)


# --- chat ------------------------------------------------------------------------------------------------------------
def _error(status_code: int, error: str, message: str, details: Any = None) -> JsonResponse:
    return JsonResponse({"error": error, "message": message, "details": details or {}}, status=status_code)


def _authenticate(request: HttpRequest) -> Any:
    """The DRF way: a token, else the session (which enforces CSRF); raises DRF's exceptions."""
    # The JSON parser is there for the CSRF check, which reads request.POST (empty for a JSON body).
    drf_request = Request(
        request, parsers=[JSONParser()], authenticators=[CachedTokenAuthentication(), SessionAuthentication()]
    )
    user = drf_request.user
    if user is None or not user.is_authenticated:
        raise exceptions.NotAuthenticated()
    return user


def _start(user: Any, body: dict[str, Any]) -> tuple[str, int]:
    data = _valid(ChatInputSerializer, body)
    conversation, _user_message, reply = services.turn_start(
        user=user, text=data["message"], conversation_id=data.get("conversation_id")
    )
    return str(conversation.pk), reply.pk


async def _begin(request: HttpRequest) -> tuple[Any, str, int] | JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, "parse_error", "the body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "invalid", 'send {"message": "...", "conversation_id": "..."?}')
    try:
        user = await sync_to_async(_authenticate)(request)
        conversation_id, message_id = await sync_to_async(_start)(user, body)
    except exceptions.APIException as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        message = str(exc.detail) if not detail else "invalid input"
        return _error(exc.status_code, str(exc.default_code), message, detail)
    except ApplicationError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status_code)
    return user, conversation_id, message_id


@csrf_exempt  # session-authenticated requests are CSRF-checked by _authenticate, token ones need no check
@require_POST
async def chat(request: HttpRequest) -> HttpResponse:
    """POST {"message", "conversation_id"?}: run one turn and answer with the stored message and what it produced."""
    begun = await _begin(request)
    if isinstance(begun, JsonResponse):
        return begun
    user, conversation_id, message_id = begun
    future = runner.start_turn(user_id=user.pk, conversation_id=conversation_id, message_id=message_id, sink=None)
    done, _pending = await asyncio.wait([asyncio.wrap_future(future)], timeout=TURN_WAIT_SECONDS)
    if not done:
        return _error(504, "timeout", "the turn is still running; read it later from /api/v1/conversations")
    # A turn that failed stored its message as failed (the runner logged why): the detail below shows it.
    detail = await sync_to_async(conversation_detail)(user=user, conversation_id=conversation_id)
    message = next((m for m in detail["messages"] if m["id"] == message_id), None)
    events = (message or {}).get("events") or []
    body = {
        "conversation_id": conversation_id,
        "message": message,
        "blueprint": detail["current_blueprint"],
        "iprs": [e for e in events if e.get("type") == "ipr"],
    }
    failed = message is None or message["status"] != "complete"
    return JsonResponse(body, status=502 if failed else 200, json_dumps_params={"default": str})


def _sse(event: dict[str, Any]) -> bytes:
    kind = event.get("type", "message")
    data = {k: v for k, v in event.items() if k != "type"}
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


_END = object()


@csrf_exempt
@require_POST
async def chat_stream(request: HttpRequest) -> HttpResponse:
    """POST {"message", "conversation_id"?}: server-sent events start, tool_call, tool_result, blueprint, ipr, token,
    done, error (the CLI's `chat` reads token / tool_call / tool_result / done / error)."""
    begun = await _begin(request)
    if isinstance(begun, JsonResponse):
        return begun
    user, conversation_id, message_id = begun

    if isinstance(request, ASGIRequest):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()

        def sink(event: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        future = runner.start_turn(user_id=user.pk, conversation_id=conversation_id, message_id=message_id, sink=sink)
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(events.put_nowait, _END))

        async def stream() -> AsyncIterator[bytes]:
            yield b": stream open\n\n"
            while (event := await events.get()) is not _END:
                yield _sse(event)

        content: Any = stream()
    else:  # a WSGI server (or Django's test client): a blocking iterator over a thread-safe queue
        blocking: queue.Queue[Any] = queue.Queue()
        future = runner.start_turn(
            user_id=user.pk, conversation_id=conversation_id, message_id=message_id, sink=blocking.put
        )
        future.add_done_callback(lambda _f: blocking.put(_END))

        def stream_sync() -> Iterator[bytes]:
            yield b": stream open\n\n"
            while (event := blocking.get(timeout=TURN_WAIT_SECONDS)) is not _END:
                yield _sse(event)

        content = stream_sync()
    response = StreamingHttpResponse(content, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response
