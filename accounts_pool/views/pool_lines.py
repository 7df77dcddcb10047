"""The pool table's rows as HTML, written in Python: at 500 accounts the template engine's
per-row include cost 2 ms a row (a second a page); this keeps the page under 400 ms. Same
markup as before (templates/pages/_pool_rows.html holds the rest of the table); every value is
escaped here."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from .. import timefmt
from ..pool_table import Line, WindowLike
from ..state import ReasonCode
from ..words import reason_words

BADGES = {"usable": "✓ Usable", "degraded": "! Degraded", "excluded": "✕ Excluded"}
WAITS = {"relogin": "waits for re-login", "manual": "waits to be enabled"}


def _time(value: datetime, text: str) -> str:
    stamp = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
    return f'<time datetime="{stamp}" title="{timefmt.utc(value)}">{escape(text)}</time>'


def _short(label: str) -> str:
    return label.replace("-hour", "h").replace("-day", "d").replace(" hours", "h")


def _bar(window: WindowLike, now: datetime) -> str:
    used = window.utilization
    width = 0 if used is None else max(0, min(100, round(used)))
    level = " full" if used is not None and used >= 100 else " high" if (used or 0) >= 80 else ""
    value = "unknown" if used is None else f"{used:.0f}%"
    hover = f"{window.label}: {value} used"
    if window.resets_at is not None:
        hover += (
            f", resets {timefmt.distance(window.resets_at, now)} ({timefmt.utc(window.resets_at)})"
        )
    if window.scoped:
        hover += f"; {window.model_name or window.model_id} requests only"
    scoped = " scoped" if window.scoped else ""
    return (
        f'<span class="qbar{scoped}" title="{escape(hover)}">{escape(_short(window.label))}'
        f'<span class="bar" aria-hidden="true"><span class="fill{level} w{width}"></span></span>'
        f'<span class="qval">{value}</span></span>'
    )


def line_html(line: Line, now: datetime) -> SafeString:
    verdict = line.verdict
    status = verdict.status.value
    reason = verdict.first_reason
    url = reverse("account", args=[line.account_id])
    email = f' <span class="muted">{escape(line.email)}</span>' if line.email else ""
    if reason is None:
        why = '<span class="muted">ready</span>'
    else:
        why = (
            f'<span class="reason-words" title="{escape(reason.message)}">'
            f"{escape(reason_words(reason.code))}</span>"
        )
        if len(verdict.reasons) > 1:
            more = ", ".join(reason_words(r.code) for r in verdict.reasons[1:])
            why += f' <span class="muted" title="{escape(more)}">+{len(verdict.reasons) - 1}</span>'
    if verdict.next_change_at is not None:
        until = _time(verdict.next_change_at, timefmt.deadline(verdict.next_change_at, now))
    elif reason is not None and reason.code == ReasonCode.CREDENTIAL_UNREADABLE:
        until = '<span class="muted">waits for its key or a re-login</span>'
    elif reason is not None:
        until = f'<span class="muted">{WAITS.get(reason.clears_on, "waits for a success")}</span>'
    else:
        until = ""
    bars = "".join(_bar(w, now) for w in line.windows) or '<span class="muted">no quota yet</span>'
    expires = line.access_expires_at
    if not line.is_oauth:
        token = '<span class="muted">API key</span>'
    elif expires is None:
        token = "—"
    elif expires < now:
        token = (
            f'<span class="expired">expired {_time(expires, timefmt.distance(expires, now))}</span>'
        )
    else:
        token = _time(expires, timefmt.distance(expires, now))
    # Safe: every value above went through escape() or is one of this module's constants.
    return mark_safe(  # noqa: S308 - every value is escaped above
        f'<tr class="row {status}" data-account="{line.account_id}">'
        f'<td class="acct"><a href="{url}">{escape(line.label)}</a>{email}</td>'
        f'<td><span class="badge {status}">{BADGES[status]}</span></td>'
        f'<td class="why">{why}</td><td class="until-cell">{until}</td>'
        f'<td class="quota"><span class="qbars">{bars}</span></td>'
        f'<td class="token">{token}</td></tr>'
    )
