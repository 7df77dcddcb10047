"""Read pages: the team's pools, a pool's accounts, one account with its history."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.utils import timezone
from django.views.decorators.http import require_GET

from .. import explain, pool_table, selectors, state
from ..models import Account, AccountEvent, Membership, Pool, QuotaWindow
from ..state import Operation
from . import pool_lines
from .access import account_or_404, pool_or_404, team_or_404

EVENTS_PER_PAGE = 25


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    teams = list(selectors.user_teams(request.user))
    if len(teams) == 1:
        return redirect("team", team=teams[0].slug)
    return render(request, "pages/home.html", {"teams": teams})


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico whatever the page links to."""
    return redirect(static("accounts_pool/favicon.svg"), permanent=True)


@login_required
@require_GET
def team_pools(request: HttpRequest, team: str) -> HttpResponse:
    found, role = team_or_404(request, team)
    overview = [
        {
            "pool": pool,
            "counts": selectors.status_counts(rows),
            "next_change": selectors.next_change(rows),
            "total": len(rows),
        }
        for pool, rows in selectors.team_overview(found, now=timezone.now())
    ]
    return render(
        request,
        "pages/team.html",
        {
            "team": found,
            "role": role,
            "overview": overview,
            "is_lead": role == Membership.Role.LEAD,
        },
    )


def _next_quota_check(
    account: Account, pool: Pool, windows: list[QuotaWindow], now: datetime
) -> datetime | None:
    """When the cycle next checks this account's quota, at the same `now` as its verdict."""
    snapshot = account.state_snapshot(windows=windows)
    return state.quota_next_check_at(snapshot, pool.policy, now)


def _line(row: selectors.AccountWithVerdict) -> pool_table.Line:
    account = row.account
    return pool_table.Line(
        account_id=account.pk,
        label=account.label,
        email=account.email,
        is_oauth=account.kind == Account.Kind.OAUTH,
        verdict=row.verdict,
        windows=tuple(account.quota_windows.all()),  # the prefetched rows, read as they are
        access_expires_at=account.access_expires_at,
    )


def _sort_links(query: pool_table.TableQuery) -> list[dict[str, str]]:
    links = []
    for key, title in pool_table.COLUMNS:
        current = query.sort == key
        flip = "" if current and query.descending else "-" if current else ""
        links.append(
            {
                "key": key,
                "title": title,
                "href": "?" + urlencode(query.params(sort=flip + key)),
                "aria": ("descending" if query.descending else "ascending") if current else "",
            }
        )
    return links


def _pool_context(request: HttpRequest, pool_slug: str) -> dict[str, Any]:
    pool, role = pool_or_404(request, pool_slug)
    now = timezone.now()
    rows = selectors.pool_rows(pool, now=now)
    query = pool_table.TableQuery.from_params(request.GET)
    table = pool_table.table_view([_line(row) for row in rows], query)
    return {
        "team": pool.team,
        "pool": pool,
        "role": role,
        "is_lead": role == Membership.Role.LEAD,
        "table": table,
        "lines_html": [pool_lines.line_html(line, now) for line in table.lines],
        "query": query,
        "query_string": urlencode(query.params()),
        "status_links": [
            (status, table.status_counts[status], urlencode(query.params(status=status)))
            for status in pool_table.STATUSES
        ],
        "reason_links": [
            (code, words, count, urlencode(query.params(reason=code)))
            for code, words, count in table.reason_counts
        ],
        "clear_status": urlencode(query.params(status="")),
        "clear_reason": urlencode(query.params(reason="")),
        "sort_links": _sort_links(query),
        "next_change": selectors.next_change(rows),
        "now": now,
    }


@login_required
@require_GET
def pool_detail(request: HttpRequest, pool: str) -> HttpResponse:
    return render(request, "pages/pool.html", _pool_context(request, pool))


@login_required
@require_GET
def pool_rows(request: HttpRequest, pool: str) -> HttpResponse:
    """The filtered table alone, for the page's 30-second refresh; 304 when nothing changed."""
    response = render(request, "pages/_pool_rows.html", _pool_context(request, pool))
    tag = '"' + hashlib.sha256(response.content).hexdigest()[:32] + '"'
    if request.headers.get("If-None-Match") == tag:
        return HttpResponseNotModified(headers={"ETag": tag})
    response["ETag"] = tag
    response["Cache-Control"] = "private, no-cache"
    return response


@login_required
@require_GET
def account_detail(request: HttpRequest, account_id: int) -> HttpResponse:
    account, role = account_or_404(request, account_id)
    now = timezone.now()
    windows = list(account.quota_windows.all())
    verdict = account.verdict(now, windows=windows)
    operation = request.GET.get("operation", "")
    operations = [op.value for op in Operation]
    events = AccountEvent.objects.filter(account=account).order_by("-at", "-id")
    if operation in operations:
        events = events.filter(operation=operation)
    else:
        operation = ""
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    snapshot = account.state_snapshot(windows=windows)
    policy = account.pool.policy
    return render(
        request,
        "pages/account.html",
        {
            "team": account.pool.team,
            "pool": account.pool,
            "account": account,
            "role": role,
            "is_lead": role == Membership.Role.LEAD,
            "verdict": verdict,
            "windows": windows,
            "page": page,
            "operation": operation,
            "operations": operations,
            "next_quota_check": _next_quota_check(account, account.pool, windows, now),
            "next_change_text": explain.next_change_text(snapshot, verdict, now),
            "cause": explain.cause_cards(verdict),
            "levers": explain.levers(snapshot, verdict, now),
            "policy_recheck": explain.policy_next_recheck(snapshot, policy),
            "next_refresh": explain.next_refresh_at(snapshot, policy, now),
        },
    )
