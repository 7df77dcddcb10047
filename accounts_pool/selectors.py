"""Every non-trivial read: due accounts for the cycle, account lists with their verdicts."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.contrib.auth.models import AnonymousUser, User
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    DateTimeField,
    ExpressionWrapper,
    F,
    Max,
    Min,
    Model,
    Q,
    QuerySet,
    Value,
)
from django.db.models.expressions import CombinedExpression

from . import rawsql, state
from .crypto import SecretDecryptionError
from .models import Account, ConsumerKey, Membership, Pool, QuotaWindow, Team


def _shifted(now: datetime, field: str, sign: int) -> ExpressionWrapper[CombinedExpression]:
    expression = Value(now) + F(field) if sign > 0 else Value(now) - F(field)
    return ExpressionWrapper(expression, output_field=DateTimeField())


def _cycle_candidates(pool: Pool | None, account_id: int | None) -> QuerySet[Account]:
    # An account whose secrets do not decrypt is left alone until a person acts (credentials.py).
    accounts = Account.objects.filter(
        enabled=True, kind=Account.Kind.OAUTH, credential_unreadable_at__isnull=True
    )
    if pool is not None:
        accounts = accounts.filter(pool=pool)
    if account_id is not None:
        accounts = accounts.filter(pk=account_id)
    return accounts


def _locked(due: QuerySet[Account], lock: bool) -> QuerySet[Account]:
    """With `lock` (inside a transaction), the rows are locked and rows another transaction
    holds are skipped: concurrent dispatchers take disjoint ids. No-op on SQLite, which has
    one writer at a time anyway."""
    return due.select_for_update(skip_locked=True, of=("self",)) if lock else due


def accounts_due_for_refresh(
    *,
    now: datetime,
    limit: int,
    pool: Pool | None = None,
    account_id: int | None = None,
    lock: bool = False,
) -> list[int]:
    """Ids of accounts whose token refresh is due (state.refresh_due, as a query).

    The constant bound on the largest pool lead lets the partial index on access_expires_at
    narrow the scan before the per-pool lead is compared."""
    max_lead = Pool.objects.aggregate(lead=Max("refresh_lead"))["lead"] or timedelta(0)
    expiring = Q(access_expires_at__lte=now + max_lead) & Q(
        access_expires_at__lte=_shifted(now, "pool__refresh_lead", +1)
    )
    due = (
        _cycle_candidates(pool, account_id)
        .exclude(refresh_token_fingerprint="")
        .exclude(relogin_required_for=F("refresh_token_fingerprint"))
        .filter(Q(refresh_backoff_until__isnull=True) | Q(refresh_backoff_until__lte=now))
        .filter(Q(refresh_claimed_until__isnull=True) | Q(refresh_claimed_until__lte=now))
        .filter(Q(refresh_dispatched_until__isnull=True) | Q(refresh_dispatched_until__lte=now))
        .filter(Q(access_expires_at__isnull=True) | expiring)
        # The partial index's own order, so the scan stops at the batch size instead of
        # sorting every due row first.
        .order_by("access_expires_at")
    )
    return list(_locked(due, lock).values_list("pk", flat=True)[:limit])


def accounts_due_for_quota(
    *,
    now: datetime,
    limit: int,
    pool: Pool | None = None,
    account_id: int | None = None,
    lock: bool = False,
) -> list[int]:
    """Ids of accounts whose quota check is due (state.quota_due, as a query)."""
    min_interval = Pool.objects.aggregate(i=Min("quota_interval"))["i"] or timedelta(0)
    stale = Q(quota_checked_at__lte=now - min_interval) & Q(
        quota_checked_at__lte=_shifted(now, "pool__quota_interval", -1)
    )
    headers_stale = Q(windows_observed_at__isnull=True) | Q(
        windows_observed_at__lte=_shifted(now, "pool__quota_interval", -1)
    )
    policy_ok = Q(policy_status=state.PolicyStatus.OK.value) & (
        Q(quota_checked_at__isnull=True) | (stale & headers_stale)
    )
    policy_recheck = Q(policy_status=state.PolicyStatus.BLOCKED.value) & (
        Q(policy_checked_at__isnull=True)
        | Q(policy_checked_at__lte=_shifted(now, "pool__policy_recheck_interval", -1))
    )
    due = (
        _cycle_candidates(pool, account_id)
        .filter(access_expires_at__gt=now)
        .filter(Q(quota_backoff_until__isnull=True) | Q(quota_backoff_until__lte=now))
        .filter(Q(quota_claimed_until__isnull=True) | Q(quota_claimed_until__lte=now))
        .filter(Q(quota_dispatched_until__isnull=True) | Q(quota_dispatched_until__lte=now))
        .filter(policy_ok | policy_recheck)
        .order_by("quota_checked_at")
    )
    return list(_locked(due, lock).values_list("pk", flat=True)[:limit])


@dataclass(frozen=True)
class AccountWithVerdict:
    account: Account
    verdict: state.Verdict


def status_counts(rows: list[AccountWithVerdict]) -> dict[str, int]:
    """How many accounts are usable, degraded, excluded (every status present, zero or not)."""
    counts = {status.value: 0 for status in state.Status}
    for row in rows:
        counts[row.verdict.status.value] += 1
    return counts


def next_change(rows: list[AccountWithVerdict]) -> datetime | None:
    """The earliest moment any of these accounts' verdicts changes."""
    changes = [r.verdict.next_change_at for r in rows if r.verdict.next_change_at is not None]
    return min(changes) if changes else None


