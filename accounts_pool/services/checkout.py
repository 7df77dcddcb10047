"""Checkout: hand a tool one working credential from its pool, by the pool's routing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from .. import checkout_sql, routing, selectors, state
from ..crypto import SecretDecryptionError
from ..models import Account, Checkout, ConsumerKey, Pool
from .credentials import checkout_credential, credential_unreadable_mark
from .errors import ServiceError
from .keys import consumer_key_touch, secret_hash
from .refresh import account_refresh

REFRESH_IF_EXPIRING_WITHIN = timedelta(minutes=5)
logger = logging.getLogger("accounts_pool.credentials")


class NoUsableAccount(ServiceError):
    status = 503
    code = "no_usable_account"

    def __init__(
        self, retry_at: datetime | None, accounts: list[dict[str, Any]], pool_slug: str = ""
    ) -> None:
        super().__init__("No account in this pool can be used now.", details={"accounts": accounts})
        self.retry_at = retry_at
        self.pool_slug = pool_slug  # the relay's message names the pool


class UnknownKey(ServiceError):
    """No unrevoked consumer key has the presented secret (read in checkout's own statement)."""

    status = 401
    code = "unauthenticated"

    def __init__(self) -> None:
        super().__init__("Send a valid API token or consumer key (Bearer).")


class OtherPool(ServiceError):
    """The key's pool is not the one named: to the key, that pool does not exist."""

    status = 404
    code = "not_found"

    def __init__(self) -> None:
        super().__init__("Pool not found.")


@dataclass(frozen=True)
class CheckoutResult:
    checkout: Checkout
    account: Account
    key: ConsumerKey  # as read by the checkout's own statement, with its pool

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


# Called with the key as checkout's first read found it, before any account is chosen; it may
# refuse the request by raising (the relay's key limits).
Admit = Callable[[ConsumerKey], None]

# Pages of candidates read in the routing's order: most checkouts take the very first one.
ROUNDS = ((1, 0), (8, 1), (None, 9))
FIRST_ROUND = ROUNDS[0][0]


class _Reads:
    """Checkout's candidate reads for one request: each reads the key and its pool again with
    the page (checkout_sql.candidates), so a revoked key stops the request at its next read."""

    def __init__(
        self, key_hash: str, pool_slug: str | None, now: datetime, admit: Admit | None = None
    ) -> None:
        self.key_hash = key_hash
        self.pool_slug = pool_slug
        self.now = now
        self.admit = admit
        self.key: ConsumerKey | None = None

    def page(
        self,
        *,
        limit: int | None = None,
        offset: int = 0,
        skip: set[int] | frozenset[int] = frozenset(),
        session_hash: str = "",
    ) -> list[checkout_sql.Candidate]:
        page = checkout_sql.candidates(
            self.key_hash,
            now=self.now,
            limit=limit,
            offset=offset,
            skip=skip,
            session_hash=session_hash,
        )
        if page.key is None:
            raise UnknownKey()
        if self.pool_slug is not None and page.key.pool.slug != self.pool_slug:
            raise OtherPool()
        if self.key is None:
            consumer_key_touch(page.key)
            if self.admit is not None:
                self.admit(page.key)
        self.key = page.key
        return page.candidates

    @property
    def pool(self) -> Pool:
        assert self.key is not None  # set by the first page
        return self.key.pool


def _status(
    candidate: checkout_sql.Candidate, pool: Pool, now: datetime, model: str | None
) -> state.Status:
    return state.eligibility(candidate.snapshot(), pool.policy, now, model=model).status


Found = checkout_sql.Candidate


def _balanced(
    pool: Pool, rows: list[Found], now: datetime, degraded: Found | None, model: str | None
) -> Found | None:
    """The account balanced routing spends best; `degraded` (a session's degraded account)
    serves before any other degraded one, as in the other routings."""
    candidates = [
        routing.Candidate(
            account_id=row.account.pk,
            status=_status(row, pool, now, model),
            last_used_at=row.account.last_used_at,
            windows=tuple(row.windows),
        )
        for row in rows
    ]
    chosen = routing.choose_balanced(candidates, policy=pool.policy, now=now)
    if degraded is not None and (chosen is None or chosen.status != state.Status.USABLE):
        return degraded
    return next((r for r in rows if chosen and r.account.pk == chosen.account_id), None)


def _pick(reads: _Reads, *, session_hash: str, skip: set[int], model: str | None) -> Found | None:
    """The session's account if it is usable, else the routing's best usable account, else
    the session's account if degraded, else the routing's best degraded one, else None.

    Only accounts that SQL cannot rule out are read, in the routing's order, a few at a time:
    the cost of a checkout does not grow with the pool (nor with a session's checkouts)."""
    now = reads.now
    fallback = None
    if session_hash:
        for sticky in reads.page(session_hash=session_hash, skip=skip):
            status = _status(sticky, reads.pool, now, model)
            if status == state.Status.USABLE:
                return sticky
            if status == state.Status.DEGRADED:
                fallback = sticky
    first_degraded = None
    for limit, offset in ROUNDS:
        rows = reads.page(skip=skip, limit=limit, offset=offset)
        if reads.pool.routing == Pool.Routing.BALANCED:
            if limit is not None and len(rows) == limit:  # the rest, as balanced weighs all
                rows += reads.page(skip=skip, offset=offset + limit)
            return _balanced(reads.pool, rows, now, fallback, model)
        for row in rows:
            status = _status(row, reads.pool, now, model)
            if status == state.Status.USABLE:
                return row
            if status == state.Status.DEGRADED and first_degraded is None:
                first_degraded = row
        if limit is None or len(rows) < limit:
            break
    return fallback or first_degraded


def _none_usable(pool: Pool, now: datetime, model: str | None) -> NoUsableAccount:
    rows = selectors.accounts_with_verdicts(Account.objects.filter(pool=pool), now=now, model=model)
    usable_at = [r.verdict.usable_at for r in rows if r.verdict.usable_at is not None]
    return NoUsableAccount(
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
        pool_slug=pool.slug,
    )


def _unsealed(chosen: Found, now: datetime) -> Account | None:
    """The chosen account with its credential decrypted; None when the configured keys cannot
    decrypt it, with the account marked (excluded with its own reason, never its pool)."""
    try:
        return chosen.unseal()
    except SecretDecryptionError:
        logger.warning("account=%s credential unreadable; checkout skips it", chosen.account.pk)
        credential_unreadable_mark(account_id=chosen.account.pk, now=now, found_by="checkout")
        return None


def _ready(chosen: Found, now: datetime) -> Account | None:
    """The account with its credential, good for more than 5 minutes (refreshed first if
    needed); None when the refresh failed and the old token is gone, or the account is."""
    account = chosen.account
    expires = account.access_expires_at
    if account.kind != Account.Kind.OAUTH or (
        expires is not None and expires > now + REFRESH_IF_EXPIRING_WITHIN
    ):
        return _unsealed(chosen, now)
    account_refresh(account_id=account.pk, now=now, wait=True, lead=REFRESH_IF_EXPIRING_WITHIN)
    fresh = (
        Account.objects.select_related("pool")
        .defer(*Account.SECRET_FIELDS)
        .filter(pk=account.pk)
        .first()
    )
    if fresh is None:  # deleted while it was refreshed
        return None
    if fresh.access_expires_at is None or fresh.access_expires_at <= now:
        return None
    return checkout_credential(fresh, now=now)


def checkout_create(
    *,
    key_hash: str,
    pool_slug: str | None = None,
    session: str = "",
    model: str | None = None,
    exclude: frozenset[int] = frozenset(),
    now: datetime | None = None,
    admit: Admit | None = None,
) -> CheckoutResult:
    """For the unrevoked consumer key with this hash (else UnknownKey), of the pool named
    `pool_slug` if one is named (else OtherPool): pick a usable account (then a degraded one)
    by the pool's routing and eligibility for `model`, not one in `exclude`, keep a session on
    its account, refresh a token expiring within 5 minutes, and record the checkout. Raises
    NoUsableAccount with every account's reasons.

    The key and its pool are read in the same statement as the candidates, on every request:
    a key revoked or a pool changed holds from the next request on. `admit` sees that key
    first (and may refuse)."""
    now = now or timezone.now()
    session_hash = secret_hash(session) if session else ""
    reads = _Reads(key_hash, pool_slug, now, admit)
    skip: set[int] = set(exclude)
    while True:
        chosen = _pick(reads, session_hash=session_hash, skip=skip, model=model)
        if chosen is None:
            raise _none_usable(reads.pool, now, model)
        account = _ready(chosen, now)
        if account is not None:
            assert reads.key is not None
            try:
                checkout = _record(account, reads.key, session_hash, now)
            except IntegrityError:
                # Deleted since the read (a lead, in another request): the next read, which
                # also reads the key again, does not find it.
                logger.info("account=%s deleted during a checkout; it picks again", account.pk)
            else:
                return CheckoutResult(checkout, account, reads.key)
        skip.add(chosen.account.pk)


def checkouts_prune(*, now: datetime, older_than: timedelta) -> int:
    """Delete checkouts older than the retention (a report names a recent checkout; a session
    follows its latest one); returns how many rows went. Every tool request writes one."""
    deleted, _ = Checkout.objects.filter(at__lt=now - older_than).delete()
    return deleted


def _record(account: Account, key: ConsumerKey, session_hash: str, now: datetime) -> Checkout:
    """Write the checkout and the account's last use together. Both may be lost in a database
    crash without harm, so on PostgreSQL they go as one statement that does not wait for the
    disk (checkout_sql.record): one round trip instead of five on every tool request."""
    checkout = Checkout(
        id=uuid.uuid4(),
        account=account,
        consumer_key=key,
        session_hash=session_hash,
        at=now,
        credential_version=account.credential_version,  # what a 401 report is about
    )
    if connection.vendor == "postgresql":
        checkout_sql.record(checkout)
        return checkout
    with transaction.atomic():
        checkout.save(force_insert=True)
        Account.objects.filter(pk=account.pk).update(last_used_at=now)
    return checkout
