"""Admin views of environments, recorded state, deployments (with their operations) and drift reports.

Read-only: environments change through the API's admin-only services (engine config is validated and audited there),
recorded state and deployments are written by the executor, drift reports by drift checks. The one action, "check
drift now", calls the drift service.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from aicdn_project import roles
from aicdn_project.errors import ApplicationError
from engines.drift import drift_check, drift_summary
from engines.models import Deployment, DriftReport, Environment, ResourceOperation, ResourceState

_READ_ALL = (roles.REVIEWERS, roles.OPERATORS, roles.ADMINS)


def _staff_with_role(request: HttpRequest, *wanted: str) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and roles.has_role(user, *wanted))


class ReadOnlyAdmin(admin.ModelAdmin):
    """Visible to reviewers, operators and admins; nobody adds, changes or deletes rows here."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ResourceStateInline(admin.TabularInline):
    model = ResourceState
    fields = ("name", "type", "status", "deployment_id", "engine_object_ids", "error", "updated_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Environment)
class EnvironmentAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "engine", "deployed_version", "drift")
    list_filter = ("kind", "engine")
    search_fields = ("name", "description")
    inlines = (ResourceStateInline,)
    actions = ("check_drift",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Environment]:
        return super().get_queryset(request).select_related("deployed_version")

    @admin.display(description="latest drift check")
    def drift(self, obj: Environment) -> str:
        report = obj.drift_reports.order_by("-checked_at", "-id").first()
        return f"{report.status}: {drift_summary(report)}" if report is not None else "never checked"

    def has_check_drift_permission(self, request: HttpRequest) -> bool:
        return _staff_with_role(request, roles.OPERATORS)

    @admin.action(description="Check drift now (operators)", permissions=["check_drift"])
    def check_drift(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        for environment in queryset:
            try:
                report = drift_check(environment=environment)
            except ApplicationError as exc:
                self.message_user(request, f"{environment.name}: refused: {exc.message}", level=messages.WARNING)
            else:
                level = messages.SUCCESS if report.status == "clean" else messages.WARNING
                self.message_user(request, f"{environment.name}: {drift_summary(report)}", level=level)


@admin.register(ResourceState)
class ResourceStateAdmin(ReadOnlyAdmin):
    list_display = ("name", "environment", "type", "status", "deployment_id", "updated_at")
    list_filter = ("environment", "status", "type")
    search_fields = ("name",)
    list_select_related = ("environment",)


class ResourceOperationInline(admin.TabularInline):
    model = ResourceOperation
    fields = (
        "position",
        "resource",
        "type",
        "action",
        "status",
        "attempts",
        "started_at",
        "finished_at",
        "duration_ms",
        "error",
        "output",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("position",)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ("id", "ipr_id", "environment", "status", "attempt", "started_at", "finished_at", "lease_owner")
    list_filter = ("status", "environment")
    search_fields = ("=ipr_id", "lease_owner")
    list_select_related = ("environment",)
    inlines = (ResourceOperationInline,)
    readonly_fields = (
        "ipr_id",
        "environment",
        "target_version",
        "status",
        "attempt",
        "lease_owner",
        "lease_expires_at",
        "heartbeat_at",
        "started_at",
        "finished_at",
        "error",
        "result",
        "plan",
    )
    fields = readonly_fields


@admin.register(DriftReport)
class DriftReportAdmin(ReadOnlyAdmin):
    list_display = ("id", "environment", "status", "checked_at", "summary", "reconcile_ipr_id")
    list_filter = ("status", "environment")
    list_select_related = ("environment",)
    readonly_fields = (
        "environment",
        "status",
        "checked_at",
        "duration_ms",
        "resources_checked",
        "missing",
        "changed",
        "unmanaged",
        "error",
        "reconcile_ipr_id",
    )
    fields = readonly_fields

    @admin.display(description="summary")
    def summary(self, obj: DriftReport) -> str:
        return drift_summary(obj)