def accounts_with_verdicts(
    accounts: QuerySet[Account], *, now: datetime, model: str | None = None
) -> list[AccountWithVerdict]:
    """Accounts with their eligibility (for a request of `model`, if known), in a fixed number
    of queries however many rows."""
    rows = (
        accounts.select_related("pool")
        .prefetch_related("quota_windows")
        .defer(*Account.SECRET_FIELDS)  # nothing here hands a credential out
    )
    return [AccountWithVerdict(account, account.verdict(now, model=model)) for account in rows]


def user_role(user: User | AnonymousUser, team: Team) -> str | None:
    """The user's role in the team: lead, member, or None. Superusers act as leads."""
    if not isinstance(user, User) or not user.is_active:
        return None
    if user.is_superuser:
        return Membership.Role.LEAD
    return Membership.objects.filter(team=team, user=user).values_list("role", flat=True).first()


def user_teams(user: User | AnonymousUser) -> QuerySet[Team]:
    if not isinstance(user, User):
        return Team.objects.none()
    if user.is_superuser:
        return Team.objects.all().order_by("name")
    return Team.objects.filter(memberships__user=user).distinct().order_by("name")


def team_overview(team: Team, *, now: datetime) -> list[tuple[Pool, list[AccountWithVerdict]]]:
    """Each pool of the team with its accounts' verdicts, in a fixed number of queries."""
    pools = list(Pool.objects.filter(team=team).select_related("team").order_by("name"))
    accounts = Account.objects.filter(pool__team=team).order_by(
        "pool_id", "priority", "label", "pk"
    )
    rows = accounts_with_verdicts(accounts, now=now)
    by_pool: dict[int, list[AccountWithVerdict]] = {pool.pk: [] for pool in pools}
    for row in rows:
        by_pool[row.account.pool_id].append(row)
    return [(pool, by_pool[pool.pk]) for pool in pools]


# What state_snapshot reads, and what a notification names: nothing else is loaded when the
# notification tick reads every account of a team each minute (bench/notify.py).
VERDICT_FIELDS = (
    "pool_id",
    "label",
    "priority",
    "kind",
    "enabled",
    "disabled_reason",
    "disabled_at",
    "access_expires_at",
    "refresh_token_fingerprint",
    "relogin_required_for",
    "refresh_backoff_until",
    "refresh_error_kind",
    "refresh_error_status",
    "refresh_error_message",
    "refresh_error_at",
    "quota_checked_at",
    "windows_observed_at",
    "quota_backoff_until",
    "quota_failures",
    "quota_error_message",
    "policy_status",
    "policy_message",
    "policy_since",
    "policy_checked_at",
    "cooldown_until",
    "cooldown_reason",
    "credential_unreadable_at",
)


