"""Teams and members."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from ..models import Membership, Team
from ..services import teams as team_services
from . import access
from .schemas import ErrorOut, MemberIn, MemberOut, TeamIn, TeamOut

router = Router(tags=["teams"])
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}


def _team_out(team: Team, role: str | None) -> dict[str, object]:
    return {"slug": team.slug, "name": team.name, "role": role, "created_at": team.created_at}


@router.get("/teams", response={200: list[TeamOut], **ERRORS})
def list_teams(request: HttpRequest) -> list[dict[str, object]]:
    """Teams the caller belongs to (all of them for a superuser), with the caller's role."""
    principal = access.principal(request)
    teams = access.visible_teams(principal)
    roles = dict(Membership.objects.filter(user=principal.user).values_list("team_id", "role"))
    return [_team_out(team, roles.get(team.pk)) for team in teams.order_by("name")]


@router.post("/teams", response={201: TeamOut, **ERRORS})
def create_team(request: HttpRequest, payload: TeamIn) -> Status[dict[str, object]]:
    """Create a team (superusers only)."""
    access.superusers_only(access.principal(request))
    team = team_services.team_create(name=payload.name, slug=payload.slug)
    return Status(201, _team_out(team, None))


@router.post("/teams/{team}/members", response={201: MemberOut, **ERRORS})
def add_member(request: HttpRequest, team: str, payload: MemberIn) -> Status[dict[str, object]]:
    """Add a user to the team as `lead` or `member` (or change their role). Leads only."""
    principal = access.principal(request)
    found = access.team_for(principal, team, lead=True)
    assert principal.user is not None  # team_for(lead=True) admits people only
    membership = team_services.membership_set(
        team=found, username=payload.username, role=payload.role, by=principal.user
    )
    return Status(201, {"username": membership.user.get_username(), "role": membership.role})
