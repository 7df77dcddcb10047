"""Token refresh: single flight per account, provider answer saved before anything else.

Writes the credential and refresh-state groups only (DESIGN.md 3, 3.4).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db.models import F, Q, Value
from django.db.models.functions import NullIf
from django.utils import timezone

from .. import metrics, state
from ..crypto import SecretDecryptionError, fingerprint
from ..models import Account, Pool
from ..providers import anthropic
from .credentials import credential_unreadable_mark
from .events import CYCLE_ACTOR, event_record

logger = logging.getLogger(__name__)

WAIT_POLL_SECONDS = 0.1

# What a refresh reads: the columns of the state rules, the refresh token it sends, the claim's
# and the failure streak's, and its pool's policy. Every refresh reads one row, and every
# column costs Python time to select and convert (bench/cycle.py); the other secrets stay
# undecrypted. tests/test_token_refresh.py counts a refresh's statements, so a column read
# here but not listed (a query of its own) fails it.
REFRESH_FIELDS = (
    *Account.STATE_FIELDS,
    "refresh_token",
    "credential_version",
    "refresh_failures",
    "refresh_claimed_until",
    "refresh_sent_at",
    "pool",
    *(f"pool__{name}" for name in Pool.POLICY_FIELDS),
)


class RefreshOutcome(StrEnum):
    REFRESHED = "refreshed"
    REFRESHED_ELSEWHERE = "refreshed_elsewhere"  # another caller won the claim and succeeded
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    NOT_DUE = "not_due"
    BACKING_OFF = "backing_off"
    NEEDS_RELOGIN = "needs_relogin"
    NOT_REFRESHABLE = "not_refreshable"
    # Its stored refresh token does not decrypt with the configured keys (credentials.py).
    CREDENTIAL_UNREADABLE = "credential_unreadable"
    # A failed refresh: what the token endpoint answered (state.FailureKind's values).
    INVALID_GRANT = state.FailureKind.INVALID_GRANT.value
    REJECTED = state.FailureKind.REJECTED.value
    RATE_LIMITED = state.FailureKind.RATE_LIMITED.value
    SERVER_ERROR = state.FailureKind.SERVER_ERROR.value
    NETWORK = state.FailureKind.NETWORK.value
    MALFORMED = state.FailureKind.MALFORMED.value
    INTERNAL = state.FailureKind.INTERNAL.value
    ACCESS_REJECTED = state.FailureKind.ACCESS_REJECTED.value


@dataclass(frozen=True)
class RefreshResult:
    account_id: int
    outcome: RefreshOutcome
    message: str = ""
    until: datetime | None = None

    @property
    def has_fresh_token(self) -> bool:
        return self.outcome in (RefreshOutcome.REFRESHED, RefreshOutcome.REFRESHED_ELSEWHERE)


def _claim_seconds() -> timedelta:
    return timedelta(seconds=settings.ACCOUNTS_POOL_CLAIM_SECONDS)


def _claim(account: Account, now: datetime, *, respect_backoff: bool) -> datetime | None:
    """Take the single-flight claim with one conditional UPDATE. The one winner gets the claim's
    end, which also serves as its token: later writes only land while the claim is still theirs.

    The credential version in the WHERE makes a worker that read an older credential lose, so
    a refresh token is never sent twice."""
    # One condition, one filter: each chained filter copies the whole query.
    claimable = (
        Q(pk=account.pk, credential_version=account.credential_version)
        & (Q(refresh_claimed_until__isnull=True) | Q(refresh_claimed_until__lte=now))
        & ~Q(relogin_required_for=F("refresh_token_fingerprint"))
    )
    if respect_backoff:
        claimable &= Q(refresh_backoff_until__isnull=True) | Q(refresh_backoff_until__lte=now)
    rows = Account.objects.filter(claimable)
    until = now + _claim_seconds()
    # The request goes out right after: marked now, so that a worker killed mid-call leaves a
    # trace (refresh_sent_at past its claim: an interrupted refresh).
    taken = rows.update(refresh_claimed_until=until, refresh_sent_at=now)
    return until if taken == 1 else None


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


def refresh_state_cleared(*, failures: int = 0) -> dict[str, object]:
    """The refresh-state group as a new working credential leaves it: no backoff, no error, no
    re-login needed (a successful refresh, or a re-login's new tokens); no failures unless a
    streak of rejected access tokens goes on (state.refresh_success_effect)."""
    return {
        "refresh_failures": failures,
        "refresh_backoff_until": None,
        "refresh_error_kind": "",
        "refresh_error_status": None,
        "refresh_error_message": "",
        "refresh_error_at": None,
        "relogin_required_for": "",
        "refresh_sent_at": None,
        # New secrets, written under the first key: whatever an old key hid is gone.
        "credential_unreadable_at": None,
    }


def _store_grant(
    account: Account,
    grant: anthropic.TokenGrant,
    now: datetime,
    claim: datetime,
    *,
    asked_by_401: bool,
) -> bool:
    """Save the provider's answer at once. Kept whatever became of the claim (the provider has
    already rotated the token), unless a re-login replaced the credential meanwhile; the claim
    is released only if it is still ours."""
    effect = state.refresh_success_effect(
        previous_failures=account.refresh_failures,
        previous_error_kind=account.refresh_error_kind,
        asked_by_401=asked_by_401,
    )
    updates: dict[str, object] = {
        "access_token": grant.access_token,
        "access_expires_at": now + grant.expires_in,
        "access_from_401": effect.token_from_401,
        "last_refreshed_at": now,
        "credential_version": F("credential_version") + 1,
        # Released only if still ours: NULL when it equals our claim, else left as it is.
        "refresh_claimed_until": NullIf(F("refresh_claimed_until"), Value(claim)),
        **refresh_state_cleared(failures=effect.failures),
    }
    if grant.refresh_token:  # rotated; an answer without one keeps the old token
        updates["refresh_token"] = grant.refresh_token
        updates["refresh_token_fingerprint"] = fingerprint(grant.refresh_token)
    updates.update(grant.identity())
    unchanged = Account.objects.filter(pk=account.pk, credential_version=account.credential_version)
    return unchanged.update(**updates) == 1


def refresh_record_failure(
    account: Account,
    failure: state.TokenFailure,
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
    return _record(account, effect, failure, now, actor, claim=claim)


def refresh_record_access_rejected(
    account: Account, *, endpoint: str, status: int | None, now: datetime, actor: str
) -> RefreshResult:
    """`endpoint` (the usage endpoint, the Messages API) answered 401 to an access token that a
    401 had just obtained: that token is dead, and refreshing again at once would only repeat
    it, so the refresh backs off (state.access_rejected_effect). Not a quota failure: the quota
    state is untouched."""
    effect = state.access_rejected_effect(previous_failures=account.refresh_failures, now=now)
    Account.objects.filter(
        pk=account.pk, credential_version=account.credential_version, access_expires_at__gt=now
    ).update(access_expires_at=now)
    rejected = state.TokenFailure(
        kind=state.FailureKind.ACCESS_REJECTED,
        status=status,
        message=f"the {endpoint} rejected the access token a refresh had just issued",
    )
    return _record(account, effect, rejected, now, actor, claim=None)


def _record(
    account: Account,
    effect: state.RefreshFailureEffect,
    failure: state.TokenFailure,
    now: datetime,
    actor: str,
    *,
    claim: datetime | None,
) -> RefreshResult:
    rows = Account.objects.filter(pk=account.pk, credential_version=account.credential_version)
    released: dict[str, object] = {}
    if claim is not None:  # without one, a claim another caller holds stays theirs
        rows = rows.filter(refresh_claimed_until=claim)
        released["refresh_claimed_until"] = None
        released["refresh_sent_at"] = None  # the provider's answer is stored
    recorded = rows.update(
        **released,
        refresh_failures=effect.failures,
        refresh_backoff_until=effect.backoff_until,
        refresh_error_kind=failure.kind.value,
        refresh_error_status=failure.status,
        refresh_error_message=failure.message[:300],
        refresh_error_at=now,
        relogin_required_for=account.refresh_token_fingerprint if effect.needs_relogin else "",
    )
    if not recorded:
        return RefreshResult(
            account.pk, RefreshOutcome.CLAIMED_ELSEWHERE, "superseded while in flight"
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
    return RefreshResult(
        account.pk, RefreshOutcome(effect.outcome.value), failure.message, effect.backoff_until
    )


def _record_interrupted(account: Account, now: datetime, actor: str) -> None:
    """The history says that the refresh before this one was cut off after its request went
    out, so the same refresh token is about to be sent a second time."""
    logger.warning("account=%s previous refresh was interrupted mid-call", account.pk)
    event_record(
        account_id=account.pk,
        at=now,
        operation=state.Operation.TOKEN_REFRESH,
        outcome="interrupted",
        message=f"a refresh sent at {account.refresh_sent_at:%Y-%m-%d %H:%M:%S} UTC was "
        "interrupted before its answer was stored; "
        f"{state.INTERRUPTED_REFRESH_NOTE}",
        actor=actor,
    )


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
    only_version: int | None = None,
    asked_by_401: bool = False,
    wait: bool = False,
    lead: timedelta | None = None,
    actor: str = CYCLE_ACTOR,
) -> RefreshResult:
    """Refresh one account's tokens if due.

    `force` (a person's lever) ignores due-ness and the backoff, but never a needs-re-login and
    never within a minute of the last failure. `access_rejected_version` says the provider
    rejected that credential's access token; `only_version` refreshes only while the credential
    is still that version (a queued report-driven refresh: once per version); `asked_by_401`
    says a 401 asked for this refresh (the new token is then marked, so that a 401 on it backs
    off instead of looping). `lead` widens the pool's refresh lead (checkout refreshes a token
    that expires within 5 minutes). Exactly one caller wins the claim and
    calls the provider; with `wait`, losers wait for the winner and report its result. `now` is
    for tests: without it every timestamp is read when it is written."""
    started = now or timezone.now()
    try:
        account = Account.objects.select_related("pool").only(*REFRESH_FIELDS).get(pk=account_id)
    except SecretDecryptionError:
        credential_unreadable_mark(account_id=account_id, now=started, found_by="a token refresh")
        return RefreshResult(account_id, RefreshOutcome.CREDENTIAL_UNREADABLE)
    if account.credential_unreadable_at is not None:
        return RefreshResult(account.pk, RefreshOutcome.CREDENTIAL_UNREADABLE)
    if account.kind != Account.Kind.OAUTH or not account.refresh_token_fingerprint:
        return RefreshResult(account.pk, RefreshOutcome.NOT_REFRESHABLE, "no refresh token")
    if only_version is not None and account.credential_version != only_version:
        return RefreshResult(account.pk, RefreshOutcome.REFRESHED_ELSEWHERE, "already replaced")
    if access_rejected_version is not None:
        refresh_mark_access_rejected(account, started, version=access_rejected_version)
    if account.needs_relogin:
        return RefreshResult(
            account.pk, RefreshOutcome.NEEDS_RELOGIN, account.refresh_error_message
        )
    snapshot = account.state_snapshot(windows=[])
    policy = account.pool.policy
    if lead is not None and lead > policy.refresh_lead:
        policy = replace(policy, refresh_lead=lead)
    backing_off = (
        account.refresh_backoff_until is not None and account.refresh_backoff_until > started
    )
    if force and state.force_too_soon(account.refresh_error_at, started):
        return RefreshResult(
            account.pk, RefreshOutcome.BACKING_OFF, "failed less than a minute ago"
        )
    if not force and not state.refresh_due(snapshot, policy, started):
        if backing_off:
            return RefreshResult(
                account.pk, RefreshOutcome.BACKING_OFF, until=account.refresh_backoff_until
            )
        return RefreshResult(account.pk, RefreshOutcome.NOT_DUE)
    claim = _claim(account, started, respect_backoff=not force)
    if claim is None:
        if not wait:
            return RefreshResult(account.pk, RefreshOutcome.CLAIMED_ELSEWHERE)
        current = _wait_for_winner(account)
        if current.credential_version != account.credential_version:
            return RefreshResult(account.pk, RefreshOutcome.REFRESHED_ELSEWHERE)
        return RefreshResult(
            account.pk, RefreshOutcome.CLAIMED_ELSEWHERE, current.refresh_error_message
        )
    interrupted = state.refresh_interrupted(
        sent_at=account.refresh_sent_at, claimed_until=account.refresh_claimed_until, now=started
    )
    if interrupted:
        _record_interrupted(account, started, actor)
    # The provider is called outside any transaction; its answer is saved at once.
    try:
        with anthropic.client() as provider:
            grant = provider.refresh(account.refresh_token)
    except anthropic.TokenEndpointError as exc:
        failure = state.interrupted_failure(exc.failure, interrupted=interrupted)
        return refresh_record_failure(account, failure, now or timezone.now(), actor, claim=claim)
    except Exception as exc:
        # Not a provider answer (a bad key, a bug): back off like a network error, so the
        # account is neither retried every tick nor silently stuck, then let it surface.
        failure = state.TokenFailure(
            kind=state.FailureKind.INTERNAL, message=f"internal error: {type(exc).__name__}"
        )
        refresh_record_failure(account, failure, now or timezone.now(), actor, claim=claim)
        raise
    answered = now or timezone.now()
    if not _store_grant(account, grant, answered, claim, asked_by_401=asked_by_401):
        logger.warning("account=%s refresh answer dropped: re-login happened meanwhile", account.pk)
        return RefreshResult(
            account.pk, RefreshOutcome.REFRESHED_ELSEWHERE, "credential replaced meanwhile"
        )
    recovered = account.refresh_error_kind not in ("", state.FailureKind.ACCESS_REJECTED)
    if recovered:
        event_record(
            account_id=account.pk,
            at=answered,
            operation=state.Operation.TOKEN_REFRESH,
            outcome="recovered",
            message=f"refreshed after {account.refresh_failures} failure(s)",
            actor=actor,
        )
    return RefreshResult(account.pk, RefreshOutcome.REFRESHED)