def team_verdicts(team: Team, *, now: datetime) -> list[tuple[Pool, list[AccountWithVerdict]]]:
    """team_overview's answer, cheaper: only the verdict's columns, and windows read as the
    rules' plain values rather than model rows (three queries, however many accounts)."""
    pools = {pool.pk: pool for pool in Pool.objects.filter(team=team).select_related("team")}
    windows: dict[int, list[state.Window]] = {}
    for account_id, *values in QuotaWindow.objects.filter(account__pool__team=team).values_list(
        "account_id", *WINDOW_STATE_FIELDS
    ):
        windows.setdefault(account_id, []).append(
            state.Window(**dict(zip(WINDOW_STATE_FIELDS, values, strict=True)))
        )
    by_pool: dict[int, list[AccountWithVerdict]] = {pk: [] for pk in pools}
    accounts = Account.objects.filter(pool__team=team).only(*VERDICT_FIELDS)
    for account in accounts.order_by("pool_id", "priority", "label", "pk"):
        account.pool = pools[account.pool_id]
        snapshot = account.state_snapshot(windows=windows.get(account.pk, []))
        verdict = state.eligibility(snapshot, account.pool.policy, now)
        by_pool[account.pool_id].append(AccountWithVerdict(account, verdict))
    return [(pool, by_pool[pool.pk]) for pool in sorted(pools.values(), key=lambda p: p.name)]


STATUS_ORDER = {state.Status.EXCLUDED: 0, state.Status.DEGRADED: 1, state.Status.USABLE: 2}


def pool_account(pool: Pool, account_id: int) -> Account | None:
    """An account of this pool by id; None for an id of another pool or none at all."""
    return Account.objects.defer(*Account.SECRET_FIELDS).filter(pk=account_id, pool=pool).first()


def pool_rows(pool: Pool, *, now: datetime) -> list[AccountWithVerdict]:
    """A pool's accounts with verdicts, excluded first, then degraded, then usable."""
    rows = accounts_with_verdicts(Account.objects.filter(pool=pool), now=now)
    return sorted(rows, key=lambda r: (STATUS_ORDER[r.verdict.status], r.account.label.lower()))


# What eligibility, routing and the handed-out credential read; nothing else is loaded (every
# column costs parsing on the hottest path).
CHECKOUT_FIELDS = (
    "pool_id",
    "label",
    "kind",
    "enabled",
    "disabled_reason",
    "disabled_at",
    "priority",
    "last_used_at",
    "access_token",
    "api_key",
    "access_expires_at",
    "credential_version",  # the relay's: which credential a 401 answered
    "access_from_401",
    "refresh_token_fingerprint",
    "relogin_required_for",
    "refresh_backoff_until",
    "refresh_error_status",
    "refresh_error_kind",
    "refresh_error_message",
    "refresh_error_at",
    "quota_checked_at",
    "windows_observed_at",
    "quota_backoff_until",
    "quota_failures",
    "quota_error_message",
    "policy_status",
    "policy_message",
    "policy_since",
    "policy_checked_at",
    "cooldown_until",
    "cooldown_reason",
    "credential_unreadable_at",
)
_ACCOUNT = rawsql.Columns.of(Account, "a", CHECKOUT_FIELDS)
# The same row with its secrets left unread, for a row the configured keys cannot decrypt.
_ACCOUNT_UNREAD = rawsql.Columns.of(
    Account, "a", [f for f in CHECKOUT_FIELDS if f not in Account.SECRET_FIELDS]
)
_SECRET_COLUMNS = frozenset(
    i for i, f in enumerate(_ACCOUNT.fields) if f.name in Account.SECRET_FIELDS
)
WINDOW_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(state.Window))
_WINDOW = rawsql.Columns.of(QuotaWindow, "w", WINDOW_STATE_FIELDS)
_KEY = rawsql.Columns.of(ConsumerKey, "k")
_POOL = rawsql.Columns.of(Pool, "p")


M = TypeVar("M", bound=Model)

NO_LIMIT = 2**31 - 1  # LIMIT takes a number on every database


@dataclass(frozen=True)
class CheckoutCandidate:
    account: Account
    windows: list[state.Window]  # the rules' view, read straight from the row


