"""Pools: list, create, read with every account's verdict, change policy, onboard accounts."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Body, Query, Router, Status

from .. import selectors, state
from ..models import Account, Pool
from ..services import onboarding
from ..services import teams as team_services
from . import access, present
from .schemas import (
    AccountCreateIn,
    ErrorOut,
    ImportOut,
    ImportQuery,
    OAuthCompleteIn,
    OAuthStartIn,
    OAuthStartOut,
    OnboardOut,
    PoolIn,
    PoolOut,
    PoolPatch,
)

router = Router(tags=["pools"])
ERRORS = {
    400: ErrorOut,
    401: ErrorOut,
    403: ErrorOut,
    404: ErrorOut,
    409: ErrorOut,
    410: ErrorOut,
    422: ErrorOut,
    502: ErrorOut,
}


def _pool_out(pool: Pool) -> dict[str, Any]:
    now = timezone.now()
    rows = selectors.accounts_with_verdicts(
        Account.objects.filter(pool=pool).order_by("priority", "label", "pk"), now=now
    )
    return present.pool_detail(pool, rows, now=now)


def _onboarded(result: onboarding.Onboarded) -> dict[str, Any]:
    return {"outcome": result.outcome, "account": present.account_detail_by_id(result.account.pk)}


@router.get("/teams/{team}/pools", response={200: list[PoolOut], **ERRORS})
def list_pools(request: HttpRequest, team: str) -> list[dict[str, Any]]:
    """The team's pools with counts by status and every account's verdict."""
    found = access.team_for(access.principal(request), team)
    now = timezone.now()
    return present.pool_details(selectors.team_overview(found, now=now), now)


@router.post("/teams/{team}/pools", response={201: PoolOut, **ERRORS})
def create_pool(request: HttpRequest, team: str, payload: PoolIn) -> Status[dict[str, Any]]:
    """Create a pool (leads)."""
    found = access.team_for(access.principal(request), team, lead=True)
    pool = team_services.pool_create(team=found, fields=payload.model_dump())
    return Status(201, _pool_out(pool))


@router.get("/pools/{pool}", response={200: PoolOut, **ERRORS})
def get_pool(request: HttpRequest, pool: str) -> dict[str, Any]:
    """The pool, counts by status, and each account with its status, reasons and windows.
    A pool's consumer key may read this too."""
    found = access.pool_for(access.principal(request), pool, key_ok=True)
    return _pool_out(found)


@router.patch("/pools/{pool}", response={200: PoolOut, **ERRORS})
def patch_pool(request: HttpRequest, pool: str, payload: PoolPatch) -> dict[str, Any]:
    """Change the pool's name, routing or policy (leads)."""
    found = access.pool_for(access.principal(request), pool, lead=True)
    team_services.pool_update(pool=found, fields=payload.model_dump(exclude_unset=True))
    return _pool_out(found)


@router.post("/pools/{pool}/accounts", response={201: OnboardOut, **ERRORS})
def onboard_account(
    request: HttpRequest, pool: str, payload: AccountCreateIn
) -> Status[dict[str, Any]]:
    """Onboard an account by tokens (checked with the provider before saving) or an API key."""
    principal = access.principal(request)
    found = access.pool_for(principal, pool, lead=True)
    if payload.kind == "api_key":
        assert payload.api_key is not None
        account = onboarding.account_create_api_key(
            pool=found,
            label=payload.label,
            api_key=payload.api_key,
            base_url=payload.base_url or "",
            actor=principal.actor,
        )
        stored = onboarding.Onboarded(account, state.OnboardingOutcome.STORED)
        return Status(201, _onboarded(stored))
    assert payload.refresh_token is not None
    result = onboarding.account_onboard_tokens(
        pool=found,
        label=payload.label,
        refresh_token=payload.refresh_token,
        access_token=payload.access_token or "",
        expires_at=payload.expires_at,
        actor=principal.actor,
    )
    return Status(201, _onboarded(result))


@router.post("/pools/{pool}/accounts/import", response={201: ImportOut, **ERRORS})
def import_accounts(
    request: HttpRequest,
    pool: str,
    document: Body[dict[str, Any]],
    options: Query[ImportQuery],
) -> Status[dict[str, Any]]:
    """Import a Claude Code credentials file (`{"claudeAiOauth": {...}}`) or an anthropic-auth
    accounts file (`{"version": 1, "accounts": [...]}`): all accounts or none."""
    principal = access.principal(request)
    found = access.pool_for(principal, pool, lead=True)
    created = onboarding.accounts_import(
        pool=found, document=document, label=options.label, actor=principal.actor
    )
    rows = selectors.accounts_with_verdicts(
        Account.objects.filter(pk__in=[a.pk for a in created]), now=timezone.now()
    )
    return Status(
        201, {"imported": len(created), "accounts": [present.account_summary(r) for r in rows]}
    )


def _account_in(found: Pool, account_id: int | None) -> Account | None:
    if account_id is None:
        return None
    account = selectors.pool_account(found, account_id)
    if account is None:
        raise access.NotFound("Account")
    return account


@router.post("/pools/{pool}/oauth/start", response={201: OAuthStartOut, **ERRORS})
def oauth_start(request: HttpRequest, pool: str, payload: OAuthStartIn) -> Status[dict[str, Any]]:
    """Begin a PKCE login: open `authorize_url`, then complete with the pasted code within
    10 minutes. With `account_id`, the login re-authorizes that account in place."""
    principal = access.principal(request)
    found = access.pool_for(principal, pool, lead=True)
    started = onboarding.oauth_login_start(
        pool=found,
        user=access.users_only(principal),
        account=_account_in(found, payload.account_id),
    )
    return Status(
        201,
        {
            "authorize_url": started.authorize_url,
            "session": started.session,
            "expires_at": started.expires_at,
        },
    )


@router.post("/pools/{pool}/oauth/complete", response={201: OnboardOut, **ERRORS})
def oauth_complete(
    request: HttpRequest, pool: str, payload: OAuthCompleteIn
) -> Status[dict[str, Any]]:
    """Finish a PKCE login with `CODE#STATE` or the whole callback URL."""
    principal = access.principal(request)
    found = access.pool_for(principal, pool, lead=True)
    result = onboarding.oauth_login_complete(
        pool=found,
        session=payload.session,
        pasted_code=payload.code,
        label=payload.label or "",
        account=_account_in(found, payload.account_id),
        actor=principal.actor,
    )
    return Status(201, _onboarded(result))
