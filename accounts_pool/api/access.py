"""Team isolation for the API: objects of other teams are 404, not 403, so nothing leaks."""

from __future__ import annotations

from django.db.models import QuerySet
from ninja.errors import HttpError

from ..models import Account, Membership, Pool, Team
from ..selectors import user_role, user_teams
from .auth import Principal

FORBIDDEN_FOR_KEYS = "Consumer keys may only check out, report and read their pool."


class NotFound(HttpError):
    def __init__(self, what: str) -> None:
        super().__init__(404, f"{what} not found.")


class Forbidden(HttpError):
    def __init__(self, message: str) -> None:
        super().__init__(403, message)


def _role(principal: Principal, team: Team) -> str | None:
    return None if principal.user is None else user_role(principal.user, team)


def _require(principal: Principal, team: Team, *, lead: bool, what: str) -> None:
    role = _role(principal, team)
    if role is None:
        raise NotFound(what)
    if lead and role != Membership.Role.LEAD:
        raise Forbidden(f"Only the team's leads may do this ({what}).")


def users_only(principal: Principal) -> None:
    if principal.key is not None:
        raise Forbidden(FORBIDDEN_FOR_KEYS)


def visible_teams(principal: Principal) -> QuerySet[Team]:
    users_only(principal)
    assert principal.user is not None
    return user_teams(principal.user)


def team_for(principal: Principal, slug: str, *, lead: bool = False) -> Team:
    users_only(principal)
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        raise NotFound("Team")
    _require(principal, team, lead=lead, what="Team")
    return team


def pool_for(principal: Principal, slug: str, *, lead: bool = False, key_ok: bool = False) -> Pool:
    if principal.key is not None:
        # A key knows its one pool (loaded with it): any other slug is not found.
        if principal.key.pool.slug != slug:
            raise NotFound("Pool")
        if not key_ok:
            raise Forbidden(FORBIDDEN_FOR_KEYS)
        return principal.key.pool
    pool = Pool.objects.select_related("team").filter(slug=slug).first()
    if pool is None:
        raise NotFound("Pool")
    _require(principal, pool.team, lead=lead, what="Pool")
    return pool


def account_for(principal: Principal, account_id: int, *, lead: bool = False) -> Account:
    users_only(principal)
    account = Account.objects.select_related("pool", "pool__team").filter(pk=account_id).first()
    if account is None:
        raise NotFound("Account")
    _require(principal, account.pool.team, lead=lead, what="Account")
    return account


def keys_only(principal: Principal) -> None:
    if principal.key is None:
        raise Forbidden("Checkout and reports take a pool consumer key.")
