"""Anthropic OAuth: token refresh, code exchange, usage and profile (PROVIDERS.md).

The only code that speaks HTTP to Anthropic. Every call has a timeout; every answer is parsed
defensively into a dataclass; every failure raises an error whose type says WHICH operation
failed (TokenEndpointError for refresh and exchange, UsageEndpointError for quota), carrying
that operation's own failure type (`state.TokenFailure`, `state.QuotaFailure`) with the status,
Retry-After and the provider's error code and message, and never a secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

import httpx
from django.conf import settings

from ..redaction import redact
from ..state import (
    FailureKind,
    ProfileFailure,
    ProviderFailure,
    QuotaFailure,
    TokenFailure,
    failure_kind,
)
from .cookies import no_cookies

CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
REDIRECT_URI = "https://platform.claude.com/oauth/code/callback"
LOGIN_SCOPES = (
    "org:create_api_key user:profile user:inference user:sessions:claude_code "
    "user:mcp_servers user:file_upload"
)
REFRESH_SCOPES = " ".join(s for s in LOGIN_SCOPES.split() if s != "org:create_api_key")
USAGE_BETA = "oauth-2025-04-20"
MAX_TOKEN_LIFETIME_SECONDS = 30 * 86400
MAX_BODY_BYTES = 1024 * 1024  # provider answers are a few KB


# --- Errors -------------------------------------------------------------------------------------


F = TypeVar("F", bound=ProviderFailure)


class ProviderError(Exception, Generic[F]):
    """A failed call; `failure` is of the failed operation's own type."""

    operation = "provider"
    failure_type: type[F]

    def __init__(self, failure: F) -> None:
        self.failure = failure
        status = f"HTTP {failure.status}" if failure.status else failure.kind.value
        super().__init__(f"{self.operation}: {status}: {failure.message}")


class TokenEndpointError(ProviderError[TokenFailure]):
    """The token endpoint (refresh or code exchange) failed."""

    operation = "token endpoint"
    failure_type = TokenFailure


class UsageEndpointError(ProviderError[QuotaFailure]):
    """The usage (quota) endpoint failed."""

    operation = "usage endpoint"
    failure_type = QuotaFailure


class ProfileEndpointError(ProviderError[ProfileFailure]):
    operation = "profile endpoint"
    failure_type = ProfileFailure


# --- Answers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    refresh_token: str | None  # None: the provider kept the old one
    expires_in: timedelta  # the caller dates it with its own clock
    scope: str
    account_uuid: str
    email: str
    organization_uuid: str
    organization_name: str

    def __repr__(self) -> str:  # never print tokens, even in a traceback
        return f"TokenGrant(expires_in={self.expires_in!r}, account_uuid={self.account_uuid!r})"

    def identity(self) -> dict[str, str]:
        """The account fields this answer names (empty values left out)."""
        return _identity(
            self.account_uuid, self.email, self.organization_uuid, self.organization_name
        )


@dataclass(frozen=True)
class UsageWindow:
    key: str
    label: str
    utilization: float | None  # None: unknown, never 0
    resets_at: datetime | None
    # A scoped (per-model weekly) window: the model's id, else its display name.
    model_id: str = ""
    model_name: str = ""

    @property
    def scoped(self) -> bool:
        return bool(self.model_id or self.model_name)


@dataclass(frozen=True)
class Usage:
    windows: tuple[UsageWindow, ...]


@dataclass(frozen=True)
class Profile:
    account_uuid: str
    email: str
    organization_uuid: str
    organization_name: str

    def identity(self) -> dict[str, str]:
        return _identity(
            self.account_uuid, self.email, self.organization_uuid, self.organization_name
        )


def _identity(account_uuid: str, email: str, org_uuid: str, org_name: str) -> dict[str, str]:
    fields = {
        "provider_account_uuid": account_uuid,
        "email": email,
        "organization_uuid": org_uuid,
        "organization_name": org_name,
    }
    return {name: value for name, value in fields.items() if value}


