"""Admin pages for blueprints and their versions: read-only, highlighted source, diff to the parent."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, YamlLexer

from blueprints import services
from blueprints.models import Blueprint, BlueprintVersion

_FORMATTER = HtmlFormatter(style="friendly", noclasses=True, nowrap=False)


def _highlight(text: str, lexer) -> SafeString:  # type: ignore[no-untyped-def]
    # Pygments escapes the source; the output is markup we generated, so it is safe to mark as such.
    return mark_safe(highlight(text, lexer, _FORMATTER))  # noqa: S308


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_view_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return request.user.is_active and request.user.is_staff


class VersionInline(admin.TabularInline):
    model = BlueprintVersion
    fk_name = "blueprint"
    fields = ("number", "commit_id", "author", "message", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-number",)

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(Blueprint)
class BlueprintAdmin(ReadOnlyAdmin):
    list_display = ("name", "owner", "head_commit", "updated_at")
    search_fields = ("name", "description", "owner__username")
    list_filter = ("owner",)
    readonly_fields = ("name", "owner", "description", "head", "created_at", "updated_at")
    inlines = [VersionInline]

    @admin.display(description="head")
    def head_commit(self, obj: Blueprint) -> str:
        return obj.head.commit_id if obj.head_id else "-"


@admin.register(BlueprintVersion)
class BlueprintVersionAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "number", "commit_id", "author", "message", "created_at")
    list_select_related = ("blueprint", "author")
    search_fields = ("commit_id", "sha256", "blueprint__name", "message")
    list_filter = ("blueprint",)
    fields = (
        "blueprint",
        "number",
        "commit_id",
        "sha256",
        "parent",
        "author",
        "message",
        "created_at",
        "highlighted_source",
        "diff_to_parent",
    )
    readonly_fields = fields

    @admin.display(description="source")
    def highlighted_source(self, obj: BlueprintVersion) -> SafeString:
        return _highlight(obj.source_text, YamlLexer())

    @admin.display(description="diff to parent")
    def diff_to_parent(self, obj: BlueprintVersion) -> SafeString:
        if obj.parent is None:
            return format_html("<em>{}</em>", "first version: no parent")
        diff = services.version_diff(old=obj.parent, new=obj)
        structured = diff["structured"]
        summary = format_html("<p><strong>{}</strong></p>", structured["summary"])
        return format_html("{}{}", summary, _highlight(diff["unified"] or "(no textual change)\n", DiffLexer()))


from blueprints import admin_analysis  # noqa: E402,F401  (price book and suppressions)
