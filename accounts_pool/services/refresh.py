"""Token refresh: single flight per account, provider answer saved before anything else.

Writes the credential and refresh-state groups only (DESIGN.md 3, 3.4).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from .. import metrics, rawsql, selectors, state
from ..crypto import fingerprint
from ..models import Account
from ..providers import anthropic
from .events import CYCLE_ACTOR, event_record

logger = logging.getLogger(__name__)

REFRESHED = "refreshed"
REFRESHED_ELSEWHERE = "refreshed_elsewhere"
CLAIMED_ELSEWHERE = "claimed_elsewhere"
NOT_DUE = "not_due"
BACKING_OFF = "backing_off"
NEEDS_RELOGIN = "needs_relogin"
NOT_REFRESHABLE = "not_refreshable"
WAIT_POLL_SECONDS = 0.1


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


def _claim(account: Account, now: datetime, *, respect_backoff: bool) -> datetime | None:
    """Take the single-flight claim with one conditional UPDATE. The one winner gets the claim's
    end, which also serves as its token: later writes only land while the claim is still theirs.

    The credential version in the WHERE makes a worker that read an older credential lose, so
    a refresh token is never sent twice. (Written as SQL: every refresh runs it; rawsql.)"""
    on = rawsql.db()
    at = rawsql.param(now, on)
    claimed, backoff = _col("refresh_claimed_until"), _col("refresh_backoff_until")
    where = (
        f"{_col('id')} = %s AND {_col('credential_version')} = %s"
        f" AND ({claimed} IS NULL OR {claimed} <= %s)"
        f" AND NOT ({_col('relogin_required_for')} = {_col('refresh_token_fingerprint')})"
    )
    params: tuple[object, ...] = (account.pk, account.credential_version, at)
    if respect_backoff:
        where += f" AND ({backoff} IS NULL OR {backoff} <= %s)"
        params += (at,)
    until = now + _claim_seconds()
    changed = rawsql.update(
        on, Account, {"refresh_claimed_until": until}, rawsql.Sql(where, params)
    )
    return until if changed == 1 else None


def _col(name: str) -> str:
    return rawsql.column(Account, name)


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


def refresh_state_cleared() -> dict[str, object]:
    """The refresh-state group as a new working credential leaves it: no failures, no backoff,
    no error, no re-login needed (a successful refresh, or a re-login's new tokens)."""
    return {
        "refresh_failures": 0,
        "refresh_backoff_until": None,
        "refresh_error_kind": "",
        "refresh_error_status": None,
        "refresh_error_message": "",
        "refresh_error_at": None,
        "relogin_required_for": "",
    }


def _store_grant(
    account: Account, grant: anthropic.TokenGrant, now: datetime, claim: datetime
) -> bool:
    """Save the provider's answer at once. Kept whatever became of the claim (the provider has
    already rotated the token), unless a re-login replaced the credential meanwhile; the claim
    is released only if it is still ours. (Written as SQL: every refresh runs it; rawsql.)"""
    on = rawsql.db()
    claimed = _col("refresh_claimed_until")
    updates: dict[str, object] = {
        "access_token": grant.access_token,
        "access_expires_at": now + grant.expires_in,
        "last_refreshed_at": now,
        "credential_version": rawsql.Sql(f"{_col('credential_version')} + 1"),
        "refresh_claimed_until": rawsql.Sql(
            f"CASE WHEN {claimed} = %s THEN NULL ELSE {claimed} END", (rawsql.param(claim, on),)
        ),
        **refresh_state_cleared(),
    }
    if grant.refresh_token:  # rotated; an answer without one keeps the old token
        updates["refresh_token"] = grant.refresh_token
        updates["refresh_token_fingerprint"] = fingerprint(grant.refresh_token)
    updates.update(grant.identity())
    unchanged = rawsql.Sql(
        f"{_col('id')} = %s AND {_col('credential_version')} = %s",
        (account.pk, account.credential_version),
    )
    return rawsql.update(on, Account, updates, unchanged) == 1


def refresh_record_failure(
    account: Account,
    failure: state.ProviderFailure,
    now: datetime,
    actor: str,
    *,
    claim: datetime | None = None,
) -> RefreshResult:
    """Record a token-endpoint failure: refresh state only, by the ladders of state.py. With a
    claim, only while it is still ours and the credential unchanged (a re-login or a worker
    that took over a lapsed claim has the newer word)."""
    effect = state.refresh_failure_effect(
        failure, previous_failures=account.refresh_failures, now=now
    )
    rows = Account.objects.filter(pk=account.pk, credential_version=account.credential_version)
    if claim is not None:
        rows = rows.filter(refresh_claimed_until=claim)
    recorded = rows.update(
        refresh_claimed_until=None,
        refresh_failures=effect.failures,
        refresh_backoff_until=effect.backoff_until,
        refresh_error_kind=failure.kind.value,
        refresh_error_status=failure.status,
        refresh_error_message=failure.message[:300],
        refresh_error_at=now,
        relogin_required_for=account.refresh_token_fingerprint if effect.needs_relogin else "",
    )
    if not recorded:
        return RefreshResult(account.pk, CLAIMED_ELSEWHERE, "superseded while in flight")
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


def refresh_mark_access_rejected(account: Account, now: datetime, *, version: int) -> None:
    """The provider said 401 to the access token of credential `version`: that token is dead
    whatever its expiry says, so the account needs a refresh (and is not handed out) until one
    succeeds. A newer credential is left alone."""
    Account.objects.filter(
        pk=account.pk, credential_version=version, access_expires_at__gt=now
    ).update(access_expires_at=now)
    if account.credential_version == version:
        account.access_expires_at = min(account.access_expires_at or now, now)


@metrics.counts_outcome(metrics.REFRESH_OUTCOMES)
def account_refresh(
    *,
    account_id: int,
    now: datetime | None = None,
    force: bool = False,
    access_rejected_version: int | None = None,
    wait: bool = False,
    lead: timedelta | None = None,
    actor: str = CYCLE_ACTOR,
) -> RefreshResult:
    """Refresh one account's tokens if due.

    `force` (a person's lever) ignores due-ness and the backoff, but never a needs-re-login and
    never within a minute of the last failure. `access_rejected_version` says the provider
    rejected that credential's access token. `lead` widens the pool's refresh lead (checkout
    refreshes a token that expires within 5 minutes). Exactly one caller wins the claim and
    calls the provider; with `wait`, losers wait for the winner and report its result. `now` is
    for tests: without it every timestamp is read when it is written."""
    started = now or timezone.now()
    # Only the refresh token is needed: leave the other secrets undecrypted.
    account = selectors.account_for_refresh(account_id)
    if account.kind != Account.Kind.OAUTH or not account.refresh_token_fingerprint:
        return RefreshResult(account.pk, NOT_REFRESHABLE, "no refresh token")
    if access_rejected_version is not None:
        refresh_mark_access_rejected(account, started, version=access_rejected_version)
    if account.needs_relogin:
        return RefreshResult(account.pk, NEEDS_RELOGIN, account.refresh_error_message)
    snapshot = account.state_snapshot(windows=[])
    policy = account.pool.policy
    if lead is not None and lead > policy.refresh_lead:
        policy = replace(policy, refresh_lead=lead)
    backing_off = (
        account.refresh_backoff_until is not None and account.refresh_backoff_until > started
    )
    if force and state.force_too_soon(account.refresh_error_at, started):
        return RefreshResult(account.pk, BACKING_OFF, "failed less than a minute ago")
    if not force and not state.refresh_due(snapshot, policy, started):
        if backing_off:
            return RefreshResult(account.pk, BACKING_OFF, until=account.refresh_backoff_until)
        return RefreshResult(account.pk, NOT_DUE)
    claim = _claim(account, started, respect_backoff=not force)
    if claim is None:
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
        return refresh_record_failure(
            account, exc.failure, now or timezone.now(), actor, claim=claim
        )
    except Exception as exc:
        # Not a provider answer (a bad key, a bug): back off like a network error, so the
        # account is neither retried every tick nor silently stuck, then let it surface.
        failure = state.ProviderFailure(
            kind=state.FailureKind.INTERNAL, message=f"internal error: {type(exc).__name__}"
        )
        refresh_record_failure(account, failure, now or timezone.now(), actor, claim=claim)
        raise
    answered = now or timezone.now()
    if not _store_grant(account, grant, answered, claim):
        logger.warning("account=%s refresh answer dropped: re-login happened meanwhile", account.pk)
        return RefreshResult(account.pk, REFRESHED_ELSEWHERE, "credential replaced meanwhile")
    if account.refresh_failures or account.refresh_error_kind:
        event_record(
            account_id=account.pk,
            at=answered,
            operation=state.Operation.TOKEN_REFRESH,
            outcome="recovered",
            message=f"refreshed after {account.refresh_failures} failure(s)",
            actor=actor,
        )
    return RefreshResult(account.pk, REFRESHED)
