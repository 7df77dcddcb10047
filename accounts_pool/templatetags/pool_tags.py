"""Times as people read them (accounts_pool.timefmt): relative first, the absolute UTC time
(and the viewer's own, added by times.js) on hover."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .. import timefmt, words

register = template.Library()


@register.filter
def absolute(when: datetime | None) -> str:
    return "—" if when is None else timefmt.utc(when)


@register.filter
def relative(when: datetime | None) -> str:
    return "" if when is None else timefmt.distance(when, timezone.now())


def _time(value: datetime, text: str) -> SafeString:
    stamp = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")  # to the minute: stable, short
    return format_html('<time datetime="{}" title="{}">{}</time>', stamp, timefmt.utc(value), text)


@register.filter
def when(value: datetime | None) -> SafeString:
    """A fact in time: <time title="16:29 UTC, 02 Dec 2026">in 1 h 59 min</time>."""
    if value is None:
        return format_html("{}", "—")
    return _time(value, timefmt.distance(value, timezone.now()))


@register.filter
def due(value: datetime | None) -> SafeString:
    """Something scheduled: 'in 4 min', 'due now', 'overdue 3 min', the time on hover."""
    if value is None:
        return format_html("{}", "—")
    return _time(value, timefmt.deadline(value, timezone.now()))


@register.filter
def percent(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f}%"


@register.filter
def bar_width(value: float | None) -> int:
    return 0 if value is None else max(0, min(100, round(value)))


@register.filter
def reason_words(code: str) -> str:
    return words.reason_words(str(code))


@register.filter
def short_window(label: str) -> str:
    """'5-hour' -> '5h', '7-day' -> '7d', '7-day Opus' -> '7d Opus': room for the bars."""
    return label.replace("-hour", "h").replace("-day", "d").replace(" hours", "h")


@register.filter
def due_iso(value: str | None) -> SafeString:
    """`due` for a time kept as ISO text (the session keeps a pending login's expiry so)."""
    try:
        parsed = datetime.fromisoformat(value) if value else None
    except ValueError:
        parsed = None
    return due(parsed)
