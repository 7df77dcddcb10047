"""Read pages: the team's pools, a pool's accounts, one account with its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from .. import selectors, state
from ..models import Account, AccountEvent, Membership, Pool, QuotaWindow
from ..state import Operation
from .access import account_or_404, pool_or_404, team_or_404

EVENTS_PER_PAGE = 25


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    teams = list(selectors.user_teams(request.user))
    if len(teams) == 1:
        return redirect("team", team=teams[0].slug)
    return render(request, "pages/home.html", {"teams": teams})


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


def _pool_context(request: HttpRequest, pool_slug: str) -> dict[str, Any]:
    pool, role = pool_or_404(request, pool_slug)
    now = timezone.now()
    rows = selectors.pool_rows(pool, now=now)
    return {
        "team": pool.team,
        "pool": pool,
        "role": role,
        "is_lead": role == Membership.Role.LEAD,
        "rows": [_row(row, pool, now) for row in rows],
        "counts": selectors.status_counts(rows),
        "next_change": selectors.next_change(rows),
        "now": now,
    }


def _row(row: selectors.AccountWithVerdict, pool: Pool, now: datetime) -> dict[str, Any]:
    windows = list(row.account.quota_windows.all())
    return {
        "account": row.account,
        "verdict": row.verdict,
        "windows": windows,
        "next_quota_check": _next_quota_check(row.account, pool, windows, now),
    }


def _next_quota_check(
    account: Account, pool: Pool, windows: list[QuotaWindow], now: datetime
) -> datetime | None:
    """When the cycle next checks this account's quota, at the same `now` as its verdict."""
    snapshot = account.state_snapshot(windows=windows)
    return state.quota_next_check_at(snapshot, pool.policy, now)


@login_required
@require_GET
def pool_detail(request: HttpRequest, pool: str) -> HttpResponse:
    return render(request, "pages/pool.html", _pool_context(request, pool))


@login_required
@require_GET
def pool_rows(request: HttpRequest, pool: str) -> HttpResponse:
    """The rows alone, for the page's 30-second refresh."""
    return render(request, "pages/_pool_rows.html", _pool_context(request, pool))


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
        },
    )
