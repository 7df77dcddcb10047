"""A refused page answers a styled 403 that carries the refusal's message, and logs one line,
not a traceback: a refusal is an answer, not a fault. The API and relay keep their own shapes."""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

NOT_PAGES = ("/api/", "/relay/", "/admin/")


class PageRefusalMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, PermissionDenied) or request.path.startswith(NOT_PAGES):
            return None
        message = str(exception) or "You may not do this."
        return render(request, "403.html", {"exception": message}, status=403)
