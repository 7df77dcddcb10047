"""The JSON API at /api/v1/: one NinjaAPI, one error shape, OpenAPI at /api/v1/openapi.json."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.types import DictStrAny

from ..jsoninput import UnreadableJson, json_loads
from ..outage import unavailable_response
from ..services.checkout import NoUsableAccount
from ..services.errors import ServiceError
from ..services.limits import KeyLimitExceeded
from . import accounts, channels, me, pools, teams, tools, usage
from .auth import AUTH

logger = logging.getLogger("accounts_pool.api")


class BoundedJsonParser(Parser):
    """Bodies nested deeper than any real document, or holding lone surrogates, are refused
    here (a 400) rather than overflowing the stack or an encoder inside a service."""

    def parse_body(self, request: HttpRequest) -> DictStrAny:
        document: DictStrAny = json_loads(request.body)
        return document


api = NinjaAPI(
    title="accounts-pool",
    version="1",
    description=(
        "Shared pools of provider accounts: onboard accounts, read why an account is excluded "
        "and until when, check out a working credential, report what the provider answered. "
        "Authenticate with `Authorization: Bearer <personal API token or pool consumer key>` "
        "or a browser session (CSRF token required for writes). Errors have one shape: "
        '`{"error": {"code", "message", "details"?}}`. Reason codes: disabled, needs_relogin, '
        "refresh_backoff, token_expired, org_policy_blocked, quota_exhausted, quota_unknown, "
        "quota_stale, cooldown, credential_unreadable."
    ),
    auth=AUTH,
    parser=BoundedJsonParser(),
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
}


def error_response(
    request: HttpRequest, status: int, code: str, message: str, details: Any = None
) -> HttpResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return api.create_response(request, {"error": body}, status=status)


@api.exception_handler(ServiceError)
def _service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    response = error_response(request, exc.status, exc.code, exc.message, exc.details)
    if isinstance(exc, NoUsableAccount) and exc.retry_at is not None:
        seconds = max(1, int((exc.retry_at - timezone.now()).total_seconds() + 0.999))
        response["Retry-After"] = str(seconds)
    if isinstance(exc, KeyLimitExceeded):
        response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    details = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": error.get("msg", "")}
        for error in exc.errors
    ]
    return error_response(request, 422, "validation_error", "The request is not valid.", details)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = error_response(
        request, 401, "unauthenticated", "Send a valid API token or consumer key (Bearer)."
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = STATUS_CODES.get(exc.status_code, "error")
    message = str(exc)
    if isinstance(exc.__cause__, UnreadableJson):  # ninja wraps every parser error in a 400
        message = f"The request body is {exc.__cause__}."
    return error_response(request, exc.status_code, code, message)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", "Not found.")


@api.exception_handler(DataError)
def _unstorable(request: HttpRequest, exc: DataError) -> HttpResponse:
    # A value the database refuses (a NUL in a path, an out-of-range number): bad input, and
    # nothing was stored.
    logger.info("refused unstorable input: %s", type(exc).__name__)
    return error_response(request, 422, "validation_error", "A value in the request is invalid.")


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    return unavailable_response(request, exc)


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return error_response(request, 413, "payload_too_large", "The request body is too large.")


def unknown_path(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under /api/v1/ (an id that decodes to a slash, a typo): the API's 404,
    in its one error shape rather than the site's HTML page."""
    return error_response(request, 404, "not_found", "No such API path.")


# Tools first: Django tries URL patterns in order, and checkout and reports are most requests.
api.add_router("", tools.router)
api.add_router("", teams.router)
api.add_router("", pools.router)
api.add_router("", accounts.router)
api.add_router("", me.router)
api.add_router("", channels.router)
api.add_router("", usage.router)