@functools.cache  # by vendor too: identifiers are quoted the backend's way
def _candidates_sql(
    vendor: str, routing: str, *, skip: int, only: bool, limit: int | None, offset: int
) -> str:
    """The pool's accounts that the row alone cannot rule out for a checkout (enabled, no
    cooldown, and for OAuth a valid token, policy ok, no re-login), in the routing's order, one
    page of them, each joined with its windows (LEFT JOIN: one row per window).

    The page's bounds are written into the statement, not passed: checkout asks for a few fixed
    pages, and PostgreSQL plans a prepared statement once only when it can cost it without its
    values. With `LIMIT $1` it guessed a tenth of the pool and planned every run again, which
    cost more than running it."""
    a = _ACCOUNT
    page_row = dataclasses.replace(a, alias="c")  # the same columns, read from the page

    def order(columns: rawsql.Columns[Account]) -> str:
        first = [columns.col("priority")] if routing == Pool.Routing.PRIORITY else []
        return ", ".join(
            [*first, f"{columns.col('last_used_at')} ASC NULLS FIRST", columns.col("id")]
        )

    where = [
        f"{a.col('pool')} = %s",
        f"{a.col('enabled')} = %s",
        f"({a.col('cooldown_until')} IS NULL OR {a.col('cooldown_until')} <= %s)",
        f"(({a.col('kind')} = %s AND {a.col('access_expires_at')} > %s"
        f" AND {a.col('policy_status')} = %s"
        f" AND NOT ({a.col('relogin_required_for')} = {a.col('refresh_token_fingerprint')}))"
        f" OR {a.col('kind')} = %s)",
    ]
    if skip:
        where.append(f"{a.col('id')} NOT IN ({', '.join(['%s'] * skip)})")
    if only:
        where.append(f"{a.col('id')} = %s")
    page = (
        # Identifiers come from the models' metadata, quoted; every value is a parameter.
        f"SELECT {a.select()} FROM {a.table} WHERE {' AND '.join(where)}"  # noqa: S608
        f" ORDER BY {order(a)} LIMIT {NO_LIMIT if limit is None else int(limit)}"
        f" OFFSET {int(offset)}"
    )
    window = _WINDOW
    return (
        f"SELECT {page_row.select()}, {window.select()} FROM ({page}) c"  # noqa: S608
        f" LEFT JOIN {window.table} ON {window.col('account')} = {page_row.col('id')}"
        f" ORDER BY {order(page_row)}, {window.col('key')}"
    )


def _candidate(values: tuple[Any, ...], on: BaseDatabaseWrapper) -> Account:
    """A candidate account; when its secrets do not decrypt, with them left unread: checkout
    reads them only if it chooses it (credentials.checkout_credential), so one such row never
    fails its pool's checkout."""
    try:
        return _ACCOUNT.build(values, on)
    except SecretDecryptionError:
        kept = [v for i, v in enumerate(values) if i not in _SECRET_COLUMNS]
        return _ACCOUNT_UNREAD.build(kept, on)


def checkout_candidates(
    pool: Pool,
    *,
    now: datetime,
    limit: int | None = None,
    offset: int = 0,
    skip: set[int] | frozenset[int] = frozenset(),
    only: int | None = None,
) -> list[CheckoutCandidate]:
    """A page of checkout candidates with their windows, in the routing's order, in one query
    (written as SQL: rawsql). Their windows decide the rest (state.eligibility); `only` narrows
    to one account (a session's), `skip` leaves some out. The refresh token stays undecrypted."""
    on = rawsql.db()
    sql = _candidates_sql(
        on.vendor, pool.routing, skip=len(skip), only=only is not None, limit=limit, offset=offset
    )
    at = rawsql.param(now, on)
    params: list[object] = [pool.pk, True, at, Account.Kind.OAUTH.value, at]
    params += [state.PolicyStatus.OK.value, Account.Kind.API_KEY.value, *sorted(skip)]
    if only is not None:
        params.append(only)
    width = len(_ACCOUNT.fields)
    found: dict[int, CheckoutCandidate] = {}
    for row in rawsql.fetch(on, sql, params):
        account_id = row[0]
        candidate = found.get(account_id)
        if candidate is None:
            candidate = found[account_id] = CheckoutCandidate(_candidate(row[:width], on), [])
        if row[width] is not None:  # the window's id: None when the account has none
            values = _WINDOW.values(row[width:], on)
            candidate.windows.append(state.Window(**{f: values[f] for f in WINDOW_STATE_FIELDS}))
    return list(found.values())


