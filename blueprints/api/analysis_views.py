"""Analysis endpoints: templates, cost, cost delta, optimisation, security audit and suppressions, plan, topology."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aicdn_project.errors import ValidationFailed
from blueprints.analysis import get_template, list_templates, rule_catalog
from blueprints.analysis import services as analysis


class CustomizeInput(serializers.Serializer):
    parameters = serializers.JSONField(required=False, default=dict)
    save = serializers.BooleanField(required=False, default=False)
    name = serializers.CharField(required=False, max_length=63)


class OptimizeInput(serializers.Serializer):
    target_reduction = serializers.FloatField()
    save = serializers.BooleanField(required=False, default=False)


class OptimizeCostsInput(OptimizeInput):
    blueprint_id = serializers.IntegerField(min_value=1)


class SecurityAuditInput(serializers.Serializer):
    blueprint_id = serializers.IntegerField(min_value=1)


class SuppressionInput(serializers.Serializer):
    rule_id = serializers.CharField(max_length=16)
    justification = serializers.CharField(max_length=4000)
    resource = serializers.CharField(required=False, allow_blank=True, max_length=63)
    path = serializers.CharField(required=False, allow_blank=True, max_length=255)


def _parse(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """Validated input, or a 400 whose details list each problem with its JSON path."""
    serializer = serializer_class(data=data)
    if serializer.is_valid():
        return dict(serializer.validated_data)
    errors = []
    for field, messages in serializer.errors.items():
        path = "$" if field == "non_field_errors" else f"$.{field}"
        errors.extend({"path": path, "message": str(message)} for message in messages)
    first = errors[0]
    raise ValidationFailed(f"{first['path']}: {first['message']}", details={"errors": errors})


class TemplateListView(APIView):
    """The template catalog: id, name, description, category and typed parameters of each template."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(list_templates())


class TemplateDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, template_id: str) -> Response:
        return Response(get_template(template_id))


class TemplateCustomizeView(APIView):
    """Render a template with parameters into a validated blueprint; `save: true` creates the blueprint (201)."""

    @extend_schema(request=CustomizeInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, template_id: str) -> Response:
        data = _parse(CustomizeInput, request.data)
        result = analysis.template_customize(
            user=request.user,
            template_id=template_id,
            parameters=data["parameters"],
            save=data["save"],
            name=data.get("name"),
        )
        return Response(result, status=status.HTTP_201_CREATED if result["version"] else status.HTTP_200_OK)


class VersionCostView(APIView):
    """Monthly cost of a version: line items, totals, price book version and the public-cloud reference."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, ref: str) -> Response:
        return Response(analysis.version_cost(user=request.user, ref=ref))


class VersionSecurityView(APIView):
    """Security findings of a version, with the blueprint's suppressions applied."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, ref: str) -> Response:
        return Response(analysis.version_security_audit(user=request.user, ref=ref))


class VersionPlanView(APIView):
    """Plan from the recorded deployed state to this version (nothing deployed yet: every resource is a create)."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, ref: str) -> Response:
        return Response(analysis.version_plan(user=request.user, ref=ref))


class VersionTopologyView(APIView):
    """The version's resource graph as an SVG picture."""

    @extend_schema(responses={(200, "image/svg+xml"): OpenApiTypes.STR})
    def get(self, request: Request, ref: str) -> HttpResponse:
        svg = analysis.version_topology_svg(user=request.user, ref=ref)
        response = HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")
        # Served as a document of its own: no scripts, no external loads.
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return response


class CostDeltaView(APIView):
    """Cost difference between two versions (`from` defaults to the parent of `to`)."""

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
            raise ValidationFailed(
                "query parameter `to` is required",
                details={"errors": [{"path": "$.to", "message": "required (a version id or commit id)"}]},
            )
        result = analysis.version_cost_delta(
            user=request.user, to_ref=to_ref, from_ref=request.query_params.get("from")
        )
        return Response(result)


class BlueprintOptimizeView(APIView):
    """Cost recommendations for the blueprint's head version; `save: true` stores the optimised version."""

    @extend_schema(request=OptimizeInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        data = _parse(OptimizeInput, request.data)
        result = analysis.optimize_costs(
            user=request.user, blueprint_id=pk, target_reduction=data["target_reduction"], save=data["save"]
        )
        return Response(result, status=status.HTTP_201_CREATED if result["version"] else status.HTTP_200_OK)


class OptimizeCostsView(APIView):
    """The seed's `optimize_costs(blueprint_id, target_reduction)`."""

    @extend_schema(request=OptimizeCostsInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        data = _parse(OptimizeCostsInput, request.data)
        result = analysis.optimize_costs(
            user=request.user,
            blueprint_id=data["blueprint_id"],
            target_reduction=data["target_reduction"],
            save=data["save"],
        )
        return Response(result, status=status.HTTP_201_CREATED if result["version"] else status.HTTP_200_OK)


class SecurityAuditView(APIView):
    """The seed's `security_audit(blueprint_id)`: findings of the blueprint's head version."""

    @extend_schema(request=SecurityAuditInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        data = _parse(SecurityAuditInput, request.data)
        return Response(analysis.security_audit(user=request.user, blueprint_id=data["blueprint_id"]))


class SecurityRulesView(APIView):
    """The security rule catalog (id, severity, title, rationale, remediation, resource types)."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(rule_catalog())


class SuppressionListCreateView(APIView):
    """GET: the blueprint's suppressions. POST: suppress a rule (optionally one resource or path) with a reason."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        return Response(analysis.suppression_list(user=request.user, blueprint_id=pk))

    @extend_schema(request=SuppressionInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        data = _parse(SuppressionInput, request.data)
        result = analysis.suppression_create(
            user=request.user,
            blueprint_id=pk,
            rule_id=data["rule_id"],
            justification=data["justification"],
            resource=data.get("resource") or None,
            path=data.get("path") or None,
        )
        return Response(result, status=status.HTTP_201_CREATED)
