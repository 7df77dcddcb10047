"""Team isolation for pages: other teams' objects are 404; members read, leads act."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from ..models import Account, Membership, Pool, Team
from ..selectors import user_role


def actor_of(request: HttpRequest) -> str:
    """Who pulled a lever from a page, as the history records it."""
    return f"user:{request.user.get_username()}"


def _check(request: HttpRequest, team: Team, *, lead: bool) -> str:
    role = user_role(request.user, team)
    if role is None:
        raise Http404("Not found.")
    if lead and role != Membership.Role.LEAD:
        raise PermissionDenied("Only the team's leads may do this.")
    return role


def team_or_404(request: HttpRequest, slug: str, *, lead: bool = False) -> tuple[Team, str]:
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        raise Http404("Not found.")
    return team, _check(request, team, lead=lead)


def pool_or_404(request: HttpRequest, slug: str, *, lead: bool = False) -> tuple[Pool, str]:
    pool = Pool.objects.select_related("team").filter(slug=slug).first()
    if pool is None:
        raise Http404("Not found.")
    return pool, _check(request, pool.team, lead=lead)


def account_or_404(
    request: HttpRequest, account_id: int, *, lead: bool = False
) -> tuple[Account, str]:
    account = Account.objects.select_related("pool", "pool__team").filter(pk=account_id).first()
    if account is None:
        raise Http404("Not found.")
    return account, _check(request, account.pool.team, lead=lead)
