"""IPR, environment and audit endpoints: parse, call one service or selector, render."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aicdn_project import roles
from aicdn_project.audit import audit_verify
from aicdn_project.errors import PermissionDenied, ValidationFailed
from blueprints.selectors import version_get
from engines.selectors import deployed_state, environment_get, environment_list
from iprs import policy as rules
from iprs import selectors, services
from iprs.api.serializers import (
    AuditEventSerializer,
    CommentSerializer,
    EnvironmentInputSerializer,
    EnvironmentSerializer,
    EnvironmentUpdateSerializer,
    IPRDetailSerializer,
    IPROpenSerializer,
    IPRSummarySerializer,
    JustificationSerializer,
    LockSerializer,
    PolicySerializer,
    ReconcileSerializer,
    RollbackSerializer,
    UpdateVersionSerializer,
)


def _valid(serializer_class: type, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _detail(request: Request, ipr_id: int, code: int = status.HTTP_200_OK) -> Response:
    return Response(IPRDetailSerializer(selectors.ipr_get(user=request.user, ipr_id=ipr_id)).data, status=code)


class IPRListCreateView(generics.ListAPIView):
    """GET: IPRs you may see (filters: state, environment, author, kind, awaiting_review, q). POST: open one."""

    serializer_class = IPRSummarySerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, description="one state or a comma-separated list"),
            OpenApiParameter("environment", str),
            OpenApiParameter("author", str, description="username"),
            OpenApiParameter("kind", str),
            OpenApiParameter("awaiting_review", bool, description="only open IPRs waiting for your review"),
            OpenApiParameter("q", str, description="search title, description, commit id"),
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        params = self.request.query_params
        return selectors.ipr_list(
            user=self.request.user,
            state=params.get("state"),
            environment=params.get("environment"),
            author=params.get("author"),
            kind=params.get("kind"),
            awaiting_review=params.get("awaiting_review", "").lower() in ("1", "true", "yes"),
            search=params.get("q"),
        )

    @extend_schema(request=IPROpenSerializer, responses={201: IPRDetailSerializer})
    def post(self, request: Request) -> Response:
        data = _valid(IPROpenSerializer, request)
        version = version_get(user=request.user, ref=data.pop("blueprint_version"))
        environment = environment_get(name=data.pop("environment"))
        ipr = services.ipr_open(author=request.user, blueprint_version=version, environment=environment, **data)
        return _detail(request, ipr.pk, status.HTTP_201_CREATED)


class IPRRollbackView(APIView):
    """Open a rollback IPR: from the environment's recorded state back to a version deployed there before."""

    @extend_schema(request=RollbackSerializer, responses={201: IPRDetailSerializer})
    def post(self, request: Request) -> Response:
        data = _valid(RollbackSerializer, request)
        version = version_get(user=request.user, ref=data.pop("to"))
        environment = environment_get(name=data.pop("environment"))
        ipr = services.ipr_open_rollback(author=request.user, environment=environment, version=version, **data)
        return _detail(request, ipr.pk, status.HTTP_201_CREATED)


class EnvironmentReconcileView(APIView):
    """Open a reconcile IPR from the environment's latest drift report (POST .../drift/check runs one)."""

    @extend_schema(request=ReconcileSerializer, responses={201: IPRDetailSerializer})
    def post(self, request: Request, name: str) -> Response:
        data = _valid(ReconcileSerializer, request)
        ipr = services.ipr_open_reconcile(author=request.user, environment=environment_get(name=name), **data)
        return _detail(request, ipr.pk, status.HTTP_201_CREATED)


class EnvironmentPlanView(APIView):
    """Plan a blueprint version against what the environment has deployed (`?version=<id or commit id>`)."""

    @extend_schema(
        parameters=[OpenApiParameter("version", str, required=True, description="version id or commit id")],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request, name: str) -> Response:
        ref = request.query_params.get("version", "")
        if not ref:
            raise ValidationFailed("query parameter `version` is required", details={"param": "version"})
        environment = environment_get(name=name)
        version = version_get(user=request.user, ref=ref)
        return Response(selectors.environment_plan(user=request.user, environment=environment, version=version))


