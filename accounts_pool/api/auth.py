"""Who is calling: a personal API token (acts with its user's team roles), a pool consumer key
(checkout and report for its pool only), or a browser session (CSRF-checked for writes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from ..models import ConsumerKey
from ..services.keys import CONSUMER_KEY_PREFIX, api_token_authenticate, consumer_key_authenticate


@dataclass(frozen=True)
class Principal:
    user: User | None = None
    key: ConsumerKey | None = None
    # The key may be as this process read it lately (RecentKeys): revoked or its pool changed
    # since. Only checkout takes such a key, and confirms it before anything leaves.
    recent: bool = False

    @property
    def actor(self) -> str:
        if self.key is not None:
            return self.key.actor
        assert self.user is not None
        return f"user:{self.user.get_username()}"


class BearerAuth(HttpBearer):
    def __init__(self, *, recent_keys: bool = False) -> None:
        super().__init__()
        self.recent_keys = recent_keys

    def __call__(self, request: HttpRequest) -> Principal | None:
        """ninja's HttpBearer, reading the one header it needs (request.headers copies them
        all) and never logging it (HttpBearer logs a malformed header, secret and all, under
        DEBUG)."""
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != self.openapi_scheme or not token:
            return None
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> Principal | None:
        if token.startswith(CONSUMER_KEY_PREFIX):
            key = consumer_key_authenticate(token, recent=self.recent_keys)
            return Principal(key=key, recent=self.recent_keys) if key is not None else None
        api_token = api_token_authenticate(token)
        return Principal(user=api_token.user) if api_token is not None else None


class SessionPrincipal(SessionAuth):
    """A logged-in browser session, CSRF-checked for writes.

    Only a request that is a browser session gets that check: one that sends its own
    credential (an Authorization header), or comes with no logged-in session, is not one, so a
    bad, expired or revoked token answers 401 on every method rather than ninja's 403 "CSRF
    check failed" (which told a tool nothing about its credential)."""

    def __call__(self, request: HttpRequest) -> Any:
        if "HTTP_AUTHORIZATION" in request.META:
            return None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = request.user
        if user.is_authenticated and isinstance(user, User):
            return Principal(user=user)
        return None


BEARER = BearerAuth()
AUTH = [BEARER, SessionPrincipal()]
# Checkout, every tool's hot path, takes a key as read lately and confirms it itself.
CHECKOUT_AUTH = [BearerAuth(recent_keys=True), SessionPrincipal()]
