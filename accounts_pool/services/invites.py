"""Invite links: a lead lets team members add their own subscription to a pool."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from ..models import Pool, PoolInvite
from ..selectors import user_role
from .errors import ServiceError
from .keys import secret_hash
from .onboarding import LoginStarted, Onboarded, oauth_login_complete, oauth_login_start

INVITE_TTL = timedelta(hours=24)


def invite_create(*, pool: Pool, user: User, now: datetime | None = None) -> tuple[PoolInvite, str]:
    """A single-use link valid 24 hours; the token is returned once."""
    now = now or timezone.now()
    token = secrets.token_urlsafe(32)
    invite = PoolInvite.objects.create(
        pool=pool,
        token_hash=secret_hash(token),
        created_by=user,
        created_at=now,
        expires_at=now + INVITE_TTL,
    )
    return invite, token


def invite_open(*, token: str, user: User, now: datetime | None = None) -> PoolInvite:
    """The invite behind a link, if this user may use it now. Anything else looks the same
    from outside: not found."""
    now = now or timezone.now()
    invite = (
        PoolInvite.objects.select_related("pool", "pool__team")
        .filter(token_hash=secret_hash(token))
        .first()
    )
    if invite is None or user_role(user, invite.pool.team) is None:
        raise ServiceError("No such invite.", code="invite_not_found", status=404)
    if invite.used_at is not None:
        raise ServiceError("This invite link was already used.", code="invite_used", status=409)
    if invite.expires_at <= now:
        raise ServiceError(
            "This invite link expired (24 hours).", code="invite_expired", status=410
        )
    return invite


def invite_login_start(*, invite: PoolInvite, user: User) -> LoginStarted:
    return oauth_login_start(pool=invite.pool, user=user)


def invite_complete(
    *,
    invite: PoolInvite,
    user: User,
    session: str,
    pasted_code: str,
    label: str,
    now: datetime | None = None,
) -> Onboarded:
    """Finish the invitee's login; the link is spent once an account is added."""
    now = now or timezone.now()
    if not PoolInvite.objects.filter(pk=invite.pk, used_at__isnull=True).update(
        used_at=now, used_by=user
    ):
        raise ServiceError("This invite link was already used.", code="invite_used", status=409)
    try:
        result = oauth_login_complete(
            pool=invite.pool,
            session=session,
            pasted_code=pasted_code,
            label=label,
            actor=f"user:{user.get_username()} (invite)",
            now=now,
        )
    except ServiceError:
        PoolInvite.objects.filter(pk=invite.pk).update(used_at=None, used_by=None)
        raise
    PoolInvite.objects.filter(pk=invite.pk).update(account=result.account)
    return result


def invites_outstanding(*, pool: Pool, now: datetime | None = None) -> list[PoolInvite]:
    """The pool's links that can still be used: not used, not expired."""
    now = now or timezone.now()
    rows = PoolInvite.objects.filter(pool=pool, used_at__isnull=True, expires_at__gt=now)
    return list(rows.select_related("created_by").order_by("-created_at"))


def invite_revoke(*, invite: PoolInvite, now: datetime | None = None) -> bool:
    """End an unused link now (it stays in the records as expired). False if already unusable."""
    now = now or timezone.now()
    ended = PoolInvite.objects.filter(pk=invite.pk, used_at__isnull=True, expires_at__gt=now)
    return ended.update(expires_at=now) == 1


def invites_prune(*, now: datetime, older_than: timedelta) -> int:
    """Delete invite links that expired more than `older_than` ago, used or not (the account's
    history keeps who added it); returns how many rows went."""
    deleted, _ = PoolInvite.objects.filter(expires_at__lt=now - older_than).delete()
    return deleted
