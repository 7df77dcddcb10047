"""Times as people read them: an absolute time and how far away it is."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def absolute(when: datetime | None) -> str:
    if when is None:
        return "—"
    return timezone.localtime(when).strftime("%H:%M %Z, %d %b")


@register.filter
def relative(when: datetime | None) -> str:
    """'in 12 min', '3 h ago', 'in 2 d'."""
    if when is None:
        return ""
    seconds = (when - timezone.now()).total_seconds()
    future = seconds >= 0
    seconds = abs(seconds)
    if seconds < 60:
        amount = "less than a minute"
    elif seconds < 3600:
        amount = f"{int(seconds // 60)} min"
    elif seconds < 86400 * 2:
        hours, rest = divmod(int(seconds), 3600)
        amount = f"{hours} h {rest // 60} min" if hours < 10 and rest >= 60 else f"{hours} h"
    else:
        amount = f"{int(seconds // 86400)} d"
    return f"in {amount}" if future else f"{amount} ago"


@register.filter
def when(value: datetime | None) -> SafeString:
    """<time> with the absolute time and the distance, e.g. '14:05 UTC, 29 Nov (in 12 min)'."""
    if value is None:
        return format_html("{}", "—")
    return format_html(
        '<time datetime="{}">{} <span class="rel">({})</span></time>',
        value.isoformat(),
        absolute(value),
        relative(value),
    )


@register.filter
def percent(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f}%"


@register.filter
def bar_width(value: float | None) -> int:
    return 0 if value is None else max(0, min(100, round(value)))
