"""Deployment and drift endpoints: parse, check the role, call one service or selector, render."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aicdn_project import roles
from aicdn_project.errors import PermissionDenied, ValidationFailed
from engines import selectors
from engines.api.serializers import DeploymentDetailSerializer, DeploymentSerializer, DriftReportSerializer
from engines.drift import drift_check
from engines.models import Deployment

# Deployments and drift describe whole environments: the roles that see every IPR see them. Requesters follow
# their own IPR's progress through GET /api/v1/iprs/{id}.
_READ_ALL = (roles.REVIEWERS, roles.OPERATORS, roles.ADMINS)


def _require(user: Any, *wanted: str, action: str) -> None:
    if not roles.has_role(user, *wanted):
        raise PermissionDenied(f"only {', '.join(wanted)} may {action}", code="forbidden_role")


class DeploymentListView(generics.ListAPIView):
    """Deployments, newest first; filters: ipr (id), environment (name), status (one or a comma-separated list)."""

    serializer_class = DeploymentSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("ipr", int),
            OpenApiParameter("environment", str),
            OpenApiParameter("status", str, description="one status or a comma-separated list"),
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        _require(request.user, *_READ_ALL, action="list deployments")
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Deployment]:
        params = self.request.query_params
        ipr = params.get("ipr")
        if ipr is not None and not ipr.isdigit():
            raise ValidationFailed("ipr must be an IPR id", details=[{"path": "ipr", "message": "not an integer"}])
        return selectors.deployment_list(
            ipr_id=int(ipr) if ipr is not None else None,
            environment=params.get("environment"),
            status=params.get("status"),
        )


class DeploymentDetailView(APIView):
    """One deployment with every resource operation: status, attempts, output, error, timings."""

    @extend_schema(responses=DeploymentDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        _require(request.user, *_READ_ALL, action="read deployments")
        return Response(DeploymentDetailSerializer(selectors.deployment_get(deployment_id=pk)).data)


class DriftView(APIView):
    """The environment's latest drift report (null before the first check) and the recent ones."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, name: str) -> Response:
        _require(request.user, *_READ_ALL, action="read drift reports")
        environment = selectors.environment_get(name=name)
        reports = selectors.drift_report_list(environment=environment, limit=10)
        return Response(
            {
                "environment": environment.name,
                "latest": DriftReportSerializer(reports[0]).data if reports else None,
                "recent": DriftReportSerializer(reports, many=True).data,
            }
        )


class DriftCheckView(APIView):
    """Run a drift check now (operators): reads every recorded resource and labelled object through the engine."""

    @extend_schema(request=None, responses={201: DriftReportSerializer})
    def post(self, request: Request, name: str) -> Response:
        _require(request.user, roles.OPERATORS, action="run drift checks")
        report = drift_check(environment=selectors.environment_get(name=name))
        return Response(DriftReportSerializer(report).data, status=status.HTTP_201_CREATED)
