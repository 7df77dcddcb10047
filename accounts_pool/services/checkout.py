"""Checkout: hand a tool one working credential from its pool, by the pool's routing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import routing, selectors, state
from ..models import Account, Checkout, ConsumerKey
from .errors import ServiceError
from .keys import secret_hash
from .refresh import account_refresh

REFRESH_IF_EXPIRING_WITHIN = timedelta(minutes=5)


class NoUsableAccount(ServiceError):
    status = 503
    code = "no_usable_account"

    def __init__(self, retry_at: datetime | None, accounts: list[dict[str, Any]]) -> None:
        super().__init__("No account in this pool can be used now.", details={"accounts": accounts})
        self.retry_at = retry_at


@dataclass(frozen=True)
class CheckoutResult:
    checkout: Checkout
    account: Account

    @property
    def credential(self) -> dict[str, Any]:
        if self.account.kind == Account.Kind.API_KEY:
            return {"kind": "api_key", "api_key": self.account.api_key, "expires_at": None}
        return {
            "kind": "oauth",
            "access_token": self.account.access_token,
            "expires_at": self.account.access_expires_at,
        }


def reasons_payload(verdict: state.Verdict) -> list[dict[str, Any]]:
    return [
        {
            "code": r.code.value,
            "message": r.message,
            "since": r.since,
            "until": r.until,
            "clears_on": r.clears_on.value,
        }
        for r in verdict.reasons
    ]


def _candidate(row: selectors.AccountWithVerdict) -> routing.Candidate:
    account = row.account
    return routing.Candidate(
        account_id=account.pk,
        status=row.verdict.status,
        priority=account.priority,
        last_used_at=account.last_used_at,
        windows=tuple(w.as_state() for w in account.quota_windows.all()),
    )


def _ready(account: Account, now: datetime) -> Account | None:
    """The account with a token good for more than 5 minutes, refreshing first if needed."""
    if account.kind != Account.Kind.OAUTH:
        return account
    expires = account.access_expires_at
    if expires is not None and expires > now + REFRESH_IF_EXPIRING_WITHIN:
        return account
    account_refresh(account_id=account.pk, now=now, wait=True, lead=REFRESH_IF_EXPIRING_WITHIN)
    fresh = Account.objects.select_related("pool").get(pk=account.pk)
    if fresh.access_expires_at is None or fresh.access_expires_at <= now:
        return None  # the refresh failed and the old token is gone
    return fresh


def checkout_create(
    *, key: ConsumerKey, session: str = "", now: datetime | None = None
) -> CheckoutResult:
    """Pick a usable account (then a degraded one) by the pool's routing, keep a session on
    its account, and record the checkout. Raises NoUsableAccount with every account's reasons."""
    now = now or timezone.now()
    pool = key.pool
    rows = selectors.accounts_with_verdicts(Account.objects.filter(pool=pool), now=now)
    session_hash = secret_hash(session) if session else ""
    sticky = None
    if session_hash:
        sticky = (
            Checkout.objects.filter(consumer_key=key, session_hash=session_hash)
            .order_by("-at")
            .values_list("account_id", flat=True)
            .first()
        )
    candidates = [_candidate(row) for row in rows]
    by_id = {row.account.pk: row.account for row in rows}
    while True:
        chosen = routing.choose(
            candidates, routing=pool.routing, policy=pool.policy, now=now, sticky_account_id=sticky
        )
        if chosen is None:
            usable_at = [r.verdict.usable_at for r in rows if r.verdict.usable_at is not None]
            raise NoUsableAccount(
                min(usable_at) if usable_at else None,
                [
                    {
                        "id": r.account.pk,
                        "label": r.account.label,
                        "status": r.verdict.status.value,
                        "reasons": reasons_payload(r.verdict),
                    }
                    for r in rows
                ],
            )
        account = _ready(by_id[chosen.account_id], now)
        if account is not None:
            break
        candidates = [c for c in candidates if c.account_id != chosen.account_id]
    with transaction.atomic():
        checkout = Checkout.objects.create(
            id=uuid.uuid4(), account=account, consumer_key=key, session_hash=session_hash, at=now
        )
        Account.objects.filter(pk=account.pk).update(last_used_at=now)
    return CheckoutResult(checkout, account)
