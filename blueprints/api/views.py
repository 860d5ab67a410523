"""Blueprint endpoints: list/create, retrieve, versions, validate, schema, diff."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from blueprints import selectors, services
from blueprints.api.serializers import (
    BlueprintInputSerializer,
    BlueprintSerializer,
    VersionDetailSerializer,
    VersionSummarySerializer,
)
from blueprints.validation import load_schema


def _input(request: Request) -> dict:
    serializer = BlueprintInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class BlueprintListCreateView(generics.ListAPIView):
    """GET: blueprints you may see. POST: create one from YAML (raw body or `source`) or JSON (`document`)."""

    serializer_class = BlueprintSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return selectors.blueprint_list(user=self.request.user)

    @extend_schema(request=BlueprintInputSerializer, responses={201: VersionDetailSerializer})
    def post(self, request: Request) -> Response:
        data = _input(request)
        version = services.blueprint_create(
            owner=request.user, source=data.get("source"), document=data.get("document"), message=data["message"]
        )
        return Response(VersionDetailSerializer(version).data, status=status.HTTP_201_CREATED)


class BlueprintDetailView(APIView):
    @extend_schema(responses=BlueprintSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(BlueprintSerializer(selectors.blueprint_get(user=request.user, blueprint_id=pk)).data)


class BlueprintVersionListCreateView(generics.ListAPIView):
    """GET: a blueprint's versions, newest first. POST: add a version (identical content returns the existing one)."""

    serializer_class = VersionSummarySerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        blueprint = selectors.blueprint_get(user=self.request.user, blueprint_id=self.kwargs["pk"])
        return selectors.version_list(user=self.request.user, blueprint_id=blueprint.pk)

    @extend_schema(request=BlueprintInputSerializer, responses={201: VersionDetailSerializer})
    def post(self, request: Request, pk: int) -> Response:
        data = _input(request)
        version, created = services.blueprint_version_create(
            blueprint_id=pk,
            author=request.user,
            source=data.get("source"),
            document=data.get("document"),
            message=data["message"],
        )
        return Response(
            VersionDetailSerializer(version).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class VersionDetailView(APIView):
    """A version by id or commit id, optionally scoped to one blueprint."""

    @extend_schema(responses=VersionDetailSerializer)
    def get(self, request: Request, ref: str, pk: int | None = None) -> Response:
        version = selectors.version_get(user=request.user, ref=ref, blueprint_id=pk)
        return Response(VersionDetailSerializer(version).data)


@extend_schema_view(get=extend_schema(operation_id="v1_versions_list_all"))
class VersionListView(generics.ListAPIView):
    serializer_class = VersionSummarySerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return selectors.version_list(user=self.request.user)


class ValidateView(APIView):
    """Validate a blueprint without saving it; 200 with `valid` and every error with its JSON path."""

    @extend_schema(request=BlueprintInputSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        data = _input(request)
        result = services.blueprint_validate(source=data.get("source"), document=data.get("document"))
        return Response(result.as_dict())


class SchemaView(APIView):
    """The blueprint format's JSON Schema (version 1.0)."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(load_schema())


class DiffView(APIView):
    """Structured and unified diff between two versions (`from`, `to`: ids or commit ids; `from` defaults to parent)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("from", str, required=False, description="version id or commit id (default: parent)"),
            OpenApiParameter("to", str, required=True, description="version id or commit id"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        to_ref = request.query_params.get("to", "")
        if not to_ref:
            return Response(
                {"error": "invalid", "message": "query parameter `to` is required", "details": {"param": "to"}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        new = selectors.version_get(user=request.user, ref=to_ref)
        from_ref = request.query_params.get("from")
        if from_ref:
            old = selectors.version_get(user=request.user, ref=from_ref)
        elif new.parent is not None:
            old = new.parent
        else:
            return Response(
                {"error": "invalid", "message": "version has no parent; give `from`", "details": {"param": "from"}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(services.version_diff(old=old, new=new))
