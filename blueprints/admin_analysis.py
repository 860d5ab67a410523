"""Admin pages for analysis data: editable price books (validated, audited) and the read-only suppression log."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from aicdn_project import roles
from aicdn_project.errors import ApplicationError
from blueprints.analysis import cost
from blueprints.analysis import services as analysis_services
from blueprints.models import PriceBook, SecuritySuppression


class PriceBookForm(forms.ModelForm):
    class Meta:
        model = PriceBook
        fields = ("name", "is_active", "data", "notes")

    def clean_data(self) -> dict:
        data = self.cleaned_data["data"]
        errors = cost.price_book_errors(data)
        if errors:
            raise forms.ValidationError([f"{e['path']}: {e['message']}" for e in errors[:20]])
        return data


@admin.register(PriceBook)
class PriceBookAdmin(admin.ModelAdmin):
    form = PriceBookForm
    list_display = ("name", "version", "is_active", "updated_by", "updated_at")
    list_filter = ("is_active",)
    readonly_fields = ("updated_by", "created_at", "updated_at")
    actions = ("activate",)

    @admin.display(description="version")
    def version(self, obj: PriceBook) -> str:
        return str(obj.data.get("version", "")) if isinstance(obj.data, dict) else ""

    def _is_admin(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff and roles.is_admin(request.user)

    def has_view_permission(self, request: HttpRequest, obj: PriceBook | None = None) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._is_admin(request)

    def has_change_permission(self, request: HttpRequest, obj: PriceBook | None = None) -> bool:
        return self._is_admin(request)

    def has_delete_permission(self, request: HttpRequest, obj: PriceBook | None = None) -> bool:
        return self._is_admin(request)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        # A new price book starts as a copy of the one in force, so an edit is a small change, not a blank form.
        return {"name": "custom", "data": cost.default_price_book()}

    def save_model(self, request: HttpRequest, obj: PriceBook, form: forms.ModelForm, change: bool) -> None:
        try:
            analysis_services.price_book_save(user=request.user, price_book=obj)
        except ApplicationError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)

    @admin.action(description="Activate the selected price book")
    def activate(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        chosen = list(queryset[:2])
        if len(chosen) != 1:
            self.message_user(request, "select exactly one price book to activate", level=messages.ERROR)
            return
        book = chosen[0]
        book.is_active = True
        try:
            analysis_services.price_book_save(user=request.user, price_book=book)
        except ApplicationError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
        else:
            self.message_user(request, f"{book} is now the active price book")


@admin.register(SecuritySuppression)
class SecuritySuppressionAdmin(admin.ModelAdmin):
    """Read-only: suppressions are created through the API / service so each one is audited."""

    list_display = ("blueprint", "rule_id", "resource", "path", "created_by", "created_at")
    list_select_related = ("blueprint", "created_by")
    list_filter = ("rule_id",)
    search_fields = ("blueprint__name", "rule_id", "resource", "justification")
    readonly_fields = ("blueprint", "rule_id", "resource", "path", "justification", "created_by", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SecuritySuppression | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SecuritySuppression | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: SecuritySuppression | None = None) -> bool:
        return request.user.is_active and request.user.is_staff
