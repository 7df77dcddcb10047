"""Secrets shown once: personal API tokens and pool consumer keys, stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.utils import timezone

from .. import selectors
from ..models import ApiToken, ConsumerKey, Pool

LAST_USED_GRANULARITY = timedelta(minutes=1)
TOKEN_PREFIX = "apt_"
CONSUMER_KEY_PREFIX = "apk_"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


# A new token lives this long unless its creator asks otherwise; the longest one can ask for.
API_TOKEN_DEFAULT_DAYS = 90
API_TOKEN_MAX_DAYS = 366


def api_token_create(
    *, user: User, name: str, days: int | None = API_TOKEN_DEFAULT_DAYS
) -> tuple[ApiToken, str]:
    """Create a token that expires after `days` (None: never); the plain secret is returned
    once and never stored."""
    if days is not None and not 1 <= days <= API_TOKEN_MAX_DAYS:
        raise ValueError(f"days must be between 1 and {API_TOKEN_MAX_DAYS}")
    secret = _new_secret(TOKEN_PREFIX)
    token = ApiToken.objects.create(
        user=user,
        name=name[:100],
        prefix=secret[:12],
        token_hash=secret_hash(secret),
        expires_at=None if days is None else timezone.now() + timedelta(days=days),
    )
    return token, secret


def _live_tokens(now: datetime) -> Q:
    return Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))


def api_token_authenticate(secret: str) -> ApiToken | None:
    """The live token (not revoked, not expired) for a presented secret, recording its use;
    else None."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(_live_tokens(timezone.now()), token_hash=secret_hash(secret), user__is_active=True)
        .first()
    )
    if token is not None:
        _touch(ApiToken, token)
    return token


def api_tokens_of(user: User) -> QuerySet[ApiToken]:
    """A person's tokens, live ones first, newest first."""
    return ApiToken.objects.filter(user=user).order_by("revoked_at", "-created_at")


def api_token_revoke(*, user: User, token_id: int, now: datetime | None = None) -> bool:
    """Revoke one of the user's own tokens; False when they have no such live token."""
    revoked = ApiToken.objects.filter(pk=token_id, user=user, revoked_at__isnull=True).update(
        revoked_at=now or timezone.now()
    )
    return revoked == 1


def consumer_key_create(*, pool: Pool, name: str, created_by: User) -> tuple[ConsumerKey, str]:
    """Create a pool's key for tools; the plain key is returned once and never stored."""
    secret = _new_secret(CONSUMER_KEY_PREFIX)
    key = ConsumerKey.objects.create(
        pool=pool,
        name=name[:100],
        prefix=secret[:12],
        key_hash=secret_hash(secret),
        created_by=created_by,
    )
    return key, secret


def consumer_key_revoke(*, key: ConsumerKey, now: datetime | None = None) -> None:
    ConsumerKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=now or timezone.now()
    )


def _touch(model: type[ApiToken] | type[ConsumerKey], row: ApiToken | ConsumerKey) -> None:
    """Record the use, at most once a minute: a write per request would cost more than the
    request (checkout is on every tool's hot path)."""
    now = timezone.now()
    if row.last_used_at is None or row.last_used_at < now - LAST_USED_GRANULARITY:
        model.objects.filter(pk=row.pk, revoked_at__isnull=True).update(last_used_at=now)
        row.last_used_at = now


def consumer_key_authenticate(secret: str) -> ConsumerKey | None:
    """The live key for a presented secret with its pool (recording its use), or None."""
    key = selectors.consumer_key_with_pool(secret_hash(secret))
    if key is not None:
        consumer_key_touch(key)
    return key


def consumer_key_touch(key: ConsumerKey) -> None:
    """Record a live key's use (at most once a minute)."""
    _touch(ConsumerKey, key)
