"""One time format for pages, admin and messages (STYLE.md 15): relative first ("in 1 h 59 min",
"due now", "overdue 3 min"), the absolute UTC time for the hover. Pure: `now` is an argument."""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE, HOUR, DAY = 60, 3600, 86400


def amount(seconds: float) -> str:
    """A duration as people say it: '12 min', '1 h 59 min', '3 d'."""
    seconds = abs(seconds)
    if seconds < MINUTE:
        return "under a minute"
    if seconds < HOUR:
        return f"{int(seconds // MINUTE)} min"
    if seconds < 2 * DAY:
        hours, rest = divmod(int(seconds), HOUR)
        return f"{hours} h {rest // MINUTE} min" if hours < 10 and rest >= MINUTE else f"{hours} h"
    return f"{int(seconds // DAY)} d"


def distance(value: datetime, now: datetime) -> str:
    """A fact in time: 'in 12 min', '3 h ago', 'just now'."""
    seconds = (value - now).total_seconds()
    if abs(seconds) < MINUTE:
        return "in under a minute" if seconds > 0 else "just now"
    return f"in {amount(seconds)}" if seconds > 0 else f"{amount(seconds)} ago"


def deadline(value: datetime, now: datetime) -> str:
    """Something scheduled (a check, a retry): 'in 4 min', 'due now', 'overdue 3 min'."""
    seconds = (value - now).total_seconds()
    if seconds > 0:
        return f"in {amount(seconds)}"
    if seconds > -2 * MINUTE:
        return "due now"
    return f"overdue {amount(seconds)}"


def utc(value: datetime) -> str:
    """The absolute time in UTC: '16:29 UTC, 02 Dec 2026'."""
    return value.astimezone(UTC).strftime("%H:%M UTC, %d %b %Y")


def clock(value: datetime) -> str:
    """The time of day in UTC, for sentences: '16:29 UTC'."""
    return value.astimezone(UTC).strftime("%H:%M UTC")


def plain(value: datetime | None, now: datetime) -> str:
    """For text without hover (admin, messages): 'in 1 h 59 min (16:29 UTC, 02 Dec 2026)'."""
    if value is None:
        return "—"
    return f"{distance(value, now)} ({utc(value)})"
