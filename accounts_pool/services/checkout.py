"""Checkout: hand a tool one working credential from its pool, by the pool's routing."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import rawsql, routing, selectors, state
from ..models import Account, Checkout, ConsumerKey, Pool
from .credentials import checkout_credential
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


class KeyChanged(ServiceError):
    """The consumer key was revoked, or its pool changed, after it was read: nothing was
    recorded and no credential may leave. Read the key again and start over."""

    status = 409
    code = "conflict"

    def __init__(self) -> None:
        super().__init__(
            "The consumer key was revoked or its pool changed during the checkout; try again."
        )


def _confirm(key: ConsumerKey) -> None:
    """Raise KeyChanged unless the key is still unrevoked and its pool as read: before a path
    that shows accounts or acts for the key without the recording statement's own check."""
    if not selectors.consumer_key_unchanged(key):
        raise KeyChanged()


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


# Pages of candidates read in the routing's order: most checkouts take the very first one.
ROUNDS = ((1, 0), (8, 1), (None, 9))
FIRST_ROUND = ROUNDS[0][0]


def _verdict(
    candidate: selectors.CheckoutCandidate, pool: Pool, now: datetime, model: str | None = None
) -> state.Verdict:
    snapshot = candidate.account.state_snapshot(windows=candidate.windows)
    return state.eligibility(snapshot, pool.policy, now, model=model)


def _sticky_account(key: ConsumerKey, session_hash: str) -> int | None:
    if not session_hash:
        return None
    return (
        Checkout.objects.filter(consumer_key=key, session_hash=session_hash)
        .order_by("-at")
        .values_list("account_id", flat=True)
        .first()
    )


def _balanced(
    pool: Pool,
    rows: list[selectors.CheckoutCandidate],
    now: datetime,
    degraded: Account | None,
    model: str | None,
) -> Account | None:
    """The account balanced routing spends best; `degraded` (a session's degraded account)
    serves before any other degraded one, as in the other routings."""
    candidates = [
        routing.Candidate(
            account_id=row.account.pk,
            status=_verdict(row, pool, now, model).status,
            last_used_at=row.account.last_used_at,
            windows=tuple(row.windows),
        )
        for row in rows
    ]
    chosen = routing.choose_balanced(candidates, policy=pool.policy, now=now)
    if degraded is not None and (chosen is None or chosen.status != state.Status.USABLE):
        return degraded
    return next((r.account for r in rows if chosen and r.account.pk == chosen.account_id), None)


def _pick(
    pool: Pool, now: datetime, *, sticky_id: int | None, skip: set[int], model: str | None
) -> Account | None:
    """The routing's best usable account, else its best degraded one, else None.

    Only accounts that SQL cannot rule out are read, in the routing's order, a few at a time:
    the cost of a checkout does not grow with the pool."""
    fallback = None
    if sticky_id is not None and sticky_id not in skip:
        for sticky in selectors.checkout_candidates(pool, now=now, only=sticky_id):
            status = _verdict(sticky, pool, now, model).status
            if status == state.Status.USABLE:
                return sticky.account
            if status == state.Status.DEGRADED:
                fallback = sticky.account
    if pool.routing == Pool.Routing.BALANCED:
        rows = selectors.checkout_candidates(pool, now=now, skip=skip)
        return _balanced(pool, rows, now, fallback, model)
    first_degraded = None
    for limit, offset in ROUNDS:
        rows = selectors.checkout_candidates(pool, now=now, skip=skip, limit=limit, offset=offset)
        for row in rows:
            status = _verdict(row, pool, now, model).status
            if status == state.Status.USABLE:
                return row.account
            if status == state.Status.DEGRADED and first_degraded is None:
                first_degraded = row.account
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
    )


def _ready(account: Account, key: ConsumerKey, now: datetime) -> Account | None:
    """The account with its credential, good for more than 5 minutes (refreshed first if
    needed, for a key still as read); None when the refresh failed and the old token is
    gone."""
    if account.kind != Account.Kind.OAUTH:
        return account
    expires = account.access_expires_at
    if expires is not None and expires > now + REFRESH_IF_EXPIRING_WITHIN:
        return account
    _confirm(key)
    account_refresh(account_id=account.pk, now=now, wait=True, lead=REFRESH_IF_EXPIRING_WITHIN)
    fresh = Account.objects.defer(*Account.SECRET_FIELDS).get(pk=account.pk)
    if fresh.access_expires_at is None or fresh.access_expires_at <= now:
        return None
    return checkout_credential(fresh, now=now)


