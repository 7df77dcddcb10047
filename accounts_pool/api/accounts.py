"""One account: its separate state groups, its history, and the manual levers."""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router, Status

from ..models import AccountEvent
from ..services import levers
from . import access, present
from .schemas import AccountOut, AccountPatch, ActionOut, ErrorOut, EventFilters, EventPage

router = Router(tags=["accounts"])
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}


@router.get("/accounts/{account_id}", response={200: AccountOut, **ERRORS})
def get_account(request: HttpRequest, account_id: int) -> dict[str, Any]:
    """Status, every reason, and the separate groups `refresh`, `quota`, `policy`, `cooldown`."""
    account = access.account_for(access.principal(request), account_id)
    return present.account_detail(account, timezone.now())


@router.patch("/accounts/{account_id}", response={200: AccountOut, **ERRORS})
def patch_account(request: HttpRequest, account_id: int, payload: AccountPatch) -> dict[str, Any]:
    """Change `label`, `priority`, or `enabled` (with an optional `disabled_reason`). Leads."""
    principal = access.principal(request)
    account = access.account_for(principal, account_id, lead=True)
    levers.account_update(account=account, actor=principal.actor, **payload.model_dump())
    return present.account_detail_by_id(account.pk)


@router.delete("/accounts/{account_id}", response={204: None, **ERRORS})
def delete_account(request: HttpRequest, account_id: int) -> Status[None]:
    """Delete the account with its history (leads)."""
    account = access.account_for(access.principal(request), account_id, lead=True)
    levers.account_delete(account=account)
    return Status(204, None)


@router.get("/accounts/{account_id}/events", response={200: EventPage, **ERRORS})
def list_events(
    request: HttpRequest,
    account_id: int,
    filters: Query[EventFilters],
) -> dict[str, Any]:
    """The error history, newest first, filterable by operation and outcome."""
    account = access.account_for(access.principal(request), account_id)
    events = AccountEvent.objects.filter(account=account)
    if filters.operation:
        events = events.filter(operation=filters.operation)
    if filters.outcome:
        events = events.filter(outcome=filters.outcome)
    page, page_size = filters.page, filters.page_size
    start = (page - 1) * page_size
    rows = events.order_by("-at", "-id")[start : start + page_size]
    return {
        "items": [present.event(row) for row in rows],
        "count": events.count(),
        "page": page,
        "page_size": page_size,
    }


Action = Literal["refresh", "check-quota", "clear-backoff"]


@router.post("/accounts/{account_id}/actions/{action}", response={200: ActionOut, **ERRORS})
def act(request: HttpRequest, account_id: int, action: Action) -> dict[str, Any]:
    """Pull a lever: `refresh` (ignores the backoff), `check-quota`, `clear-backoff`. Leads."""
    principal = access.principal(request)
    account = access.account_for(principal, account_id, lead=True)
    outcome: str
    if action == "refresh":
        outcome = levers.account_refresh_now(account=account, actor=principal.actor)
    elif action == "check-quota":
        outcome = levers.account_check_quota_now(account=account, actor=principal.actor)
    else:
        cleared = levers.account_clear_backoff(account=account, actor=principal.actor)
        outcome = levers.ClearOutcome.CLEARED if cleared else levers.ClearOutcome.NOTHING_TO_CLEAR
    return {
        "action": action,
        "outcome": outcome,
        "account": present.account_detail_by_id(account.pk),
    }
