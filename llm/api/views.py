"""LLM endpoints: blueprint generation from a description (or a follow-up change to a current blueprint)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from llm import generation
from llm.api.serializers import GenerateBlueprintInputSerializer, GenerateBlueprintOutputSerializer


class GenerateBlueprintView(APIView):
    """POST a description; get a validated blueprint, the intent behind it and what was assumed.

    With `current` (a blueprint document) the description is a change to it. With `save` the result is stored as a
    new blueprint, or as a new version of `blueprint_id`. 503 when the model server is down.
    """

    @extend_schema(request=GenerateBlueprintInputSerializer, responses={200: GenerateBlueprintOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = GenerateBlueprintInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = generation.generate_blueprint(
            description=data["description"],
            user=request.user,
            save=data["save"],
            current=data.get("current"),
            blueprint_id=data.get("blueprint_id"),
        )
        saved = "version" in result and result["version"]["created"]
        return Response(result, status=status.HTTP_201_CREATED if saved else status.HTTP_200_OK)
