"""The tool registry over HTTP: list the tools, and run one for the authenticated user with the agent's checks."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aicdn_project.errors import ValidationFailed
from llm.tools import ToolContext, run_tool, tool_list


class ToolSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    parameters = serializers.DictField()
    permission = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())


class ToolListView(APIView):
    """GET: every tool the agent may call, with its JSON schema and the roles it needs."""

    @extend_schema(responses=ToolSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(tool_list())


class ToolExecuteView(APIView):
    """POST {"tool_name", "parameters"}: run one tool as the requesting user.

    400 for an unknown tool or parameters that break its schema, 403 when the user lacks the role or the object is
    not theirs to change, 404 for objects the user cannot see; the same checks the agent's calls go through.
    """

    @extend_schema(
        request=inline_serializer(
            "ToolExecuteInput", {"tool_name": serializers.CharField(), "parameters": serializers.DictField()}
        ),
        responses=inline_serializer(
            "ToolExecuteOutput", {"tool": serializers.CharField(), "ok": serializers.BooleanField()}
        ),
    )
    def post(self, request: Request) -> Response:
        data: Any = request.data
        if not isinstance(data, dict) or not isinstance(data.get("tool_name"), str):
            raise ValidationFailed(
                'send {"tool_name": "...", "parameters": {...}}',
                code="invalid_request",
                details={"errors": [{"path": "$.tool_name", "message": "a tool name is required"}]},
            )
        parameters = data.get("parameters", {})
        result = run_tool(data["tool_name"], parameters, ctx=ToolContext(user=request.user, origin="api"))
        return Response({"tool": data["tool_name"], "ok": True, "result": result})
