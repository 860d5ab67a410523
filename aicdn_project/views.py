"""Project-level views: the landing redirect and the liveness check."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("/admin/")


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No authentication, no dependencies touched."""
    return JsonResponse({"status": "ok"})
