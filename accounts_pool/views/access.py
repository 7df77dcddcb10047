"""The access rules (accounts_pool/access.py) for pages: the signed-in user as the principal,
and a refusal as Http404 or PermissionDenied."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from .. import access as rules
from ..models import Account, Pool, Team


def signed_in_user(request: HttpRequest) -> User:
    """The page's user; pages that call this are behind @login_required."""
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise RuntimeError(
            f"request.user is {type(user).__name__}, not a signed-in User: "
            "a page that checks access needs @login_required."
        )
    return user


def principal(request: HttpRequest) -> rules.Principal:
    """The signed-in user as the access rules see a caller."""
    return rules.Principal(user=signed_in_user(request))


def actor_of(request: HttpRequest) -> str:
    """Who pulled a lever from a page, as the history records it."""
    return principal(request).actor


@contextmanager
def _as_page_error() -> Iterator[None]:
    try:
        yield
    except rules.NotFound as refused:
        raise Http404(refused.summary) from None
    except rules.Refused as refused:
        raise PermissionDenied(refused.summary) from None


def team_or_404(request: HttpRequest, slug: str, *, lead: bool = False) -> tuple[Team, str]:
    with _as_page_error():
        return rules.team_for(principal(request), slug, lead=lead)


def pool_or_404(request: HttpRequest, slug: str, *, lead: bool = False) -> tuple[Pool, str]:
    with _as_page_error():
        pool, role = rules.pool_for(principal(request), slug, lead=lead)
    assert role is not None  # a person's role; only a consumer key has none
    return pool, role


def account_or_404(
    request: HttpRequest, account_id: int, *, lead: bool = False
) -> tuple[Account, str]:
    with _as_page_error():
        return rules.account_for(principal(request), account_id, lead=lead)
