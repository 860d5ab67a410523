"""The chat page: a Django template and static JS/CSS (no build step); everything else happens over the API."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from aicdn_project import roles


@require_GET
@login_required
@ensure_csrf_cookie
def chat_page(request: HttpRequest) -> HttpResponse:
    context = {
        "can_open_ipr": roles.has_role(request.user, roles.REQUESTERS, roles.OPERATORS),
        "username": request.user.get_username(),
    }
    return render(request, "conversations/chat.html", context)
