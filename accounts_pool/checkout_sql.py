"""The one place where SQL is written by hand: checkout's two statements.

- `candidates`: the presented consumer key (unrevoked), its pool, and one page of that pool's
  accounts that the row alone cannot rule out, each with its quota windows, in the routing's
  order: one statement per page, read fresh on every request (a revoked key or a changed pool
  holds from the next request on; nothing is cached).
- `record`: on PostgreSQL the checkout row and the account's last use are written as one
  statement whose commit does not wait for the disk (both may be lost in a crash without
  harm): one round trip instead of five on every tool request.

Everything else reads and writes through the ORM. Columns come from the models' metadata and
constants, so there is no field list to keep in step: of an account, only what checkout uses
(the rules' STATE_FIELDS, ROUTING_FIELDS, HANDOUT_FIELDS, the credential), the rest deferred,
and tests/test_checkout_columns.py fails when a checkout reads one of those. Values are
converted as the ORM converts them, except the credential's ciphertext, which stays sealed until
`Candidate.unseal` (only the account handed out is decrypted). Each statement runs on a
cursor of its own.

The prefilter (`_prefilter`) repeats only rules that exclude in `state.eligibility`; the
property test in tests/test_checkout_prefilter.py holds it to that.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

from . import state
from .crypto import decrypt
from .models import Account, Checkout, ConsumerKey, Pool, QuotaWindow

NO_LIMIT = 2**31 - 1  # LIMIT takes a number on every database

# The account's credential columns read sealed; the refresh token is never read here.
SEALED = ("access_token", "api_key")


@dataclass(frozen=True, eq=False)  # hashed by identity: _converting's cache hashes no Field
class Part:
    """Some columns of one model under a table alias, and how their values become Python."""

    model: type[Model]
    alias: str
    fields: tuple[Field[Any, Any], ...]

    @classmethod
    def of(
        cls, model: type[Model], alias: str, *, only: Sequence[str] = (), skip: Sequence[str] = ()
    ) -> Part:
        names = {f.name for f in model._meta.concrete_fields}
        assert names.issuperset(only), f"not columns of {model.__name__}: {set(only) - names}"
        fields = tuple(
            f
            for f in model._meta.concrete_fields
            if (not only or f.name in only or f.primary_key) and f.name not in skip
        )
        return cls(model, alias, fields)

    def position(self, name: str) -> int:
        return [f.name for f in self.fields].index(name)

    def column(self, name: str) -> str:
        field = self.model._meta.get_field(name)
        assert isinstance(field, Field)
        assert field.column
        return field.column

    def col(self, name: str) -> str:
        """alias.column of a field, quoted."""
        return f"{self.alias}.{connection.ops.quote_name(self.column(name))}"

    @property
    def table(self) -> str:
        return f"{connection.ops.quote_name(self.model._meta.db_table)} {self.alias}"

    def select(self, prefix: str = "") -> str:
        """The columns, each named `<prefix><position>` when a prefix is given."""
        return ", ".join(
            f"{self.alias}.{connection.ops.quote_name(f.column)}"
            + (f" AS {prefix}{n}" if prefix else "")
            for n, f in enumerate(self.fields)
        )

    def values(self, row: Sequence[Any], on: BaseDatabaseWrapper) -> dict[str, Any]:
        """This part of a row by attribute name, converted as the ORM converts it."""
        values = dict(zip(self.attnames, row, strict=True))
        for position, attname, converters in _converting(self, on.vendor):
            values[attname] = _convert(row[position], converters, on)
        return values

    @functools.cached_property
    def attnames(self) -> tuple[str, ...]:
        return tuple(f.attname for f in self.fields)

    def build(self, row: Sequence[Any], on: BaseDatabaseWrapper) -> Any:
        """A model instance from this part of a row; columns not read are deferred."""
        values = self.values(row, on)
        return self.model.from_db(on.alias, list(values), list(values.values()))


@functools.cache
def _converting(part: Part, vendor: str) -> list[tuple[int, str, list[tuple[Any, Any]]]]:
    """The columns the ORM converts (PostgreSQL's driver returns most values ready): position,
    attribute name, and the converters (the backend's, then the field's) with the expression
    each takes. Sealed columns are left out: their ciphertext is kept."""
    out = []
    for position, field in enumerate(part.fields):
        if field.name in SEALED and part.model is Account:
            continue
        expression = field.get_col(part.model._meta.db_table)
        functions = [*connection.ops.get_db_converters(expression)]
        # Field.get_db_converters is not in django-stubs.
        functions += field.get_db_converters(connection)  # type: ignore[attr-defined]
        if functions:
            out.append((position, field.attname, [(fn, expression) for fn in functions]))
    return out


def _convert(value: Any, converters: list[tuple[Any, Any]], on: BaseDatabaseWrapper) -> Any:
    for function, expression in converters:
        value = function(value, expression, on)
    return value


# The key as checkout, its limits and the relay read it (revoked_at is NULL: the WHERE says so).
KEY = Part.of(ConsumerKey, "k", skip=("created_at", "created_by", "revoked_at"))
# Of the key's pool: its slug (the URL's, the relay's messages), routing and the rules' policy.
POOL = Part.of(Pool, "p", only=("slug", "routing", *Pool.POLICY_FIELDS))
# Of an account, what checkout reads: the rules' columns, the routing's, what is read of the
# account handed out, and the sealed credential. The rest are deferred (never the refresh token).
ACCOUNT = Part.of(
    Account,
    "a",
    only=(*Account.STATE_FIELDS, *Account.ROUTING_FIELDS, *Account.HANDOUT_FIELDS, *SEALED),
)
WINDOW = Part.of(QuotaWindow, "w", only=QuotaWindow.STATE_FIELDS)
CHECKOUT = Part.of(Checkout, "o")


@dataclass
class Candidate:
    """An account the prefilter let through: the model (credential columns deferred), its
    windows as the rules read them, and its credential still sealed."""

    account: Account
    windows: list[state.Window]
    sealed: dict[str, str] = dataclasses.field(repr=False)

    def snapshot(self) -> state.AccountState:
        return self.account.state_snapshot(windows=self.windows)

    def unseal(self) -> Account:
        """The account with its credential decrypted (only the one handed out)."""
        for name, ciphertext in self.sealed.items():
            setattr(self.account, name, decrypt(ciphertext) if ciphertext else "")
        return self.account


@dataclass(frozen=True)
class Page:
    """The key with its pool (None: no such unrevoked key) and a page of candidates."""

    key: ConsumerKey | None
    candidates: list[Candidate]


def _prefilter(a: Part, pool: str) -> list[str]:
    """What the row alone rules out, each rule one that state.eligibility excludes on:
    disabled, cooling down, and for OAuth an expired token, a policy block, or a re-login
    needed for the current refresh token (an empty fingerprint needs none). Its values are
    _prefilter_params', in the placeholders' order."""
    where = [
        f"{a.col('pool')} = {pool}",
        f"{a.col('enabled')} = %s",
        f"({a.col('cooldown_until')} IS NULL OR {a.col('cooldown_until')} <= %s)",
        f"({a.col('kind')} <> %s OR ({a.col('access_expires_at')} > %s"
        f" AND {a.col('policy_status')} = %s"
        f" AND ({a.col('relogin_required_for')} = ''"
        f" OR {a.col('relogin_required_for')} <> {a.col('refresh_token_fingerprint')})))",
    ]
    return where


def _prefilter_params(at: Any) -> list[Any]:
    """_prefilter's values; `at` is now as the database driver takes it."""
    return [True, at, Account.Kind.OAUTH.value, at, state.PolicyStatus.OK.value]


@functools.cache  # by vendor too: identifiers are quoted the backend's way
def _candidates_sql(
    vendor: str, *, skip: int, session: bool, limit: int | None, offset: int
) -> str:
    """The key and its pool (one row even when no account passes), LEFT JOINed with one page
    of candidates in the routing's order, each LEFT JOINed with its windows.

    The page's bounds are written into the statement, not passed: checkout asks for a few
    fixed pages, and PostgreSQL plans a prepared statement once only when it can cost it
    without its values."""
    a, k, p, w = ACCOUNT, KEY, POOL, WINDOW
    where = _prefilter(a, f"(SELECT p{POOL.position('id')} FROM kp)")  # noqa: S608 (a column position)
    if skip:
        where.append(f"{a.col('id')} NOT IN ({', '.join(['%s'] * skip)})")
    if session:  # the account of the session's latest checkout (checkout_session_idx, 1 row)
        o = CHECKOUT
        where.append(
            f"{a.col('id')} = (SELECT {o.col('account')} FROM {o.table}"  # noqa: S608
            f" WHERE {o.col('consumer_key')} = (SELECT k{KEY.position('id')} FROM kp)"
            f" AND {o.col('session_hash')} = %s ORDER BY {o.col('at')} DESC LIMIT 1)"
        )
    routing = f"(SELECT p{POOL.position('routing')} FROM kp)"  # noqa: S608 (a column position)
    priority = Pool.Routing.PRIORITY.value

    def order(part: Part) -> str:
        # Priority routing: priority, then least recently used; the others: least recently
        # used (balanced reads every candidate and orders them itself).
        return (
            f"CASE WHEN {routing} = '{priority}' THEN {part.col('priority')} ELSE 0 END,"
            f" {part.col('last_used_at')} ASC NULLS FIRST, {part.col('id')}"
        )

    page_row = dataclasses.replace(a, alias="c")
    limit_sql = NO_LIMIT if limit is None else int(limit)
    # Identifiers come from the models' metadata, quoted; every value is a parameter.
    return (
        f"WITH kp AS (SELECT {p.select('p')}, {k.select('k')} FROM {k.table}"  # noqa: S608
        f" INNER JOIN {p.table} ON {p.col('id')} = {k.col('pool')}"
        f" WHERE {k.col('key_hash')} = %s AND {k.col('revoked_at')} IS NULL)"
        f" SELECT kp.*, {page_row.select()}, {w.select()} FROM kp"
        f" LEFT JOIN (SELECT {a.select()} FROM {a.table} WHERE {' AND '.join(where)}"
        f" ORDER BY {order(a)} LIMIT {limit_sql} OFFSET {int(offset)}) c ON 1 = 1"
        f" LEFT JOIN {w.table} ON {w.col('account')} = {page_row.col('id')}"
        f" ORDER BY {order(page_row)}, {w.col('key')}"
    )


def candidates(
    key_hash: str,
    *,
    now: datetime,
    limit: int | None = None,
    offset: int = 0,
    skip: set[int] | frozenset[int] = frozenset(),
    session_hash: str = "",
) -> Page:
    """The unrevoked key with this hash and its pool, and a page of the pool's checkout
    candidates with their windows, in the routing's order, in one statement. `session_hash`
    narrows it to the account of that session's latest checkout with this key; `skip` leaves
    some out."""
    on = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: each use of the proxy looks it up
    sql = _candidates_sql(
        on.vendor,
        skip=len(skip),
        session=bool(session_hash),
        limit=limit,
        offset=offset,
    )
    at = on.ops.adapt_datetimefield_value(now)
    params: list[Any] = [key_hash, *_prefilter_params(at), *sorted(skip)]
    if session_hash:
        params.append(session_hash)
    with on.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return _page(rows, on)


def _page(rows: list[tuple[Any, ...]], on: BaseDatabaseWrapper) -> Page:
    if not rows:
        return Page(None, [])
    widths = [len(part.fields) for part in (POOL, KEY, ACCOUNT)]
    pool_end, key_end, account_end = (sum(widths[: n + 1]) for n in range(3))
    pool = POOL.build(rows[0][:pool_end], on)
    key = KEY.build(rows[0][pool_end:key_end], on)
    key.pool = pool
    found: dict[int, Candidate] = {}
    for row in rows:
        account_row = row[key_end:account_end]
        if account_row[0] is None:  # the key alone: no account passed
            continue
        candidate = found.get(account_row[0])
        if candidate is None:
            candidate = found[account_row[0]] = _candidate(account_row, pool, on)
        if row[account_end] is not None:  # the window's id: None when the account has none
            values = WINDOW.values(row[account_end:], on)
            candidate.windows.append(
                state.Window(**{f: values[f] for f in QuotaWindow.STATE_FIELDS})
            )
    return Page(key, list(found.values()))


def _candidate(row: Sequence[Any], pool: Pool, on: BaseDatabaseWrapper) -> Candidate:
    values = ACCOUNT.values(row, on)
    sealed = {name: values.pop(name) or "" for name in SEALED}
    account = Account.from_db(on.alias, list(values), list(values.values()))
    account.pool = pool
    return Candidate(account, [], sealed)


@functools.cache
def _record_sql() -> str:
    """PostgreSQL only: set_config(..., true) lasts to the end of the statement's own
    transaction, commit included."""
    a, c = ACCOUNT, CHECKOUT
    q = connection.ops.quote_name
    columns = ", ".join(q(f.column) for f in c.fields)
    return (
        # Identifiers come from the models' metadata, quoted; every value is a parameter.
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),"  # noqa: S608
        f" touched AS (UPDATE {q(Account._meta.db_table)} SET {q(a.column('last_used_at'))} = %s"
        f" WHERE {q(a.column('id'))} = %s)"
        f" INSERT INTO {q(Checkout._meta.db_table)} ({columns})"
        f" SELECT {', '.join(['%s'] * len(c.fields))} FROM relaxed"
    )


def record(checkout: Checkout) -> None:
    """Write the checkout and its account's last use together, without waiting for the disk
    (PostgreSQL only; SQLite takes the ORM's two writes in a transaction)."""
    on = connections[DEFAULT_DB_ALIAS]
    assert on.vendor == "postgresql"
    when = on.ops.adapt_datetimefield_value(checkout.at)
    values = [f.get_db_prep_save(getattr(checkout, f.attname), on) for f in CHECKOUT.fields]
    with on.cursor() as cursor:
        cursor.execute(_record_sql(), [when, checkout.account_id, *values])
