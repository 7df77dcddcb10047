"""Quota checks: poll the usage endpoint, store windows, track the organisation's policy.

Writes the quota-state, quota-policy and windows groups only. A 401 asks the refresh service
for a new token (which owns the credential and refresh-state groups) and retries once; a 403 is
the organisation's policy, never a quota failure (DESIGN.md 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import metrics, state
from ..crypto import SecretDecryptionError
from ..models import Account, QuotaWindow
from ..providers import anthropic
from .credentials import credential_unreadable_mark
from .events import CYCLE_ACTOR, event_record
from .quota_history import quota_points_record, window_row
from .refresh import account_refresh, refresh_record_access_rejected


class QuotaOutcome(StrEnum):
    CHECKED = "checked"
    NOT_DUE = "not_due"
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    NO_VALID_TOKEN = "no_valid_token"
    NOT_CHECKABLE = "not_checkable"
    # Its stored access token does not decrypt with the configured keys (credentials.py).
    CREDENTIAL_UNREADABLE = "credential_unreadable"
    POLICY_BLOCKED = "policy_blocked"
    BACKING_OFF = "backing_off"
    ACCESS_REJECTED = "access_rejected"  # a 401 the refresh service now backs off from
    # A quota backoff: what the usage endpoint answered (state.FailureKind's values).
    REJECTED = state.FailureKind.REJECTED.value
    RATE_LIMITED = state.FailureKind.RATE_LIMITED.value
    SERVER_ERROR = state.FailureKind.SERVER_ERROR.value
    NETWORK = state.FailureKind.NETWORK.value
    MALFORMED = state.FailureKind.MALFORMED.value


@dataclass(frozen=True)
class QuotaResult:
    account_id: int
    outcome: QuotaOutcome
    message: str = ""
    until: datetime | None = None


def _claim(account: Account, now: datetime) -> datetime | None:
    """One checker per account; the claim's end doubles as its token for the release."""
    until = now + timedelta(seconds=settings.ACCOUNTS_POOL_CLAIM_SECONDS)
    taken = (
        Account.objects.filter(pk=account.pk)
        .filter(Q(quota_claimed_until__isnull=True) | Q(quota_claimed_until__lte=now))
        .update(quota_claimed_until=until)
    )
    return until if taken == 1 else None


def _release(account: Account, claim: datetime) -> None:
    Account.objects.filter(pk=account.pk, quota_claimed_until=claim).update(
        quota_claimed_until=None
    )


def _exhausted_keys(account: Account, windows: list[state.Window], now: datetime) -> set[str]:
    policy = account.pool.policy
    return {w.key for w in windows if state.window_exhausted(w, policy, now)}


def quota_record_usage(account: Account, usage: anthropic.Usage, now: datetime, actor: str) -> None:
    """Store a successful usage answer: windows replaced, failures cleared, policy ok."""
    before = [w.as_state() for w in account.quota_windows.all()]
    previous = {w.key: w for w in before}
    policy = account.pool.policy
    rows = [
        window_row(
            account.pk,
            w,
            before=previous.get(w.key),
            policy=policy,
            now=now,
            source=QuotaWindow.Source.POLL,
        )
        for w in usage.windows
    ]
    was_blocked = account.policy_status == state.PolicyStatus.BLOCKED
    with transaction.atomic():
        QuotaWindow.objects.filter(account=account).delete()
        QuotaWindow.objects.bulk_create(rows)
        quota_points_record(account.pk, usage.windows, now, QuotaWindow.Source.POLL)
        Account.objects.filter(pk=account.pk).update(
            quota_checked_at=now,
            quota_failures=0,
            quota_backoff_until=None,
            quota_error_kind="",
            quota_error_status=None,
            quota_error_message="",
            quota_error_at=None,
            policy_status=state.PolicyStatus.OK.value,
            policy_message="",
            policy_since=now
            if was_blocked or account.policy_since is None
            else account.policy_since,
            policy_checked_at=now,
        )
    if was_blocked:
        _event(account, now, "policy_cleared", message="usage endpoint answers again", actor=actor)
    if account.quota_failures:
        _event(
            account,
            now,
            "recovered",
            message=f"after {account.quota_failures} failure(s)",
            actor=actor,
        )
    newly = _exhausted_keys(account, [r.as_state() for r in rows], now) - _exhausted_keys(
        account, before, now
    )
    for row in rows:
        if row.key in newly:
            scope = f" ({row.model_name or row.model_id} requests only)" if row.scoped else ""
            _event(
                account,
                now,
                "model_quota_exhausted" if row.scoped else "quota_exhausted",
                message=f"{row.label} window at {row.utilization:g}%{scope}",
                until=row.resets_at,
                actor=actor,
            )


