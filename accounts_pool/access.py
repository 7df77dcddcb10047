"""Team isolation, once for the API and the pages: another team's objects are not found (so
nothing leaks that they exist), members read, leads act, superusers act as leads, and a pool's
consumer key only checks out, reports and reads its own pool.

The rules raise `Refused`; `api/access.py` turns it into ninja's HttpError and
`views/access.py` into Http404/PermissionDenied."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from django.contrib.auth.models import User
from django.db.models import QuerySet

# Principal stays in api/auth.py while that module is reworked; it is re-exported here.
from .api.auth import Principal as Principal
from .models import Account, Checkout, ConsumerKey, Membership, Pool, Team
from .selectors import user_role, user_teams

FORBIDDEN_FOR_KEYS = "Consumer keys may only check out, report and read their pool."


class Refused(Exception):
    """The caller may not have this. `message` is what the API says (it names the kind of
    object); `summary` is what a page says."""

    status: ClassVar[int] = 403

    def __init__(self, message: str, *, summary: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.summary = message if summary is None else summary


class NotFound(Refused):
    status = 404

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found.", summary="Not found.")


class Forbidden(Refused):
    status = 403


class LeadsOnly(Forbidden):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"Only the team's leads may do this ({what}).",
            summary="Only the team's leads may do this.",
        )


def _require(principal: Principal, team: Team, *, lead: bool, what: str) -> str:
    role = None if principal.user is None else user_role(principal.user, team)
    if role is None:
        raise NotFound(what)
    if lead and role != Membership.Role.LEAD:
        raise LeadsOnly(what)
    return role


def users_only(principal: Principal) -> User:
    """The person calling; a consumer key is refused."""
    if principal.key is not None:
        raise Forbidden(FORBIDDEN_FOR_KEYS)
    assert principal.user is not None  # a Principal is a key or a user
    return principal.user


def superusers_only(principal: Principal) -> User:
    user = users_only(principal)
    if not user.is_superuser:
        raise Forbidden("Only a superuser creates teams.")
    return user


def keys_only(principal: Principal) -> ConsumerKey:
    """The calling pool consumer key; a person is refused."""
    if principal.key is None:
        raise Forbidden("Checkout and reports take a pool consumer key.")
    return principal.key


def visible_teams(principal: Principal) -> QuerySet[Team]:
    return user_teams(users_only(principal))


def team_for(principal: Principal, slug: str, *, lead: bool = False) -> tuple[Team, str]:
    """The team and the caller's role in it (a superuser's is lead)."""
    users_only(principal)
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        raise NotFound("Team")
    return team, _require(principal, team, lead=lead, what="Team")


def pool_for(
    principal: Principal, slug: str, *, lead: bool = False, key_ok: bool = False
) -> tuple[Pool, str | None]:
    """The pool and the caller's role in its team; a consumer key (role None) finds only its
    own pool, and only where `key_ok`."""
    if principal.key is not None:
        # A key knows its one pool (loaded with it): any other slug is not found.
        if principal.key.pool.slug != slug:
            raise NotFound("Pool")
        if not key_ok:
            raise Forbidden(FORBIDDEN_FOR_KEYS)
        return principal.key.pool, None
    pool = Pool.objects.select_related("team").filter(slug=slug).first()
    if pool is None:
        raise NotFound("Pool")
    return pool, _require(principal, pool.team, lead=lead, what="Pool")


def account_for(
    principal: Principal, account_id: int, *, lead: bool = False
) -> tuple[Account, str]:
    """The account and the caller's role in its pool's team."""
    users_only(principal)
    account = (
        Account.objects.select_related("pool", "pool__team")
        .defer(*Account.SECRET_FIELDS)  # never shown; one that does not decrypt must not fail
        .filter(pk=account_id)
        .first()
    )
    if account is None:
        raise NotFound("Account")
    return account, _require(principal, account.pool.team, lead=lead, what="Account")


def checkout_for(key: ConsumerKey, checkout_id: UUID) -> Checkout:
    """A checkout this key made; any other is not found."""
    found = Checkout.objects.filter(pk=checkout_id, consumer_key=key).first()
    if found is None:
        raise NotFound("Checkout")
    return found
