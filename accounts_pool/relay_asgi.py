"""The relay's ASGI handler: Django's, with no middleware (DESIGN.md 4.4: the relay's path need
not pass through the web pages' sessions, CSRF, messages or login throttling).

Django's ASGI handler runs each MiddlewareMixin middleware's hooks in its one thread for sync
code: nine of them made every relayed request take turns on that thread. The URLconf, the
models, the services and the state rules are the same as the web app's."""

from __future__ import annotations

from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response


class RelayHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        """BaseHandler.load_middleware's chain for an empty MIDDLEWARE (the stubs do not
        declare the handler's private attributes, hence getattr)."""
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        get_response = getattr(self, "_get_response_async" if is_async else "_get_response")
        self._middleware_chain = convert_exception_to_response(get_response)