# --- Parsing helpers ----------------------------------------------------------------------------


def _error_details(response: httpx.Response, sent: tuple[str, ...]) -> tuple[str | None, str]:
    """The provider's error code and message from a JSON (OAuth or API style) or HTML body,
    with the secrets the call `sent` masked wherever the body quotes them."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        snippet = response.text[:200] if response.text else ""
        kind = "HTML" if "<html" in snippet.lower() or "<!doctype" in snippet.lower() else "text"
        return None, redact(f"non-JSON {kind} body") if snippet else "empty body"
    if not isinstance(body, dict):
        return None, "unexpected JSON body"
    error = body.get("error")
    if isinstance(error, dict):  # {"type": "error", "error": {"type", "message"}}
        code = error.get("type")
        message = error.get("message")
    else:  # OAuth: {"error": "invalid_grant", "error_description": "..."}
        code = error
        message = body.get("error_description") or body.get("message")
    code = code if isinstance(code, str) else None
    message = message if isinstance(message, str) else (code or "")
    return code, redact(message, secrets=sent)


def _http_failure(response: httpx.Response, of: type[F], sent: tuple[str, ...] = ()) -> F:
    code, message = _error_details(response, sent)
    return of(
        kind=failure_kind(status=response.status_code, error_code=code),
        status=response.status_code,
        error_code=code,
        message=message,
        retry_after=response.headers.get("retry-after"),
    )


def _transport_failure(exc: httpx.HTTPError, of: type[F]) -> F:
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
    return of(kind=FailureKind.NETWORK, message=f"network error: {kind}")


def _malformed(status: int, why: str, of: type[F]) -> F:
    return of(kind=FailureKind.MALFORMED, status=status, message=why)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return number


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _nested(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def parse_token_grant(body: dict[str, Any]) -> TokenGrant | None:
    """A token answer, or None when it lacks an access token or a numeric lifetime."""
    access = body.get("access_token")
    expires_in = _number(body.get("expires_in"))
    if not isinstance(access, str) or not access or expires_in is None:
        return None
    if not 0 < expires_in <= MAX_TOKEN_LIFETIME_SECONDS:
        return None  # tokens live hours; a lifetime of years is a broken answer
    refresh = body.get("refresh_token")
    account = _nested(body, "account")
    organization = _nested(body, "organization")
    return TokenGrant(
        access_token=access,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_in=timedelta(seconds=expires_in),
        scope=_string(body.get("scope")),
        account_uuid=_string(account.get("uuid")),
        email=_string(account.get("email_address")),
        organization_uuid=_string(organization.get("uuid")),
        organization_name=_string(organization.get("name")),
    )


_FIXED_WINDOWS = (
    ("five_hour", "5-hour"),
    ("seven_day", "7-day"),
)
_LEGACY_MODEL_WINDOWS = (("seven_day_opus", "Opus"), ("seven_day_sonnet", "Sonnet"))


def scoped_label(name: str) -> str:
    """How a per-model weekly window is named to people: "Opus-only weekly"."""
    return f"{name}-only weekly"[:120]


def _window(key: str, label: str, raw: Any, *, model_name: str = "") -> UsageWindow:
    raw = raw if isinstance(raw, dict) else {}
    return UsageWindow(
        key,
        label,
        _number(raw.get("utilization")),
        _timestamp(raw.get("resets_at")),
        model_name=model_name,
    )


def parse_usage(body: dict[str, Any]) -> Usage:
    """Windows from a usage answer. Missing, null or non-numeric windows are unknown."""
    windows = [_window(key, label, body.get(key)) for key, label in _FIXED_WINDOWS]
    scoped: list[UsageWindow] = []
    limits = body.get("limits")
    for entry in limits if isinstance(limits, list) else []:
        if not isinstance(entry, dict) or entry.get("kind") != "weekly_scoped":
            continue
        model = _nested(_nested(entry, "scope"), "model")
        model_id = _string(model.get("id"))[:120]
        name = _string(model.get("display_name"))[:120]
        if not (model_id or name):
            continue  # a scoped window that names no model cannot be applied to any request
        scoped.append(
            UsageWindow(
                f"model:{model_id or name.lower()}"[:120],
                scoped_label(name or model_id),
                _number(entry.get("percent")),
                _timestamp(entry.get("resets_at")),
                model_id=model_id,
                model_name=name,
            )
        )
    if not scoped:  # older answers carry per-model weekly windows as objects
        for key, name in _LEGACY_MODEL_WINDOWS:
            if isinstance(body.get(key), dict):
                scoped.append(_window(key, scoped_label(name), body[key], model_name=name))
    return Usage(tuple(windows + scoped))


# --- PKCE -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PkceLogin:
    authorize_url: str
    state: str
    verifier: str = field(repr=False)


def pkce_login(authorize_url: str | None = None) -> PkceLogin:
    """A fresh S256 PKCE login: the URL to open, the state to check, the verifier to keep."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state = secrets.token_hex(16)
    query = urlencode(
        {
            "code": "true",
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": LOGIN_SCOPES,
            "code_challenge": challenge.decode().rstrip("="),
            "code_challenge_method": "S256",
            "state": state,
        }
    )
    base = authorize_url or settings.ANTHROPIC_AUTHORIZE_URL
    return PkceLogin(f"{base}?{query}", state, verifier)


