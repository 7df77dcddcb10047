"""Quota history: every observation of a window (poll, relayed headers, report) kept as a point,
at most one per window per minute (the first of the minute wins), pruned after 30 days."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from .. import state
from ..models import QuotaPoint, QuotaWindow
from ..providers import anthropic


def window_row(
    account_id: int,
    window: anthropic.UsageWindow,
    *,
    before: state.Window | None,
    policy: state.PoolPolicy,
    now: datetime,
    source: QuotaWindow.Source,
) -> QuotaWindow:
    """The row of one observed window (a poll's, relayed headers', a report's), keeping when it
    became exhausted from the observation `before` it (state.exhausted_since)."""
    seen = state.Window(window.key, window.label, window.utilization, window.resets_at)
    return QuotaWindow(
        account_id=account_id,
        key=window.key,
        label=window.label,
        utilization=window.utilization,
        resets_at=window.resets_at,
        checked_at=now,
        source=source,
        model_id=window.model_id,
        model_name=window.model_name,
        exhausted_since=state.exhausted_since(before, seen, policy, now),
    )


def quota_points_record(
    account_id: int,
    windows: Iterable[anthropic.UsageWindow],
    now: datetime,
    source: QuotaWindow.Source,
) -> None:
    """Add this observation's points; a window already observed this minute keeps its point."""
    minute = now.replace(second=0, microsecond=0)
    QuotaPoint.objects.bulk_create(
        [
            QuotaPoint(
                account_id=account_id,
                window=w.key,
                minute=minute,
                observed_at=now,
                utilization=w.utilization,
                resets_at=w.resets_at,
                source=source,
            )
            for w in windows
        ],
        ignore_conflicts=True,
    )


def quota_points_prune(*, now: datetime, older_than: timedelta) -> int:
    deleted, _ = QuotaPoint.objects.filter(observed_at__lt=now - older_than).delete()
    return deleted
