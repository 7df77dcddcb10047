"""Reads of usage and quota history: usage summed by any of key, account, model and hour; a
window's points over time; and the forecasts the pure rules make from them (state.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum

from . import state
from .models import Account, Pool, QuotaPoint, QuotaWindow, UsageHour
from .selectors import AccountWithVerdict

GROUPS = {
    "key": ("consumer_key_id", "consumer_key__name"),
    "account": ("account_id", "account__label"),
    "model": ("model",),
    "hour": ("hour",),
}


def usage_rows(
    pool: Pool, *, since: datetime, until: datetime, group_by: Sequence[str]
) -> list[dict[str, Any]]:
    """Usage of the pool's hours in [since, until), summed per combination of `group_by`
    (any of key, account, model, hour), in one query. Each row has its group fields and sums."""
    fields = [f for group in group_by for f in GROUPS[group]]
    rows = UsageHour.objects.filter(pool=pool, hour__gte=since, hour__lt=until)
    summed = rows.values(*fields).annotate(**{f"sum_{n}": Sum(n) for n in UsageHour.COUNTERS})
    ordered = summed.order_by(*[GROUPS[g][0] for g in group_by]) if group_by else summed
    result = []
    for row in ordered:
        out: dict[str, Any] = {}
        if "key" in group_by:
            out["key"] = {"id": row["consumer_key_id"], "name": row["consumer_key__name"]}
        if "account" in group_by:
            out["account"] = {"id": row["account_id"], "label": row["account__label"]}
        if "model" in group_by:
            out["model"] = row["model"]
        if "hour" in group_by:
            out["hour"] = row["hour"]
        for name in UsageHour.COUNTERS:
            out[name] = row[f"sum_{name}"] or 0
        if not out["requests"] and not group_by:
            continue  # no usage at all in the period: no row
        result.append(out)
    return result


def quota_points(
    account: Account, *, window: str | None, since: datetime, limit: int = 50_000
) -> list[QuotaPoint]:
    """The account's window observations since `since`, oldest first (the newest `limit` of
    them when there are more)."""
    points = QuotaPoint.objects.filter(account=account, observed_at__gte=since)
    if window:
        points = points.filter(window=window)
    return list(reversed(points.order_by("-observed_at", "-window")[:limit]))


def _observations(
    account_ids: Iterable[int], windows: dict[int, list[QuotaWindow]], now: datetime
) -> dict[tuple[int, str], list[state.QuotaObservation]]:
    """Per (account, account-wide window): its points of the last hour and its current value."""
    wide = {(a, w.key) for a, rows in windows.items() for w in rows if not w.scoped}
    found: dict[tuple[int, str], list[state.QuotaObservation]] = defaultdict(list)
    recent = QuotaPoint.objects.filter(
        account_id__in=list(account_ids), observed_at__gte=now - state.BURN_LOOKBACK
    ).values_list("account_id", "window", "observed_at", "utilization", "resets_at")
    for account_id, key, observed_at, utilization, resets_at in recent:
        if (account_id, key) in wide:
            found[(account_id, key)].append(
                state.QuotaObservation(observed_at, utilization, resets_at)
            )
    for account_id, rows in windows.items():
        for w in rows:
            if not w.scoped:
                found[(account_id, w.key)].append(
                    state.QuotaObservation(w.checked_at, w.utilization, w.resets_at)
                )
    return found


def account_window_forecasts(
    rows: Sequence[AccountWithVerdict], now: datetime
) -> dict[int, tuple[state.WindowForecast, ...]]:
    """Each account's account-wide windows with their pace (one query for the points; the
    windows come prefetched with the rows)."""
    windows = {row.account.pk: list(row.account.quota_windows.all()) for row in rows}
    observations = _observations(windows, windows, now)
    result: dict[int, tuple[state.WindowForecast, ...]] = {}
    for account_id, account_windows in windows.items():
        result[account_id] = tuple(
            state.window_forecast(w.key, observations[(account_id, w.key)], now)
            for w in account_windows
            if not w.scoped
        )
    return result


def pool_forecasts(
    pools: Sequence[Sequence[AccountWithVerdict]], now: datetime
) -> list[state.PoolForecast]:
    """Each pool's forecast (its accounts' rows given), in one query however many pools."""
    by_account = account_window_forecasts([row for rows in pools for row in rows], now)
    return [
        state.pool_forecast(
            [
                state.AccountOutlook(
                    usable_now=row.verdict.status != state.Status.EXCLUDED,
                    returns_at=row.verdict.usable_at,
                    windows=by_account[row.account.pk],
                )
                for row in rows
            ],
            now,
        )
        for rows in pools
    ]


def account_runs_dry_at(windows: Iterable[state.WindowForecast]) -> datetime | None:
    """When the first of an account's windows fills before its reset, at the current pace."""
    return min((w.full_at for w in windows if w.full_before_reset and w.full_at), default=None)


def tokens_per_hour_by_key(
    pool: Pool, *, since: datetime, until: datetime
) -> tuple[list[datetime], list[tuple[str, list[int]]]]:
    """For the pool chart: every hour in [since, until) and, per key, its tokens in each."""
    first = state.hour_of(since)
    hours = []
    at = first
    while at < until:
        hours.append(at)
        at += timedelta(hours=1)
    index = {h: i for i, h in enumerate(hours)}
    series: dict[str, list[int]] = {}
    rows = usage_rows(pool, since=first, until=until, group_by=["key", "hour"])
    for row in rows:
        name = row["key"]["name"]
        values = series.setdefault(name, [0] * len(hours))
        i = index.get(row["hour"])
        if i is not None:
            values[i] += (
                row["input_tokens"]
                + row["output_tokens"]
                + row["cache_creation_input_tokens"]
                + row["cache_read_input_tokens"]
            )
    return hours, sorted(series.items())
