"""What tools report after using a checked-out credential (an upstream 429, 401 or 403).

Writes the cooldown, windows and quota-policy groups; a 401 asks the refresh service to treat
the access token as dead. Every report leaves a history row with the consumer key as actor."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from django.db import transaction
from django.utils import timezone

from .. import metrics, state
from ..models import Account, Checkout, ConsumerKey, QuotaWindow
from ..providers import anthropic
from .events import event_record
from .quota import policy_block
from .quota_history import quota_points_record
from .refresh import refresh_mark_access_rejected


class ReportResult(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429: a cooldown
    ACCESS_REJECTED = "access_rejected"  # 401: the access token is dead; a refresh is queued
    POLICY_BLOCKED = "policy_blocked"  # 403 with the organisation-policy message
    RECORDED = "recorded"  # anything else: kept in the history, no state change


@dataclass(frozen=True)
class ReportOutcome:
    outcome: ReportResult
    cooldown_until: datetime | None = None
    queue_refresh: bool = False
    queue_quota_check: bool = False
    windows: list[str] = field(default_factory=list)


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
    checked = dict(rows.values_list("key", "checked_at"))
    stored = []
    for window in windows:
        if window.key in checked and checked[window.key] > now:
            continue
        QuotaWindow.objects.update_or_create(
            account_id=account_id,
            key=window.key,
            defaults={
                "label": window.label,
                "utilization": window.utilization,
                "resets_at": window.resets_at,
                "checked_at": now,
                "source": source,
            },
        )
        stored.append(window.key)
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
    now: datetime | None = None,
) -> ReportOutcome:
    """Record what the provider answered a tool; returns what to queue."""
    now = now or timezone.now()
    account = Account.objects.defer(*Account.SECRET_FIELDS).get(pk=checkout.account_id)
    headers = headers or {}
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = retry_after or lowered.get("retry-after")
    windows = anthropic.parse_ratelimit_headers(headers)
    with transaction.atomic():
        stored = store_windows(account.pk, windows, now, QuotaWindow.Source.REPORT)
        result = _apply(account, key, status, retry_after, windows, message, now)
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


def _apply(
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
        refresh_mark_access_rejected(account, now, version=account.credential_version)
        return ReportOutcome(ReportResult.ACCESS_REJECTED, queue_refresh=True)
    if status == 403 and state.is_policy_message(message):
        already = account.policy_status == state.PolicyStatus.BLOCKED
        policy_block(account, message, now, checked=False)
        # Only a change queues a check: repeated reports must not hammer the usage endpoint.
        return ReportOutcome(ReportResult.POLICY_BLOCKED, queue_quota_check=not already)
    return ReportOutcome(ReportResult.RECORDED)