@functools.cache
def _key_sql(vendor: str) -> str:
    return (
        # Identifiers come from the models' metadata, quoted; the hash is a parameter.
        f"SELECT {_KEY.select()}, {_POOL.select()} FROM {_KEY.table}"  # noqa: S608
        f" INNER JOIN {_POOL.table} ON {_POOL.col('id')} = {_KEY.col('pool')}"
        f" WHERE {_KEY.col('key_hash')} = %s AND {_KEY.col('revoked_at')} IS NULL"
    )


def _one_with_pool(columns: rawsql.Columns[M], sql: str, param: object) -> M | None:
    """The one row of `sql` as a `columns` instance with its pool (the row's last columns)."""
    on = rawsql.db()
    rows = rawsql.fetch(on, sql, [param])
    if not rows:
        return None
    width = len(columns.fields)
    found = columns.build(rows[0][:width], on)
    found.pool = _POOL.build(rows[0][width:], on)  # type: ignore[attr-defined]
    return found


def consumer_key_with_pool(key_hash: str) -> ConsumerKey | None:
    """The unrevoked key with this hash and its pool, in one query (every tool request)."""
    return _one_with_pool(_KEY, _key_sql(rawsql.db().vendor), key_hash)


@functools.cache
def key_unchanged_sql(vendor: str) -> str:
    """SELECT of the key's id while it is unrevoked and its pool row is as read (every column
    equal, a NULL to a NULL): the check a remembered key passes before a checkout leaves."""
    same = "IS NOT DISTINCT FROM" if vendor == "postgresql" else "IS"
    checks = [f"{_KEY.col('id')} = %s", f"{_KEY.col('revoked_at')} IS NULL"] + [
        f"{_POOL.col(f.name)} {same if f.null else '='} %s" for f in _POOL.fields
    ]
    return (
        # Identifiers come from the models' metadata, quoted; every value is a parameter.
        f"SELECT {_KEY.col('id')} FROM {_KEY.table}"  # noqa: S608
        f" INNER JOIN {_POOL.table} ON {_POOL.col('id')} = {_KEY.col('pool')}"
        f" WHERE {' AND '.join(checks)}"
    )


def key_unchanged_params(key: ConsumerKey, on: BaseDatabaseWrapper) -> list[Any]:
    pool = key.pool
    return [key.pk, *(f.get_db_prep_value(getattr(pool, f.attname), on) for f in _POOL.fields)]


def consumer_key_unchanged(key: ConsumerKey) -> bool:
    """Whether the key is still unrevoked and its pool as it was read (key_unchanged_sql)."""
    on = rawsql.db()
    return bool(rawsql.fetch(on, key_unchanged_sql(on.vendor), key_unchanged_params(key, on)))


_REFRESH_ACCOUNT = rawsql.Columns.of(Account, "a", exclude=("access_token", "api_key"))


@functools.cache
def _refresh_account_sql(vendor: str) -> str:
    a, p = _REFRESH_ACCOUNT, _POOL
    return (
        # Identifiers come from the models' metadata, quoted; the id is a parameter.
        f"SELECT {a.select()}, {p.select()} FROM {a.table}"  # noqa: S608
        f" INNER JOIN {p.table} ON {p.col('id')} = {a.col('pool')} WHERE {a.col('id')} = %s"
    )


def account_for_refresh(account_id: int) -> Account:
    """The account with its pool, in one query, the refresh token decrypted and the other
    secrets not read (every refresh starts here). Account.DoesNotExist when it is gone."""
    account = _one_with_pool(_REFRESH_ACCOUNT, _refresh_account_sql(rawsql.db().vendor), account_id)
    if account is None:
        raise Account.DoesNotExist(f"Account {account_id} does not exist.")
    return account