# --- Client -------------------------------------------------------------------------------------


class AnthropicClient:
    def __init__(
        self,
        *,
        token_url: str,
        usage_url: str,
        profile_url: str,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        shared: bool = False,
    ) -> None:
        self.token_url = token_url
        self.usage_url = usage_url
        self.profile_url = profile_url
        self.timeout = timeout
        self.shared = shared
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout), transport=transport, cookies=no_cookies()
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AnthropicClient:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.shared:  # the shared client lives as long as the process
            self.close()

    def _send(
        self,
        error: type[ProviderError[Any]],
        method: str,
        url: str,
        *,
        sent: tuple[str, ...],
        **kwargs: Any,
    ) -> httpx.Response:
        """One request under one overall deadline. httpx's timeouts apply per phase and per
        read, so a body dripped slowly could hold a worker (and a refresh claim) forever.
        `sent`: the secrets in the request, masked in any error message its answer quotes."""
        deadline = time.monotonic() + self.timeout
        request = self._http.build_request(method, url, **kwargs)
        try:
            streamed = self._http.send(request, stream=True)
            try:
                chunks = []
                size = 0
                for chunk in streamed.iter_raw():
                    chunks.append(chunk)
                    size += len(chunk)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("overall deadline exceeded", request=request)
                    if size > MAX_BODY_BYTES:
                        raise error(
                            _malformed(streamed.status_code, "answer too large", error.failure_type)
                        )
            finally:
                streamed.close()
        except httpx.HTTPError as exc:
            raise error(_transport_failure(exc, error.failure_type)) from None
        response = httpx.Response(
            streamed.status_code,
            headers=streamed.headers,
            content=b"".join(chunks),
            request=request,
        )
        if response.status_code >= 400:
            raise error(_http_failure(response, error.failure_type, sent))
        return response

    def _token(self, payload: dict[str, str], *, sent: tuple[str, ...]) -> TokenGrant:
        response = self._send(
            TokenEndpointError,
            "POST",
            self.token_url,
            sent=sent,
            json=payload,
            headers={"Accept": "application/json"},
        )
        body = _json_object(response)
        if body is None:
            raise TokenEndpointError(
                _malformed(response.status_code, "token answer is not JSON", TokenFailure)
            )
        grant = parse_token_grant(body)
        if grant is None:
            raise TokenEndpointError(
                _malformed(
                    response.status_code,
                    "token answer lacks access_token or expires_in",
                    TokenFailure,
                )
            )
        return grant

    def refresh(self, refresh_token: str) -> TokenGrant:
        """Exchange a refresh token (single use: it may rotate) for a new access token."""
        return self._token(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": CLIENT_ID,
                "scope": REFRESH_SCOPES,
            },
            sent=(refresh_token,),
        )

    def exchange_code(self, *, code: str, state: str, verifier: str) -> TokenGrant:
        """Finish a PKCE login."""
        return self._token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "state": state,
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            },
            sent=(code, verifier),
        )

    def _bearer_get(self, error: type[ProviderError[Any]], url: str, access_token: str) -> Any:
        response = self._send(
            error,
            "GET",
            url,
            sent=(access_token,),
            headers={
                "Authorization": f"Bearer {access_token}",
                "anthropic-beta": USAGE_BETA,
                "Accept": "application/json",
            },
        )
        body = _json_object(response)
        if body is None:
            raise error(
                _malformed(response.status_code, "answer is not a JSON object", error.failure_type)
            )
        return body

    def usage(self, access_token: str) -> Usage:
        """The account's quota windows."""
        return parse_usage(self._bearer_get(UsageEndpointError, self.usage_url, access_token))

    def profile(self, access_token: str) -> Profile:
        """Who the access token belongs to."""
        body = self._bearer_get(ProfileEndpointError, self.profile_url, access_token)
        account = _nested(body, "account")
        organization = _nested(body, "organization")
        return Profile(
            account_uuid=_string(account.get("uuid")),
            email=_string(account.get("email_address") or account.get("email")),
            organization_uuid=_string(organization.get("uuid")),
            organization_name=_string(organization.get("name")),
        )


