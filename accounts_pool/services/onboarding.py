"""Creating accounts from tokens a person already has. (The API adds the provider checks.)"""

from __future__ import annotations

from datetime import datetime

from django.db.models import F
from django.utils import timezone

from .. import state
from ..crypto import fingerprint
from ..models import Account, Pool
from .events import event_record


def account_create_oauth(
    *,
    pool: Pool,
    label: str,
    refresh_token: str,
    access_token: str = "",
    expires_at: datetime | None = None,
    actor: str,
    now: datetime | None = None,
) -> Account:
    """Store an OAuth account's tokens (encrypted). Without an access token it is due at once."""
    now = now or timezone.now()
    if not refresh_token:
        raise ValueError("A refresh token is required.")
    account = Account.objects.create(
        pool=pool,
        label=label,
        kind=Account.Kind.OAUTH,
        refresh_token=refresh_token,
        refresh_token_fingerprint=fingerprint(refresh_token),
        access_token=access_token if expires_at else "",
        access_expires_at=expires_at if access_token else None,
        credential_version=1,
    )
    event_record(
        account_id=account.pk,
        at=now,
        operation=state.Operation.ONBOARDING,
        outcome="created",
        message=f"OAuth account {label!r} added",
        actor=actor,
    )
    return account


def account_store_tokens(
    *,
    account: Account,
    refresh_token: str,
    access_token: str = "",
    expires_at: datetime | None = None,
    actor: str,
    now: datetime | None = None,
) -> None:
    """Re-login: new tokens for an existing account. A new refresh token clears needs-re-login
    and the refresh backoff; the history is kept."""
    now = now or timezone.now()
    Account.objects.filter(pk=account.pk).update(
        refresh_token=refresh_token,
        refresh_token_fingerprint=fingerprint(refresh_token),
        access_token=access_token if expires_at else "",
        access_expires_at=expires_at if access_token else None,
        relogin_required_for="",
        refresh_failures=0,
        refresh_backoff_until=None,
        refresh_error_kind="",
        refresh_error_status=None,
        refresh_error_message="",
        refresh_error_at=None,
        credential_version=F("credential_version") + 1,
    )
    event_record(
        account_id=account.pk,
        at=now,
        operation=state.Operation.ONBOARDING,
        outcome="tokens_replaced",
        message="new tokens stored (re-login)",
        actor=actor,
    )
