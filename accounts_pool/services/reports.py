"""What tools report after using a checked-out credential (an upstream 429, 401 or 403).

Writes the cooldown, windows and quota-policy groups; a 401 asks the refresh service to treat
the access token the checkout handed out as dead (only that credential version). Every report
leaves a history row with the consumer key as actor, once: a retried report (the same
Idempotency-Key, or without one the same status for the same checkout) records nothing again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import metrics, state
from ..crypto import SecretDecryptionError
from ..models import Account, Checkout, CheckoutReport, ConsumerKey, Pool, QuotaWindow
from ..providers import anthropic
from ..redaction import redact
from .events import event_record
from .quota import policy_block
from .quota_history import quota_points_record, window_row
from .refresh import refresh_mark_access_rejected, refresh_record_access_rejected


class ReportResult(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429: a cooldown
    ACCESS_REJECTED = "access_rejected"  # 401: the access token is dead; a refresh is queued
    POLICY_BLOCKED = "policy_blocked"  # 403 with the organisation-policy message
    STALE = "stale"  # 401 about a credential already replaced: nothing changed
    RECORDED = "recorded"  # anything else: kept in the history, no state change


@dataclass(frozen=True)
class ReportOutcome:
    outcome: ReportResult
    cooldown_until: datetime | None = None
    queue_refresh: bool = False
    queue_quota_check: bool = False
    windows: list[str] = field(default_factory=list)
    refresh_version: int | None = None  # the credential version the queued refresh replaces
    duplicate: bool = False  # a retry of a report already recorded: nothing was done again
    note: str = ""


STALE_NOTE = "the credential this checkout handed out was already replaced: nothing changed"
DUPLICATE_NOTE = "this report was already recorded: nothing was done again"


def report_key(status: int, idempotency_key: str | None) -> str:
    """What makes two reports on one checkout the same report: the tool's Idempotency-Key
    (hashed: its value is the tool's), else the status."""
    if idempotency_key:
        return hashlib.sha256(idempotency_key.encode("utf-8", "replace")).hexdigest()
    return f"status:{status}"


def _newer(stored: state.Window | None, now: datetime) -> bool:
    """Whether the stored observation of a window was made after `now` (a later poll): it is
    kept."""
    return stored is not None and stored.checked_at is not None and stored.checked_at > now


UPSERTED_FIELDS = ("label", "utilization", "resets_at", "checked_at", "exhausted_since", "source")


def store_windows(
    account_id: int,
    windows: tuple[anthropic.UsageWindow, ...],
    now: datetime,
    source: QuotaWindow.Source,
) -> list[str]:
    """Windows a tool reported or a relayed answer carried (the rate-limit headers). Per window
    the newer observation wins (a poll made later is kept). Returns the keys written."""
    if not windows:
        return []
    keys = [w.key for w in windows]
    rows = QuotaWindow.objects.filter(account_id=account_id, key__in=keys)
    previous = {row.key: row.as_state() for row in rows}
    policy = Pool.objects.get(accounts__pk=account_id).policy
    upserts = [
        window_row(account_id, w, before=previous.get(w.key), policy=policy, now=now, source=source)
        for w in windows
        if not _newer(previous.get(w.key), now)
    ]
    # One statement for every window (an insert, or an update of the row with its key).
    QuotaWindow.objects.bulk_create(
        upserts,
        update_conflicts=True,
        unique_fields=["account", "key"],
        update_fields=list(UPSERTED_FIELDS),
    )
    stored = [w.key for w in upserts]
    if stored:
        Account.objects.filter(pk=account_id).update(windows_observed_at=now)
        quota_points_record(account_id, [w for w in windows if w.key in stored], now, source)
    return stored


@metrics.counts_outcome(metrics.REPORTS)
def report_record(
    *,
    checkout: Checkout,
    key: ConsumerKey,
    status: int,
    retry_after: str | None = None,
    headers: dict[str, str] | None = None,
    message: str = "",
    idempotency_key: str | None = None,
    now: datetime | None = None,
    sent: tuple[str, ...] | None = None,
) -> ReportOutcome:
    """Record what the provider answered a tool; returns what to queue. A report already
    recorded for this checkout (report_key) changes nothing and answers as the first did.
    `sent`: the credential the tool sent upstream (default: the account's current one), masked
    wherever the message quotes it before anything is stored."""
    now = now or timezone.now()
    account = Account.objects.defer(*Account.SECRET_FIELDS).get(pk=checkout.account_id)
    if message:
        if sent is None:
            sent = account_credentials(checkout.account_id)
        message = redact(message, secrets=sent)
    headers = headers or {}
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = retry_after or lowered.get("retry-after")
    windows = anthropic.parse_ratelimit_headers(headers)
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: the same report at once waits, then fails
                receipt = CheckoutReport.objects.create(
                    checkout=checkout, key=report_key(status, idempotency_key), outcome="", at=now
                )
        except IntegrityError:
            return _already_recorded(checkout, report_key(status, idempotency_key))
        stored = store_windows(account.pk, windows, now, QuotaWindow.Source.REPORT)
        result = _apply(checkout, account, key, status, retry_after, windows, message, now)
        receipt.outcome = result.outcome
        receipt.cooldown_until = result.cooldown_until
        receipt.save(update_fields=["outcome", "cooldown_until"])
        event_record(
            account_id=account.pk,
            at=now,
            operation=state.Operation.REPORT,
            outcome=result.outcome,
            http_status=status,
            message=message or f"HTTP {status} reported",
            retry_after=state.parse_retry_after(retry_after, now),
            until=result.cooldown_until,
            actor=key.actor,
        )
    return replace(result, windows=stored)


def _already_recorded(checkout: Checkout, key: str) -> ReportOutcome:
    first = CheckoutReport.objects.get(checkout=checkout, key=key)
    return ReportOutcome(
        ReportResult(first.outcome),
        cooldown_until=first.cooldown_until,
        duplicate=True,
        note=DUPLICATE_NOTE,
    )


def account_credentials(account_id: int) -> tuple[str, ...]:
    """The secrets an account's checkout hands out, to mask in what a tool reports; none when
    they cannot be read (the account is then excluded for that: credentials.py)."""
    try:
        found = Account.objects.filter(pk=account_id).values_list("access_token", "api_key")
        return tuple(next(iter(found), ()))
    except SecretDecryptionError:
        return ()


def _apply(
    checkout: Checkout,
    account: Account,
    key: ConsumerKey,
    status: int,
    retry_after: str | None,
    windows: tuple[anthropic.UsageWindow, ...],
    message: str,
    now: datetime,
) -> ReportOutcome:
    if status == 429:
        reported = [(w.utilization, w.resets_at) for w in windows]
        until = now + state.report_cooldown(retry_after, reported, now)
        Account.objects.filter(pk=account.pk).update(
            cooldown_until=until, cooldown_reason=f"429 reported by {key.name}"[:200]
        )
        return ReportOutcome(ReportResult.RATE_LIMITED, cooldown_until=until)
    if status == 401:
        return _access_rejected(checkout, account, key, now)
    if status == 403 and state.is_policy_message(message):
        already = account.policy_status == state.PolicyStatus.BLOCKED
        policy_block(account, message, now, checked=False)
        # Only a change queues a check: repeated reports must not hammer the usage endpoint.
        return ReportOutcome(ReportResult.POLICY_BLOCKED, queue_quota_check=not already)
    return ReportOutcome(ReportResult.RECORDED)


def _access_rejected(
    checkout: Checkout, account: Account, key: ConsumerKey, now: datetime
) -> ReportOutcome:
    """A 401 on the credential the checkout handed out (state.report_401_action)."""
    version = account.credential_version
    action = state.report_401_action(
        reported_version=checkout.credential_version,
        current_version=version,
        token_from_401=account.access_from_401,
    )
    if action == state.Report401Action.STALE:
        return ReportOutcome(ReportResult.STALE, note=STALE_NOTE)
    if action == state.Report401Action.BACK_OFF:
        refresh_record_access_rejected(
            account, endpoint="provider (a tool's report)", status=401, now=now, actor=key.actor
        )
        return ReportOutcome(ReportResult.ACCESS_REJECTED)
    refresh_mark_access_rejected(account, now, version=version)
    return ReportOutcome(ReportResult.ACCESS_REJECTED, queue_refresh=True, refresh_version=version)