def _event(
    account: Account,
    now: datetime,
    outcome: str,
    *,
    failure: state.QuotaFailure | None = None,
    message: str = "",
    until: datetime | None = None,
    retry_after: timedelta | None = None,
    actor: str,
) -> None:
    event_record(
        account_id=account.pk,
        at=now,
        operation=state.Operation.QUOTA_CHECK,
        outcome=outcome,
        http_status=failure.status if failure else None,
        message=message or (failure.message if failure else ""),
        until=until,
        retry_after=retry_after,
        actor=actor,
    )


def quota_record_policy_blocked(
    account: Account, failure: state.QuotaFailure, now: datetime, actor: str
) -> QuotaResult:
    """403: the organisation's policy. No quota backoff, no quota error, refresh untouched."""
    message = (failure.message or "usage endpoint answered 403")[:300]
    changed = policy_block(account, message, now, checked=True)
    if changed:
        _event(account, now, QuotaOutcome.POLICY_BLOCKED, failure=failure, actor=actor)
    return QuotaResult(account.pk, QuotaOutcome.POLICY_BLOCKED, message)


def policy_block(account: Account, message: str, now: datetime, *, checked: bool) -> bool:
    """Mark the account blocked by its organisation's policy (the quota-policy group only),
    keeping the original `since` while it stays blocked. `checked`: the usage endpoint itself
    said so (a poll), rather than a tool's report. Returns whether anything changed."""
    already = account.policy_status == state.PolicyStatus.BLOCKED
    updates: dict[str, object] = {
        "policy_status": state.PolicyStatus.BLOCKED.value,
        "policy_message": message[:300],
        "policy_since": account.policy_since if already else now,
    }
    if checked:
        updates["policy_checked_at"] = now
    Account.objects.filter(pk=account.pk).update(**updates)
    return not already or account.policy_message != message[:300]


def _record_quota_failure(
    account: Account,
    effect: state.QuotaFailureEffect,
    failure: state.QuotaFailure,
    now: datetime,
    actor: str,
) -> QuotaResult:
    Account.objects.filter(pk=account.pk).update(
        quota_failures=effect.failures,
        quota_backoff_until=effect.backoff_until,
        quota_error_kind=failure.kind.value,
        quota_error_status=failure.status,
        quota_error_message=failure.message[:300],
        quota_error_at=now,
    )
    _event(
        account,
        now,
        failure.kind.value,
        failure=failure,
        until=effect.backoff_until,
        retry_after=effect.retry_after,
        actor=actor,
    )
    return QuotaResult(
        account.pk, QuotaOutcome(failure.kind.value), failure.message, effect.backoff_until
    )


def quota_record_failure(
    account: Account, failure: state.QuotaFailure, now: datetime, actor: str
) -> QuotaResult:
    """Record a usage-endpoint failure that no refresh-and-retry follows (onboarding's check of
    a pasted token): the policy block, the access token rejected, or the quota backoff."""
    effect = state.quota_failure_effect(
        failure,
        previous_failures=account.quota_failures,
        token_from_401=account.access_from_401,
        retried=True,
        now=now,
    )
    return _apply_failure(account, effect, failure, now, actor)