def checkout_create(
    *,
    key: ConsumerKey,
    session: str = "",
    model: str | None = None,
    exclude: frozenset[int] = frozenset(),
    now: datetime | None = None,
) -> CheckoutResult:
    """Pick a usable account (then a degraded one) by the pool's routing, keep a session on
    its account, and record the checkout. Raises NoUsableAccount with every account's reasons.

    The key and its pool may be as read a while ago (RecentKeys): neither a credential nor the
    accounts' reasons leave unless the key is still unrevoked and its pool unchanged, which the
    statement recording the checkout checks itself (else KeyChanged, nothing recorded)."""
    now = now or timezone.now()
    pool = key.pool
    session_hash = secret_hash(session) if session else ""
    sticky_id = _sticky_account(key, session_hash)
    skip: set[int] = set(exclude)
    while True:
        chosen = _pick(pool, now, sticky_id=sticky_id, skip=skip, model=model)
        if chosen is None:
            _confirm(key)
            raise _none_usable(pool, now, model)
        readable = checkout_credential(chosen, now=now)
        account = _ready(readable, key, now) if readable is not None else None
        if account is not None:
            break
        skip.add(chosen.pk)
    checkout = _record(account, key, session_hash, now)
    return CheckoutResult(checkout, account)


def checkouts_prune(*, now: datetime, older_than: timedelta) -> int:
    """Delete checkouts older than the retention (a report names a recent checkout; a session
    follows its latest one); returns how many rows went. Every tool request writes one."""
    deleted, _ = Checkout.objects.filter(at__lt=now - older_than).delete()
    return deleted


def _record(account: Account, key: ConsumerKey, session_hash: str, now: datetime) -> Checkout:
    """Write the checkout and the account's last use together, if the key is unrevoked and its
    pool as read (else KeyChanged).

    Both may be lost in a database crash without harm, so on PostgreSQL they do not wait for
    the disk, and go as one statement with the key's check: one round trip instead of seven
    (begin, relax the commit, check, insert, update, commit), on the path of every tool
    request."""
    checkout = Checkout(
        id=uuid.uuid4(),
        account=account,
        consumer_key=key,
        session_hash=session_hash,
        at=now,
        credential_version=account.credential_version,  # what a 401 report is about
    )
    on = rawsql.db()
    if on.vendor != "postgresql":
        with transaction.atomic():
            _confirm(key)
            checkout.save(force_insert=True)
            Account.objects.filter(pk=account.pk).update(last_used_at=now)
        return checkout
    at = rawsql.param(now, on)
    written = rawsql.execute(
        on,
        _record_sql(),
        [
            *selectors.key_unchanged_params(key, on),
            *(at, account.pk),
            *(checkout.pk, account.pk, key.pk, session_hash, at, checkout.credential_version),
        ],
    )
    if written != 1:
        raise KeyChanged()
    return checkout


@functools.cache
def _record_sql() -> str:
    """PostgreSQL only: set_config(..., true) lasts to the end of the statement's own
    transaction, commit included."""
    a, c = Account, Checkout
    columns = ", ".join(
        rawsql.column(c, name)
        for name in ("id", "account", "consumer_key", "session_hash", "at", "credential_version")
    )
    return (
        # Identifiers come from the models' metadata, quoted; every value is a parameter.
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),"  # noqa: S608
        f" unchanged AS ({selectors.key_unchanged_sql('postgresql')}),"
        f" touched AS (UPDATE {rawsql.quote(a._meta.db_table)}"
        f" SET {rawsql.column(a, 'last_used_at')} = %s WHERE {rawsql.column(a, 'id')} = %s"
        " AND EXISTS (SELECT 1 FROM unchanged))"
        f" INSERT INTO {rawsql.quote(c._meta.db_table)} ({columns})"
        " SELECT %s, %s, %s, %s, %s, %s FROM relaxed, unchanged"
    )
