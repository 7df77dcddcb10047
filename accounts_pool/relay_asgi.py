"""The relay's ASGI handler: Django's, with no middleware (DESIGN.md 4.4: the relay's path need
not pass through the web pages' sessions, CSRF, messages or login throttling), and a body kept
only up to the relay's cap.

Django's ASGI handler runs each MiddlewareMixin middleware's hooks in its one thread for sync
code: nine of them made every relayed request take turns on that thread. The URLconf, the
models, the services and the state rules are the same as the web app's."""

from __future__ import annotations

import tempfile
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestAborted
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

    async def read_body(self, receive: Any) -> Any:
        """Django's read_body, keeping at most RELAY_MAX_BODY_BYTES + 1 bytes (the view answers
        413 beyond the cap): a chunked body of no declared length is read to its end, so the
        tool gets its answer, but the rest is dropped instead of filling a temporary file."""
        body_file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (returned open, as Django does)
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        room = settings.RELAY_MAX_BODY_BYTES + 1
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            if room > 0 and message.get("body"):
                kept = message["body"][:room]
                body_file.write(kept)
                room -= len(kept)
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file
