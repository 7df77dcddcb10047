"""When the database does not answer (refused, timed out, cancelled by DB_STATEMENT_TIMEOUT):
503 with Retry-After, in the shape the caller reads (the API's error object, a short page),
instead of a 500 page after a hang. The relay answers its own, in Anthropic's error shape
(relay_exchange.exchange)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger("accounts_pool.outage")

# What Django raises when the server cannot be reached or gave up on a statement.
UNAVAILABLE = (OperationalError, InterfaceError)
MESSAGE = "The database is not answering; try again shortly."


def unavailable_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.warning("database unavailable on %s: %s", request.path, type(exc).__name__)
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse(
            {"error": {"code": "database_unavailable", "message": MESSAGE}}, status=503
        )
    else:
        response = HttpResponse(MESSAGE + "\n", status=503, content_type="text/plain")
    response["Retry-After"] = str(settings.DB_UNAVAILABLE_RETRY_AFTER)
    return response


class DatabaseOutageMiddleware:
    """Turns a database outage met by any view into unavailable_response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        return unavailable_response(request, exc) if isinstance(exc, UNAVAILABLE) else None