def _apply_failure(
    account: Account,
    effect: state.QuotaFailureEffect,
    failure: state.QuotaFailure,
    now: datetime,
    actor: str,
) -> QuotaResult:
    """A failure's effect once no retry follows: the policy block, the access token rejected
    (the refresh service's to record), or the quota backoff."""
    if effect.action == state.QuotaFailureAction.POLICY_BLOCKED:
        return quota_record_policy_blocked(account, failure, now, actor)
    if effect.action == state.QuotaFailureAction.ACCESS_REJECTED:
        rejected = refresh_record_access_rejected(
            account, endpoint="usage endpoint", status=failure.status, now=now, actor=actor
        )
        return QuotaResult(
            account.pk, QuotaOutcome.ACCESS_REJECTED, rejected.message, rejected.until
        )
    return _record_quota_failure(account, effect, failure, now, actor)


def _check(
    account: Account, fixed_now: datetime | None, *, retried: bool, actor: str
) -> QuotaResult:
    version = account.credential_version
    try:
        with anthropic.client() as provider:
            usage = provider.usage(account.access_token)
    except anthropic.UsageEndpointError as exc:
        now = fixed_now or timezone.now()
        effect = state.quota_failure_effect(
            exc.failure,
            previous_failures=account.quota_failures,
            token_from_401=account.access_from_401,
            retried=retried,
            now=now,
        )
        if effect.action == state.QuotaFailureAction.REFRESH_AND_RETRY:
            refreshed = account_refresh(
                account_id=account.pk,
                now=fixed_now,
                access_rejected_version=version,
                asked_by_401=True,
                wait=True,
                actor=actor,
            )
            if not refreshed.has_fresh_token:
                return QuotaResult(
                    account.pk, QuotaOutcome.NO_VALID_TOKEN, f"refresh: {refreshed.outcome}"
                )
            account.refresh_from_db()
            return _check(account, fixed_now, retried=True, actor=actor)
        return _apply_failure(account, effect, exc.failure, now, actor)
    quota_record_usage(account, usage, fixed_now or timezone.now(), actor)
    return QuotaResult(account.pk, QuotaOutcome.CHECKED)


@metrics.counts_outcome(metrics.QUOTA_OUTCOMES)
def account_check_quota(
    *,
    account_id: int,
    now: datetime | None = None,
    force: bool = False,
    actor: str = CYCLE_ACTOR,
) -> QuotaResult:
    """Poll one account's quota if due. `force` (a person's lever) ignores the interval and the
    backoff, but not within a minute of the last failure. An expired token is refreshed first,
    through the refresh service and its backoff. `now` is for tests: without it every
    timestamp is read when it is written."""
    started = now or timezone.now()
    # The usage call needs the access token only; a refresh reads the refresh token itself.
    try:
        account = (
            Account.objects.select_related("pool")
            .defer("refresh_token", "api_key")
            .get(pk=account_id)
        )
    except SecretDecryptionError:
        credential_unreadable_mark(account_id=account_id, now=started, found_by="a quota check")
        return QuotaResult(account_id, QuotaOutcome.CREDENTIAL_UNREADABLE)
    if account.kind != Account.Kind.OAUTH:
        return QuotaResult(account.pk, QuotaOutcome.NOT_CHECKABLE)
    if account.credential_unreadable_at is not None:
        return QuotaResult(account.pk, QuotaOutcome.CREDENTIAL_UNREADABLE)
    snapshot = account.state_snapshot(windows=[])
    if force and state.force_too_soon(account.quota_error_at, started):
        return QuotaResult(account.pk, QuotaOutcome.BACKING_OFF, "failed less than a minute ago")
    if not state.access_token_valid(snapshot, started):
        if not force:
            return QuotaResult(account.pk, QuotaOutcome.NO_VALID_TOKEN)
        refreshed = account_refresh(account_id=account.pk, now=now, wait=True, actor=actor)
        if not refreshed.has_fresh_token:
            return QuotaResult(
                account.pk, QuotaOutcome.NO_VALID_TOKEN, f"refresh: {refreshed.outcome}"
            )
        account.refresh_from_db()
    elif not force and not state.quota_due(snapshot, account.pool.policy, started):
        return QuotaResult(account.pk, QuotaOutcome.NOT_DUE)
    claim = _claim(account, started)
    if claim is None:
        return QuotaResult(account.pk, QuotaOutcome.CLAIMED_ELSEWHERE)
    try:
        return _check(account, now, retried=False, actor=actor)
    finally:
        _release(account, claim)
