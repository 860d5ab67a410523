"""The reviewers' console: IPR list and review page (buttons call the services; deployment progress and the
environment's drift shown with it), policies, locks, the audit trail."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from aicdn_project import roles
from aicdn_project.errors import ApplicationError, NotFound
from aicdn_project.models import AuditEvent
from engines.drift import drift_summary
from engines.selectors import deployment_progress, drift_report_latest
from iprs import policy as rules
from iprs import selectors, services
from iprs.models import IPR, ApprovalPolicy, EnvironmentLock

_ANY_ROLE = roles.ALL_ROLES
_READ_ALL = (roles.REVIEWERS, roles.OPERATORS, roles.ADMINS)


def _staff_with_role(request: HttpRequest, *wanted: str) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and roles.has_role(user, *wanted))


class AwaitingMyReviewFilter(admin.SimpleListFilter):
    title = "awaiting my review"
    parameter_name = "awaiting"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("me", "Awaiting my review")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[IPR]) -> QuerySet[IPR]:
        if self.value() == "me":
            return queryset.filter(pk__in=selectors.ipr_awaiting_review(user=request.user).values("pk"))
        return queryset


def _diff_lines(unified: str) -> list[dict[str, str]]:
    lines = []
    for text in unified.splitlines():
        if text.startswith(("+++", "---")):
            cls = "file"
        elif text.startswith("@@"):
            cls = "hunk"
        elif text.startswith("+"):
            cls = "add"
        elif text.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        lines.append({"cls": cls, "text": text})
    return lines


# action name -> (service call, success message). Each interface input is parsed here; the rule lives in services.
def _approve(request: HttpRequest, ipr: IPR, text: str) -> str:
    services.ipr_approve(reviewer=request.user, ipr_id=ipr.pk, comment=text)
    return "Approval recorded."


def _request_changes(request: HttpRequest, ipr: IPR, text: str) -> str:
    services.ipr_request_changes(reviewer=request.user, ipr_id=ipr.pk, comment=text)
    return "Changes requested."


def _reject(request: HttpRequest, ipr: IPR, text: str) -> str:
    services.ipr_reject(reviewer=request.user, ipr_id=ipr.pk, comment=text)
    return "IPR rejected."


def _deploy(request: HttpRequest, ipr: IPR, text: str) -> str:
    services.ipr_deploy(actor=request.user, ipr_id=ipr.pk)
    return "Deployment queued."


def _close(request: HttpRequest, ipr: IPR, text: str) -> str:
    services.ipr_close(actor=request.user, ipr_id=ipr.pk, comment=text)
    return "IPR closed."


def _replan(request: HttpRequest, ipr: IPR, text: str) -> str:
    services.ipr_replan(actor=request.user, ipr_id=ipr.pk)
    return "Plan, cost and findings recomputed against what is deployed now."


def _override(request: HttpRequest, ipr: IPR, text: str) -> str:
    services.ipr_override(admin=request.user, ipr_id=ipr.pk, justification=text)
    return "Override recorded."


def _abort(request: HttpRequest, ipr: IPR, text: str) -> str:
    services.ipr_abort(admin=request.user, ipr_id=ipr.pk, reason=text)
    return "Deployment aborted; the IPR is marked failed."


def _release_lock(request: HttpRequest, ipr: IPR, text: str) -> str:
    released = services.environment_lock_release(environment=ipr.environment, actor=request.user, reason=text)
    return "Deploy lock released." if released else "The deploy lock was not held."


_ACTIONS = {
    "approve": _approve,
    "request_changes": _request_changes,
    "reject": _reject,
    "deploy": _deploy,
    "close": _close,
    "replan": _replan,
    "override": _override,
    "abort": _abort,
    "release_lock": _release_lock,
}


@admin.register(IPR)
class IPRAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "environment", "state", "kind", "author", "commit", "created_at")
    list_display_links = ("id", "title")
    list_filter = ("state", "environment", ("author", admin.RelatedOnlyFieldListFilter), AwaitingMyReviewFilter, "kind")
    search_fields = ("title", "description", "blueprint_version__commit_id", "author__username")
    list_select_related = ("environment", "author", "blueprint_version")
    review_template = "admin/iprs/ipr/review.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[IPR]:
        return selectors.ipr_visible(user=request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _staff_with_role(request, *_ANY_ROLE)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff_with_role(request, *_ANY_ROLE)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # IPRs are opened from a chat, the API or the CLI, where the blueprint version is chosen

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # every change is a button on the review page, which calls a service

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="commit")
    def commit(self, obj: IPR) -> str:
        return obj.blueprint_version.commit_id

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise DjangoPermissionDenied
        try:
            ipr = selectors.ipr_get(user=request.user, ipr_id=int(object_id))
        except (NotFound, ValueError):
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if request.method == "POST":
            return self._run_action(request, ipr)
        console = selectors.ipr_console(user=request.user, ipr=ipr)
        drift = drift_report_latest(environment=ipr.environment)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"IPR #{ipr.pk}: {ipr.title}",
            "subtitle": None,
            "ipr": ipr,
            "original": ipr,
            "diff_lines": _diff_lines(console["diff"]["unified"]),
            "is_admin": roles.is_admin(request.user),
            "lock_release_allowed": roles.is_admin(request.user) and console["lock"] is not None,
            "deployment": deployment_progress(ipr_id=ipr.pk),
            "drift": drift,
            "drift_summary": drift_summary(drift) if drift is not None else "",
            **console,
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.review_template, context)

    def _run_action(self, request: HttpRequest, ipr: IPR) -> HttpResponse:
        name = request.POST.get("action", "")
        handler = _ACTIONS.get(name)
        if handler is None:
            self.message_user(request, f"Unknown action {name!r}.", level=messages.ERROR)
        else:
            try:
                done = handler(request, ipr, request.POST.get("comment", ""))
            except ApplicationError as exc:
                self.message_user(request, f"Refused: {exc.message}", level=messages.ERROR)
            else:
                self.message_user(request, done, level=messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:iprs_ipr_change", args=[ipr.pk]))


class ApprovalPolicyForm(forms.ModelForm):
    blocking_severity = forms.ChoiceField(choices=())

    class Meta:
        model = ApprovalPolicy
        fields = (
            "environment",
            "required_approvals",
            "reviewer_group",
            "blocking_severity",
            "cost_increase_threshold",
            "emergency_rollback_allowed",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["blocking_severity"].choices = [(s, s) for s in rules.severities()]


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(admin.ModelAdmin):
    form = ApprovalPolicyForm
    list_display = (
        "environment",
        "required_approvals",
        "reviewer_group",
        "blocking_severity",
        "cost_increase_threshold",
        "emergency_rollback_allowed",
    )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _staff_with_role(request, roles.ADMINS)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff_with_role(request, roles.ADMINS)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # remove a policy by setting its fields; deleting would silently fall back to defaults

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("environment",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: ApprovalPolicy, form: Any, change: bool) -> None:
        data = {k: v for k, v in form.cleaned_data.items() if k != "environment"}
        try:
            saved = services.approval_policy_set(actor=request.user, environment=obj.environment, **data)
        except ApplicationError as exc:
            self.message_user(request, f"Refused: {exc.message}", level=messages.ERROR)
            raise _PolicyRefused from exc
        # The service saved the row; the admin's "added" log entry and redirect need its primary key.
        obj.pk = saved.pk
        obj._state.adding = False

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().changeform_view(request, *args, **kwargs)
        except _PolicyRefused:
            return HttpResponseRedirect(request.get_full_path())


class _PolicyRefused(Exception):
    pass


@admin.register(EnvironmentLock)
class EnvironmentLockAdmin(admin.ModelAdmin):
    list_display = ("environment", "holder_ipr", "holder_name", "acquired_at", "heartbeat_at", "expires_at", "held")
    actions = ("release",)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_release_permission(self, request: HttpRequest) -> bool:
        return _staff_with_role(request, roles.ADMINS)

    @admin.display(boolean=True, description="held")
    def held(self, obj: EnvironmentLock) -> bool:
        from iprs.services.locks import lock_is_held

        return lock_is_held(obj)

    @admin.action(description="Release the selected deploy locks (admins; audited)", permissions=["release"])
    def release(self, request: HttpRequest, queryset: QuerySet[EnvironmentLock]) -> None:
        released = 0
        for lock in queryset.select_related("environment"):
            try:
                released += services.environment_lock_release(
                    environment=lock.environment, actor=request.user, reason="released from the admin"
                )
            except ApplicationError as exc:
                self.message_user(request, f"Refused: {exc.message}", level=messages.ERROR)
                return
        self.message_user(request, f"Released {released} lock(s).", level=messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only, so nobody gets add, change or delete here."""

    list_display = ("seq", "occurred_at", "actor_name", "action", "object_type", "object_id", "object_repr", "channel")
    list_filter = ("object_type", "channel", "action")
    search_fields = ("action", "object_id", "object_repr", "actor_name", "request_id")
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return selectors.audit_list(user=request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff_with_role(request, *_READ_ALL)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