class IPRDetailView(APIView):
    @extend_schema(responses=IPRDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return _detail(request, pk)


def _ipr_action(
    call: Callable[[Request, int, dict[str, Any]], Any], input_serializer: type = CommentSerializer
) -> type[APIView]:
    """A POST endpoint that parses its input, makes sure the IPR is visible, calls one service, returns the IPR."""

    class ActionView(APIView):
        @extend_schema(request=input_serializer, responses=IPRDetailSerializer)
        def post(self, request: Request, pk: int) -> Response:
            data = _valid(input_serializer, request)
            selectors.ipr_get(user=request.user, ipr_id=pk)  # 404 for IPRs the user may not see
            call(request, pk, data)
            return _detail(request, pk)

    return ActionView


IPRApproveView = _ipr_action(lambda r, pk, d: services.ipr_approve(reviewer=r.user, ipr_id=pk, comment=d["comment"]))
IPRRequestChangesView = _ipr_action(
    lambda r, pk, d: services.ipr_request_changes(reviewer=r.user, ipr_id=pk, comment=d["comment"])
)
IPRRejectView = _ipr_action(lambda r, pk, d: services.ipr_reject(reviewer=r.user, ipr_id=pk, comment=d["comment"]))
IPRDeployView = _ipr_action(lambda r, pk, d: services.ipr_deploy(actor=r.user, ipr_id=pk))
IPRCloseView = _ipr_action(lambda r, pk, d: services.ipr_close(actor=r.user, ipr_id=pk, comment=d["comment"]))
IPRReplanView = _ipr_action(lambda r, pk, d: services.ipr_replan(actor=r.user, ipr_id=pk))
IPRSubmitView = _ipr_action(lambda r, pk, d: services.ipr_submit(actor=r.user, ipr_id=pk))
IPROverrideView = _ipr_action(
    lambda r, pk, d: services.ipr_override(admin=r.user, ipr_id=pk, justification=d["justification"]),
    JustificationSerializer,
)
IPRAbortView = _ipr_action(lambda r, pk, d: services.ipr_abort(admin=r.user, ipr_id=pk, reason=d["comment"]))
IPRUpdateVersionView = _ipr_action(
    lambda r, pk, d: services.ipr_update_version(
        actor=r.user, ipr_id=pk, blueprint_version=version_get(user=r.user, ref=d["blueprint_version"])
    ),
    UpdateVersionSerializer,
)


def _environment_view(environment: Any) -> dict[str, Any]:
    data = EnvironmentSerializer(environment).data
    data["policy"] = PolicySerializer(rules.policy_for(environment)).data
    data["lock"] = _lock_view(selectors.environment_lock_get(environment=environment))
    return data


def _lock_view(lock: Any) -> dict[str, Any]:
    if lock is None:
        return {
            "held": False,
            "holder_ipr": None,
            "holder_name": "",
            "acquired_at": None,
            "heartbeat_at": None,
            "expires_at": None,
        }
    return {"held": True, **LockSerializer(lock).data}


class EnvironmentListCreateView(APIView):
    """GET: every environment with its policy and deploy lock. POST (admins): create one, optionally with policy."""

    @extend_schema(responses=EnvironmentSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response([_environment_view(env) for env in environment_list()])

    @extend_schema(request=EnvironmentInputSerializer, responses={201: EnvironmentSerializer})
    def post(self, request: Request) -> Response:
        data = _valid(EnvironmentInputSerializer, request)
        environment = services.environment_create(actor=request.user, **data)
        return Response(_environment_view(environment), status=status.HTTP_201_CREATED)


class EnvironmentDetailView(APIView):
    """GET: one environment. PATCH (admins): change engine, kind, description, config, secret refs or policy."""

    @extend_schema(responses=EnvironmentSerializer)
    def get(self, request: Request, name: str) -> Response:
        environment = environment_get(name=name)
        data = _environment_view(environment)
        # The recorded deployed state (what the next plan diffs against), for `ai-cdn status` and the chat page.
        data["resources"] = [
            {"name": item["name"], "type": item["type"], "status": item["status"], "outputs": item.get("outputs", {})}
            for item in deployed_state(environment).values()
        ]
        return Response(data)

    @extend_schema(request=EnvironmentUpdateSerializer, responses=EnvironmentSerializer)
    def patch(self, request: Request, name: str) -> Response:
        data = _valid(EnvironmentUpdateSerializer, request)
        environment = services.environment_update(actor=request.user, environment=environment_get(name=name), **data)
        return Response(_environment_view(environment))


class EnvironmentLockView(APIView):
    """GET: who holds the deploy lock and since when. DELETE (admins): release it (audited)."""

    @extend_schema(responses=LockSerializer)
    def get(self, request: Request, name: str) -> Response:
        lock = selectors.environment_lock_get(environment=environment_get(name=name))
        return Response(_lock_view(lock))

    @extend_schema(request=CommentSerializer, responses={200: dict})
    def delete(self, request: Request, name: str) -> Response:
        data = _valid(CommentSerializer, request)
        released = services.environment_lock_release(
            environment=environment_get(name=name), actor=request.user, reason=data["comment"]
        )
        return Response({"released": released})


class AuditListView(generics.ListAPIView):
    """The audit trail, newest first; filters: object_type, object_id, action (a trailing '.' = prefix), actor."""

    serializer_class = AuditEventSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("object_type", str),
            OpenApiParameter("object_id", str),
            OpenApiParameter("action", str),
            OpenApiParameter("actor", str, description="username"),
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        params = self.request.query_params
        return selectors.audit_list(
            user=self.request.user,
            object_type=params.get("object_type"),
            object_id=params.get("object_id"),
            action=params.get("action"),
            actor=params.get("actor"),
        )


class AuditVerifyView(APIView):
    """Recompute the hash chain (admins): ok, events checked, and the first broken link."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        if not roles.is_admin(request.user):
            raise PermissionDenied("only admins may verify the audit chain", code="not_admin")
        report = audit_verify()
        return Response(
            {"ok": report.ok, "checked": report.checked, "broken_at": report.broken_at, "reason": report.reason}
        )
