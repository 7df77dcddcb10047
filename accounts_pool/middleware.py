"""Middleware of our own: bound the Cookie header and the request body before anything parses
or stores them, and keep every dynamic answer out of caches."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

Handler = Callable[[HttpRequest], Any]

# (API error code, relay error type) per refusal status.
_CODES = {
    400: ("bad_request", "invalid_request_error"),
    413: ("payload_too_large", "request_too_large"),
    431: ("request_header_too_large", "invalid_request_error"),
}


def refusal(path: str, status: int, message: str) -> tuple[str, bytes]:
    """A refusal in the shape the caller reads: the API's, the relay's (Anthropic's), or plain
    text for a browser. Returns (content type, body)."""
    api_code, relay_type = _CODES[status]
    if path.startswith("/api/"):
        document: dict[str, Any] = {"error": {"code": api_code, "message": message}}
    elif path.startswith("/relay/"):
        document = {"type": "error", "error": {"type": relay_type, "message": message}}
    else:
        return "text/plain; charset=utf-8", message.encode()
    return "application/json", json.dumps(document).encode()


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    content_type, body = refusal(request.path_info, status, message)
    response = HttpResponse(body, status=status, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


def body_limit(path: str) -> int:
    """The largest request body a path takes: the relay's (a Messages request with its images
    and documents), else REQUEST_MAX_BODY_BYTES (forms, JSON, an uploaded credentials file)."""
    if path.startswith("/relay/"):
        limit: int = settings.RELAY_MAX_BODY_BYTES
    else:
        limit = settings.REQUEST_MAX_BODY_BYTES
    return limit


def declared_length(value: str) -> int | None:
    """A Content-Length header's value as a number; None when it is not one (a 400). A number
    of more digits than any limit counts as too large, without int() on thousands of digits."""
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        return None
    digits = value.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


class _Middleware:
    """Sync and async alike, so the relay's async views under uvicorn take no thread hop for
    it: `refuse` may answer before the view, `finish` sees every answer."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        refused = self.refuse(request)
        if refused is not None:
            return refused
        return self.finish(self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        refused = self.refuse(request)
        if refused is not None:
            return refused
        return self.finish(await self.get_response(request))

    def refuse(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def finish(self, response: HttpResponse) -> HttpResponse:
        return response


class CookieSizeLimitMiddleware(_Middleware):
    """Answer 431 to a request whose Cookie headers add up to more than COOKIE_MAX_BYTES,
    before Django parses them (`request.COOKIES` is parsed on first use, by
    `http.cookies._unquote`, which is quadratic in a value's backslashes before Python 3.11.10
    and 3.12.6: CVE-2024-7592). The patched interpreter is the fix (accounts_pool.checks); this
    bounds the work of any other parser bug of its kind. First in MIDDLEWARE, so it runs before
    anything reads a cookie, under gunicorn and under uvicorn (the relay) alike: both hand
    Django every Cookie header joined into one value."""

    def __init__(self, get_response: Handler) -> None:
        super().__init__(get_response)
        self.limit: int = settings.COOKIE_MAX_BYTES

    def refuse(self, request: HttpRequest) -> HttpResponse | None:
        if len(request.META.get("HTTP_COOKIE", "")) > self.limit:
            return _refuse(request, 431, f"The Cookie header is larger than {self.limit} bytes.")
        return None


class BodySizeLimitMiddleware(_Middleware):
    """Answer 413 to a body declared larger than the path's limit (body_limit), before any of
    it is read: Django reads a body lazily, so under WSGI nothing of it has been read or parsed
    yet, and multipart files are never spooled to disk (settings keep uploads in memory, up to
    the same limit). A body sent without a Content-Length is not read at all by Django under
    WSGI; under ASGI, AsgiBodyLimit counts what arrives before Django buffers it."""

    def refuse(self, request: HttpRequest) -> HttpResponse | None:
        raw = request.META.get("CONTENT_LENGTH") or ""
        if raw:
            length = declared_length(raw)
            if length is None:
                return _refuse(request, 400, "The Content-Length header is not a number.")
            limit = body_limit(request.path_info)
            if length > limit:
                return _refuse(request, 413, f"The request body is larger than {limit} bytes.")
        return None


Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AsgiBodyLimit:
    """The body and Cookie limits for the ASGI app (config/asgi.py): Django's ASGI handler
    reads the whole body into a spooled temporary file before any middleware runs, and the
    relay's handler runs none at all.
    A declared Content-Length past the limit is refused at once; a body that streams past it
    (chunked, or longer than declared) is cut off there, and answered 413."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit = body_limit(path)
        too_big = f"The request body is larger than {limit} bytes."
        cookie_bytes = 0
        for name, value in scope.get("headers", ()):
            if name.lower() == b"cookie":
                # The relay's handler runs no middleware: its Cookie bound is here.
                cookie_bytes += len(value) + 2
                if cookie_bytes > settings.COOKIE_MAX_BYTES + 2:
                    cookie_limit = settings.COOKIE_MAX_BYTES
                    message = f"The Cookie header is larger than {cookie_limit} bytes."
                    await self._refuse(send, path, 431, message)
                    return
            if name.lower() == b"content-length":
                length = declared_length(value.decode("latin-1"))
                if length is None:
                    await self._refuse(send, path, 400, "The Content-Length is not a number.")
                    return
                if length > limit:
                    await self._refuse(send, path, 413, too_big)
                    return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}  # Django stops reading and gives up
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        if exceeded and not started:
            await self._refuse(send, path, 413, too_big)

    @staticmethod
    async def _refuse(send: Send, path: str, status: int, message: str) -> None:
        content_type, body = refusal(path, status, message)
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class NoStoreMiddleware(_Middleware):
    """`Cache-Control: no-store` on every answer of the app that does not set its own: pages
    and API answers may carry a secret (a checked-out credential, a new key or token, an invite
    or login link) or a team's data, and none is worth a browser's or a proxy's cache. Static
    files, served by whitenoise before this runs, keep their long cache."""

    def finish(self, response: HttpResponse) -> HttpResponse:
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store"
        return response


# What a JSON answer may load or be framed by: nothing (it renders nothing; a browser made to
# open one as a document runs and embeds nothing either).
JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"


class PagePolicyMiddleware(CSPMiddleware):
    """django-csp's Content-Security-Policy on pages; on JSON answers a fixed policy that
    allows nothing. django-csp 4.0 builds its policy (twice: enforced and report-only) for
    every answer before it looks at EXCLUDE_URL_PREFIXES or csp_exempt: 7.5% of an API
    checkout's instructions, for a policy that a JSON answer needs none of."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if response.get("Content-Type", "").startswith("application/json"):
            response.headers.setdefault("Content-Security-Policy", JSON_POLICY)
            return response
        return super().process_response(request, response)
