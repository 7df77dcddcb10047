"""The access rules (accounts_pool/access.py) for the API: who is calling, and a refusal as
ninja's HttpError, which main.py renders as `{"error": {...}}`."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from django.http import HttpRequest
from ninja.errors import HttpError

from .. import access as rules
from ..models import Account, Pool, Team
from .auth import Principal

P = ParamSpec("P")
T = TypeVar("T")


def principal(request: HttpRequest) -> Principal:
    """Who is calling, as the endpoint's auth found them (ninja keeps it in `request.auth`)."""
    found = getattr(request, "auth", None)
    if not isinstance(found, Principal):
        raise RuntimeError(
            f"request.auth is {type(found).__name__}, not a Principal: "
            "only an endpoint with the API's auth knows who is calling."
        )
    return found


class NotFound(HttpError):
    def __init__(self, what: str) -> None:
        super().__init__(404, rules.NotFound(what).message)


def _as_http_error(rule: Callable[P, T]) -> Callable[P, T]:
    @wraps(rule)
    def checked(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return rule(*args, **kwargs)
        except rules.Refused as refused:
            raise HttpError(refused.status, refused.message) from None

    return checked


users_only = _as_http_error(rules.users_only)
superusers_only = _as_http_error(rules.superusers_only)
keys_only = _as_http_error(rules.keys_only)
visible_teams = _as_http_error(rules.visible_teams)
checkout_for = _as_http_error(rules.checkout_for)


@_as_http_error
def team_for(principal: Principal, slug: str, *, lead: bool = False) -> Team:
    return rules.team_for(principal, slug, lead=lead)[0]


@_as_http_error
def pool_for(principal: Principal, slug: str, *, lead: bool = False, key_ok: bool = False) -> Pool:
    return rules.pool_for(principal, slug, lead=lead, key_ok=key_ok)[0]


@_as_http_error
def account_for(principal: Principal, account_id: int, *, lead: bool = False) -> Account:
    return rules.account_for(principal, account_id, lead=lead)[0]
