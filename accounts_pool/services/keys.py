"""Secrets shown once: personal API tokens and pool consumer keys, stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import User
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


def api_token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """Create a token; the plain secret is returned once and never stored."""
    secret = _new_secret(TOKEN_PREFIX)
    token = ApiToken.objects.create(
        user=user, name=name[:100], prefix=secret[:12], token_hash=secret_hash(secret)
    )
    return token, secret


def api_token_authenticate(secret: str) -> ApiToken | None:
    """The live token for a presented secret (recording its use), or None."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=secret_hash(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is not None:
        _touch(ApiToken, token)
    return token


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
