"""Onboarding by tokens a person already has (checked with the provider first, or stored as
given), API-key accounts, and a re-login's new tokens for an existing account.

Provider calls happen before any write and outside transactions; what the provider answered is
recorded through the refresh and quota services, so each field group keeps its one writer.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ... import state
from ...crypto import fingerprint
from ...models import Account, Pool
from ...providers import anthropic
from ..errors import Invalid
from ..quota import quota_record_failure, quota_record_usage
from ..refresh import refresh_record_failure, refresh_state_cleared
from .common import (
    Onboarded,
    access_fields,
    create_oauth,
    onboard_event,
    refuse_duplicate_identity,
    refuse_held_refresh_token,
    refused,
    with_first_quota_check,
)


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
    """Store an OAuth account's tokens as given, unchecked by the provider (the admin form): the
    cycle refreshes it at once when it has no access token. A refresh token the team already
    holds is refused: two accounts refreshing one token would kill both."""
    if not refresh_token:
        raise Invalid("A refresh token is required.")
    refuse_held_refresh_token(pool.team_id, refresh_token)
    return create_oauth(
        pool=pool,
        label=label,
        refresh_token=refresh_token,
        access_token=access_token,
        expires_at=expires_at,
        identity={},
        actor=actor,
        now=now or timezone.now(),
        how="unchecked",
    )


def _onboard_with_access_token(
    *,
    pool: Pool,
    label: str,
    refresh_token: str,
    access_token: str,
    expires_at: datetime,
    actor: str,
    now: datetime,
) -> Onboarded:
    usage: anthropic.Usage | None = None
    failure: state.QuotaFailure | None = None
    identity: dict[str, str] = {}
    with anthropic.client() as provider:
        try:
            usage = provider.usage(access_token)
        except anthropic.UsageEndpointError as exc:
            failure = exc.failure
            if state.onboarding_usage_outcome(failure) == state.OnboardingOutcome.REFUSED:
                raise refused(failure, "access token") from None
        try:
            profile = provider.profile(access_token)
            identity = profile.identity()
        except anthropic.ProfileEndpointError:
            pass  # identity stays empty; the next refresh answer may fill it
    refuse_duplicate_identity(pool, identity.get("provider_account_uuid", ""))
    account = create_oauth(
        pool=pool,
        label=label,
        refresh_token=refresh_token,
        access_token=access_token,
        expires_at=expires_at,
        identity=identity,
        actor=actor,
        now=now,
        how="access token checked",
    )
    if usage is not None:
        quota_record_usage(account, usage, now, actor)
        return Onboarded(account, state.OnboardingOutcome.VERIFIED)
    assert failure is not None
    quota_record_failure(account, failure, now, actor)
    return Onboarded(account, state.onboarding_usage_outcome(failure))


def _onboard_by_refresh(
    *, pool: Pool, label: str, refresh_token: str, actor: str, now: datetime
) -> Onboarded:
    try:
        with anthropic.client() as provider:
            grant = provider.refresh(refresh_token)
    except anthropic.TokenEndpointError as exc:
        if state.onboarding_token_outcome(exc.failure) == state.OnboardingOutcome.REFUSED:
            raise refused(exc.failure, "refresh token") from None
        account = create_oauth(
            pool=pool,
            label=label,
            refresh_token=refresh_token,
            access_token="",
            expires_at=None,
            identity={},
            actor=actor,
            now=now,
            how="unchecked: provider busy",
        )
        refresh_record_failure(account, exc.failure, now, actor)
        return Onboarded(account, state.OnboardingOutcome.UNVERIFIED)
    refuse_duplicate_identity(pool, grant.account_uuid)
    account = create_oauth(
        pool=pool,
        label=label,
        refresh_token=grant.refresh_token or refresh_token,
        access_token=grant.access_token,
        expires_at=now + grant.expires_in,
        identity=grant.identity(),
        actor=actor,
        now=now,
        how="refresh",
        refreshed=True,
    )
    return with_first_quota_check(account, actor)


def account_onboard_tokens(
    *,
    pool: Pool,
    label: str,
    refresh_token: str,
    access_token: str = "",
    expires_at: datetime | None = None,
    actor: str,
    now: datetime | None = None,
) -> Onboarded:
    """Onboard an OAuth account from tokens, checked with the provider first.

    With an unexpired access token the usage endpoint checks it; without one a refresh does (and
    its rotated tokens are what gets stored). A dead refresh token or a rejected access token is
    refused and nothing is saved; a policy 403 onboards the account as blocked; a transient
    failure onboards it and leaves the retry to the cycle.

    A refresh token the team already holds is refused first, with no provider call: refreshing
    it would rotate it under the account that holds it, which then dies of invalid_grant."""
    now = now or timezone.now()
    refuse_held_refresh_token(pool.team_id, refresh_token)
    if access_token and expires_at is not None and expires_at > now:
        return _onboard_with_access_token(
            pool=pool,
            label=label,
            refresh_token=refresh_token,
            access_token=access_token,
            expires_at=expires_at,
            actor=actor,
            now=now,
        )
    return _onboard_by_refresh(
        pool=pool, label=label, refresh_token=refresh_token, actor=actor, now=now
    )


def account_create_api_key(
    *,
    pool: Pool,
    label: str,
    api_key: str,
    base_url: str = "",
    actor: str,
    now: datetime | None = None,
) -> Account:
    """Store a plain API key (no refresh, no quota polling; reports still cool it down)."""
    now = now or timezone.now()
    with transaction.atomic():
        account = Account.objects.create(
            pool=pool,
            label=label,
            kind=Account.Kind.API_KEY,
            api_key=api_key,
            base_url=base_url,
            credential_version=1,
        )
        onboard_event(account, now, "created", "API-key account added", actor)
    return account


def account_store_tokens(
    *,
    account: Account,
    refresh_token: str,
    access_token: str = "",
    expires_at: datetime | None = None,
    identity: dict[str, str] | None = None,
    actor: str,
    now: datetime | None = None,
) -> None:
    """Re-login: new tokens for an existing account. A new refresh token clears needs-re-login
    and the refresh backoff; the history is kept. A refresh token the team already holds (this
    account's own included: it may be the rejected one) is refused."""
    now = now or timezone.now()
    refuse_held_refresh_token(account.pool.team_id, refresh_token)
    Account.objects.filter(pk=account.pk).update(
        refresh_token=refresh_token,
        refresh_token_fingerprint=fingerprint(refresh_token),
        **access_fields(access_token, expires_at),
        **refresh_state_cleared(),
        credential_version=F("credential_version") + 1,
        **{k: v for k, v in (identity or {}).items() if v},
    )
    onboard_event(account, now, "tokens_replaced", "new tokens stored (re-login)", actor)
