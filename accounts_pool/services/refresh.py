"""Token refresh: single flight per account, provider answer saved before anything else.

Writes the credential and refresh-state groups only (DESIGN.md 3, 3.4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from .. import state
from ..crypto import fingerprint
from ..models import Account
from ..providers import anthropic
from .events import CYCLE_ACTOR, event_record

REFRESHED = "refreshed"
REFRESHED_ELSEWHERE = "refreshed_elsewhere"
CLAIMED_ELSEWHERE = "claimed_elsewhere"
NOT_DUE = "not_due"
BACKING_OFF = "backing_off"
NEEDS_RELOGIN = "needs_relogin"
NOT_REFRESHABLE = "not_refreshable"
WAIT_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class RefreshResult:
    account_id: int
    outcome: str  # one of the constants above, or a state.FailureKind value
    message: str = ""
    until: datetime | None = None

    @property
    def has_fresh_token(self) -> bool:
        return self.outcome in (REFRESHED, REFRESHED_ELSEWHERE)


def _claim_seconds() -> timedelta:
    return timedelta(seconds=settings.ACCOUNTS_POOL_CLAIM_SECONDS)


def _claim(account: Account, now: datetime, *, respect_backoff: bool) -> bool:
    """Take the single-flight claim with one conditional UPDATE; True for the one winner.

    The credential version in the WHERE makes a worker that read an older credential lose, so
    a refresh token is never sent twice."""
    candidates = Account.objects.filter(
        pk=account.pk, credential_version=account.credential_version
    ).filter(Q(refresh_claimed_until__isnull=True) | Q(refresh_claimed_until__lte=now))
    candidates = candidates.exclude(relogin_required_for=F("refresh_token_fingerprint"))
    if respect_backoff:
        candidates = candidates.filter(
            Q(refresh_backoff_until__isnull=True) | Q(refresh_backoff_until__lte=now)
        )
    return candidates.update(refresh_claimed_until=now + _claim_seconds()) == 1


def _wait_for_winner(account: Account) -> Account:
    """Re-read until the claim holder finished (or its claim lapsed)."""
    deadline = time.monotonic() + _claim_seconds().total_seconds()
    while True:
        current = Account.objects.get(pk=account.pk)
        if current.credential_version != account.credential_version:
            return current
        claim = current.refresh_claimed_until
        if claim is None or claim <= timezone.now() or time.monotonic() > deadline:
            return current
        time.sleep(WAIT_POLL_SECONDS)


def _store_grant(account: Account, grant: anthropic.TokenGrant, now: datetime) -> None:
    updates: dict[str, object] = {
        "access_token": grant.access_token,
        "access_expires_at": now + grant.expires_in,
        "last_refreshed_at": now,
        "credential_version": F("credential_version") + 1,
        "refresh_claimed_until": None,
        "refresh_failures": 0,
        "refresh_backoff_until": None,
        "refresh_error_kind": "",
        "refresh_error_status": None,
        "refresh_error_message": "",
        "refresh_error_at": None,
        "relogin_required_for": "",
    }
    if grant.refresh_token:  # rotated; an answer without one keeps the old token
        updates["refresh_token"] = grant.refresh_token
        updates["refresh_token_fingerprint"] = fingerprint(grant.refresh_token)
    for field, value in (
        ("provider_account_uuid", grant.account_uuid),
        ("email", grant.email),
        ("organization_uuid", grant.organization_uuid),
        ("organization_name", grant.organization_name),
    ):
        if value:
            updates[field] = value
    Account.objects.filter(pk=account.pk).update(**updates)


def refresh_record_failure(
    account: Account, failure: state.ProviderFailure, now: datetime, actor: str
) -> RefreshResult:
    """Record a token-endpoint failure: refresh state only, by the ladders of state.py."""
    effect = state.refresh_failure_effect(
        failure, previous_failures=account.refresh_failures, now=now
    )
    Account.objects.filter(pk=account.pk).update(
        refresh_claimed_until=None,
        refresh_failures=effect.failures,
        refresh_backoff_until=effect.backoff_until,
        refresh_error_kind=failure.kind.value,
        refresh_error_status=failure.status,
        refresh_error_message=failure.message[:300],
        refresh_error_at=now,
        relogin_required_for=account.refresh_token_fingerprint if effect.needs_relogin else "",
    )
    event_record(
        account_id=account.pk,
        at=now,
        operation=state.Operation.TOKEN_REFRESH,
        outcome=effect.outcome.value,
        http_status=failure.status,
        message=failure.message or failure.kind.value,
        retry_after=effect.retry_after,
        until=effect.backoff_until,
        actor=actor,
    )
    return RefreshResult(account.pk, effect.outcome.value, failure.message, effect.backoff_until)


def refresh_mark_access_rejected(account: Account, now: datetime) -> None:
    """The provider said 401 to the access token: it is dead whatever its expiry says, so the
    account needs a refresh (and is not handed out) until one succeeds."""
    Account.objects.filter(
        pk=account.pk, credential_version=account.credential_version, access_expires_at__gt=now
    ).update(access_expires_at=now)
    account.access_expires_at = min(account.access_expires_at or now, now)


def account_refresh(
    *,
    account_id: int,
    now: datetime | None = None,
    force: bool = False,
    access_rejected: bool = False,
    wait: bool = False,
    lead: timedelta | None = None,
    actor: str = CYCLE_ACTOR,
) -> RefreshResult:
    """Refresh one account's tokens if due (or `force`, which ignores due-ness and backoff but
    never a needs-re-login). `lead` widens the pool's refresh lead (checkout refreshes a token
    that expires within 5 minutes). Exactly one caller wins the claim and calls the provider;
    with `wait`, losers wait for the winner and report its result."""
    now = now or timezone.now()
    account = Account.objects.select_related("pool").get(pk=account_id)
    if account.kind != Account.Kind.OAUTH or not account.refresh_token_fingerprint:
        return RefreshResult(account.pk, NOT_REFRESHABLE, "no refresh token")
    if access_rejected:
        refresh_mark_access_rejected(account, now)
    if account.needs_relogin:
        return RefreshResult(account.pk, NEEDS_RELOGIN, account.refresh_error_message)
    snapshot = account.state_snapshot(windows=[])
    policy = account.pool.policy
    if lead is not None and lead > policy.refresh_lead:
        policy = replace(policy, refresh_lead=lead)
    if not force and not state.refresh_due(snapshot, policy, now):
        backing_off = (
            account.refresh_backoff_until is not None and account.refresh_backoff_until > now
        )
        if backing_off:
            return RefreshResult(account.pk, BACKING_OFF, until=account.refresh_backoff_until)
        return RefreshResult(account.pk, NOT_DUE)
    if not _claim(account, now, respect_backoff=not force):
        if not wait:
            return RefreshResult(account.pk, CLAIMED_ELSEWHERE)
        current = _wait_for_winner(account)
        if current.credential_version != account.credential_version:
            return RefreshResult(account.pk, REFRESHED_ELSEWHERE)
        return RefreshResult(account.pk, CLAIMED_ELSEWHERE, current.refresh_error_message)
    # The provider is called outside any transaction; its answer is saved at once.
    try:
        with anthropic.client() as provider:
            grant = provider.refresh(account.refresh_token)
    except anthropic.TokenEndpointError as exc:
        return refresh_record_failure(account, exc.failure, now, actor)
    except BaseException:
        # Not a provider answer (a bug, a bad key): free the account for the next try at once.
        Account.objects.filter(pk=account.pk).update(refresh_claimed_until=None)
        raise
    _store_grant(account, grant, now)
    if account.refresh_failures or account.refresh_error_kind:
        event_record(
            account_id=account.pk,
            at=now,
            operation=state.Operation.TOKEN_REFRESH,
            outcome="recovered",
            message=f"refreshed after {account.refresh_failures} failure(s)",
            actor=actor,
        )
    return RefreshResult(account.pk, REFRESHED)
