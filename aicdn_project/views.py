"""Project-level views: the landing redirect to the chat page (health and metrics live in aicdn_project.monitoring)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("/chat/")
