"""The usage pictures as self-contained includes: `{% pool_usage pool %}` on the pool page and
`{% account_usage account %}` on the account page read what they draw themselves, so a page
needs one line to show them."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django import template
from django.utils import timezone

from .. import charts, selectors, usage_selectors
from ..models import Account, Pool

register = template.Library()

POOL_DAYS = 7
ACCOUNT_DAYS = 7
WINDOW_NAMES = {"five_hour": "5-hour", "seven_day": "7-day"}


@register.inclusion_tag("pages/_usage_pool.html")
def pool_usage(pool: Pool, now: datetime | None = None) -> dict[str, Any]:
    """Tokens per hour over the last 7 days stacked by key, and the pool's forecast."""
    now = now or timezone.now()
    rows = selectors.accounts_with_verdicts(pool.accounts.all(), now=now)
    forecast = usage_selectors.pool_forecasts([rows], now)[0]
    until = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    hours, series = usage_selectors.tokens_per_hour_by_key(
        pool, since=until - timedelta(days=POOL_DAYS), until=until
    )
    svg, drawn = charts.stacked_bars(
        hours, series, title=f"Tokens per hour in pool {pool.name}, last {POOL_DAYS} days, by key"
    )
    by_day: dict[str, dict[str, int]] = defaultdict(dict)
    for s in drawn:
        for at, value in zip(hours, s.values, strict=True):
            day = f"{at:%d %b}"
            by_day[day][s.name] = by_day[day].get(s.name, 0) + int(value)
    return {
        "forecast": forecast,
        "forecast_text": charts.forecast_sentence(forecast, now),
        "chart": svg,
        "series": drawn,
        "days": [(day, [values.get(s.name, 0) for s in drawn]) for day, values in by_day.items()],
        "total": sum(sum(s.values) for s in drawn),
    }


@register.inclusion_tag("pages/_usage_account.html")
def account_usage(account: Account, now: datetime | None = None) -> dict[str, Any]:
    """The 5-hour and 7-day windows over the last 7 days, resets marked, and usage by key."""
    now = now or timezone.now()
    since = now - timedelta(days=ACCOUNT_DAYS)
    points = usage_selectors.quota_points(account, window=None, since=since)
    lines: dict[str, list[tuple[datetime, float]]] = {k: [] for k in WINDOW_NAMES}
    resets: set[datetime] = set()
    for point in points:
        if point.window in lines and point.utilization is not None:
            lines[point.window].append((point.observed_at, point.utilization))
        if point.window in lines and point.resets_at is not None and point.resets_at <= now:
            resets.add(point.resets_at.replace(second=0, microsecond=0))
    svg, drawn = charts.utilization_lines(
        [(WINDOW_NAMES[k], v) for k, v in lines.items()],
        sorted(resets),
        start=since,
        end=now,
        title=f"{account.label}: 5-hour and 7-day utilization, last {ACCOUNT_DAYS} days",
    )
    keys = usage_selectors.usage_rows(
        account.pool, since=since, until=now + timedelta(hours=1), group_by=["key", "account"]
    )
    return {
        "chart": svg,
        "lines": drawn,
        "resets": sorted(resets),
        "samples": [(p.observed_at, p.window, p.utilization) for p in points[-12:]],
        "by_key": [row for row in keys if row["account"]["id"] == account.pk],
    }