_shared: dict[tuple[object, ...], AnthropicClient] = {}
_shared_lock = threading.Lock()


def client() -> AnthropicClient:
    """The client for the configured endpoints (DESIGN.md 4.1), shared by the threads of this
    process: building one loads the CA bundle (tens of milliseconds of CPU) and a shared one
    keeps its connections alive. Keyed by process id, so a forked worker never inherits one."""
    key = (
        os.getpid(),
        settings.ANTHROPIC_TOKEN_URL,
        settings.ANTHROPIC_USAGE_URL,
        settings.ANTHROPIC_PROFILE_URL,
        settings.ANTHROPIC_HTTP_TIMEOUT,
    )
    with _shared_lock:
        found = _shared.get(key)
        if found is None:
            found = _shared[key] = AnthropicClient(
                token_url=settings.ANTHROPIC_TOKEN_URL,
                usage_url=settings.ANTHROPIC_USAGE_URL,
                profile_url=settings.ANTHROPIC_PROFILE_URL,
                timeout=settings.ANTHROPIC_HTTP_TIMEOUT,
                shared=True,
            )
        return found


# --- What tools report back -------------------------------------------------------------------

_HEADER_WINDOWS = (("5h", "five_hour", "5-hour"), ("7d", "seven_day", "7-day"))


def parse_ratelimit_headers(headers: dict[str, str]) -> tuple[UsageWindow, ...]:
    """Windows from a Messages API response's unified rate-limit headers (fractions 0-1, resets
    in epoch seconds). Header names are matched case-insensitively; unreadable values skipped."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    windows = []
    for short, key, label in _HEADER_WINDOWS:
        fraction = _number(lowered.get(f"anthropic-ratelimit-unified-{short}-utilization"))
        reset = _number(lowered.get(f"anthropic-ratelimit-unified-{short}-reset"))
        if fraction is None:
            continue
        resets_at = None
        if reset is not None and 0 < reset < 10**11:
            resets_at = datetime.fromtimestamp(reset, tz=UTC)
        windows.append(UsageWindow(key, label, max(0.0, min(fraction * 100, 100.0)), resets_at))
    return tuple(windows)
