"""Middleware of our own: bound the Cookie header before anything parses it, and keep every
dynamic answer out of caches."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

Handler = Callable[[HttpRequest], HttpResponse]


def _refusal(request: HttpRequest, status: int, message: str) -> HttpResponse:
    """The refusal in the shape the caller reads: the API's, the relay's (Anthropic's), or
    plain text for a browser."""
    path = request.path_info
    body: dict[str, Any]
    if path.startswith("/api/"):
        code = "request_header_too_large" if status == 431 else "bad_request"
        body = {"error": {"code": code, "message": message}}
    elif path.startswith("/relay/"):
        body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    else:
        response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
        response["Cache-Control"] = "no-store"
        return response
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


class CookieSizeLimitMiddleware:
    """Answer 431 to a request whose Cookie headers add up to more than COOKIE_MAX_BYTES,
    before Django parses them (`request.COOKIES` is parsed on first use, by
    `http.cookies._unquote`, which is quadratic in a value's backslashes before Python 3.11.10
    and 3.12.6: CVE-2024-7592). The patched interpreter is the fix (accounts_pool.checks); this
    bounds the work of any other parser bug of its kind. First in MIDDLEWARE, so it runs before
    anything reads a cookie, under gunicorn and under uvicorn (the relay) alike: both hand
    Django every Cookie header joined into one value."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self.limit: int = settings.COOKIE_MAX_BYTES

    def __call__(self, request: HttpRequest) -> HttpResponse:
        cookie = request.META.get("HTTP_COOKIE", "")
        if len(cookie) > self.limit:
            return _refusal(request, 431, f"The Cookie header is larger than {self.limit} bytes.")
        return self.get_response(request)


class NoStoreMiddleware:
    """`Cache-Control: no-store` on every answer of the app that does not set its own: pages
    and API answers may carry a secret (a checked-out credential, a new key or token, an invite
    or login link) or a team's data, and none is worth a browser's or a proxy's cache. Static
    files, served by whitenoise before this runs, keep their long cache."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store"
        return response
