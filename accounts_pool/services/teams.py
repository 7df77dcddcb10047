"""Teams, their members and their pools."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q

from ..models import Membership, Pool, Team
from .errors import Conflict, Invalid

POLICY_FIELDS = {
    "refresh_lead_seconds": "refresh_lead",
    "quota_interval_seconds": "quota_interval",
    "policy_recheck_seconds": "policy_recheck_interval",
}


def team_create(*, name: str, slug: str) -> Team:
    if Team.objects.filter(slug=slug).exists():
        raise Conflict(f"A team with slug {slug!r} exists.", code="slug_taken")
    return Team.objects.create(name=name, slug=slug)


def membership_set(*, team: Team, username: str, role: str, by: User) -> Membership:
    """Add a user to the team with a role, or change the role of a member.

    A lead adds people of their own teams, or people in no team yet (new colleagues); a member
    of other teams only answers as an unknown username does, so the answer tells a lead
    nothing about other teams. Superusers add anyone."""
    users = User.objects.filter(username=username, is_active=True)
    if not by.is_superuser:
        own_teams = Membership.objects.filter(user=by).values("team")
        users = users.filter(
            Q(memberships__team__in=own_teams) | Q(memberships__isnull=True)
        ).distinct()
    user = users.first()
    if user is None:
        raise Invalid(
            f"No user {username!r} you can add: people of your teams, or in no team yet. "
            "An administrator adds anyone else.",
            code="unknown_user",
        )
    membership, _ = Membership.objects.update_or_create(
        team=team, user=user, defaults={"role": role}
    )
    return membership


def _pool_values(fields: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name in POLICY_FIELDS:
            values[POLICY_FIELDS[name]] = timedelta(seconds=value)
        else:
            values[name] = value
    return values


def pool_create(*, team: Team, fields: dict[str, Any]) -> Pool:
    """Slugs are unique across teams. One another team holds is refused as a slug that is not
    valid, so the answer says nothing of other teams' pools."""
    values = _pool_values(fields)
    try:
        with transaction.atomic():
            return Pool.objects.create(team=team, **values)
    except IntegrityError:
        if Pool.objects.filter(team=team, slug=values.get("slug")).exists():
            raise Conflict(
                f"Your team already has a pool with slug {values.get('slug')!r}.",
                code="slug_taken",
            ) from None
        raise Invalid(
            "This slug cannot be used; choose another.", code="validation_error"
        ) from None


def pool_update(*, pool: Pool, fields: dict[str, Any]) -> Pool:
    values = _pool_values(fields)
    for name, value in values.items():
        setattr(pool, name, value)
    if values:
        pool.save(update_fields=list(values))
    return pool


def team_create_led_by(*, name: str, slug: str, lead: User) -> Team:
    """A new team with its creator as its first lead (pages: an administrator starts a team)."""
    with transaction.atomic():
        team = team_create(name=name, slug=slug)
        Membership.objects.create(team=team, user=lead, role=Membership.Role.LEAD)
    return team


def membership_remove(*, team: Team, user_id: int) -> Membership:
    """Take a person off the team; the last lead stays (someone must be able to act)."""
    membership = Membership.objects.filter(team=team, user_id=user_id).first()
    if membership is None:
        raise Invalid("Not a member of this team.", code="unknown_user")
    leads = Membership.objects.filter(team=team, role=Membership.Role.LEAD)
    if membership.role == Membership.Role.LEAD and leads.count() == 1:
        raise Conflict("The last lead stays: make someone else lead first.", code="last_lead")
    membership.delete()
    return membership


def membership_set_role(*, team: Team, user_id: int, role: str) -> Membership:
    """Change a member's role; the last lead cannot step down."""
    membership = Membership.objects.filter(team=team, user_id=user_id).first()
    if membership is None:
        raise Invalid("Not a member of this team.", code="unknown_user")
    leads = Membership.objects.filter(team=team, role=Membership.Role.LEAD)
    if membership.role == Membership.Role.LEAD and role != "lead" and leads.count() == 1:
        raise Conflict("The last lead stays: make someone else lead first.", code="last_lead")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership
