"""Every non-trivial read: due accounts for the cycle, account lists with their verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import (
    DateTimeField,
    ExpressionWrapper,
    F,
    Max,
    Min,
    Q,
    QuerySet,
    Value,
)
from django.db.models.expressions import CombinedExpression

from . import state
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
VERDICT_FIELDS = ("pool_id", "label", "priority", *Account.STATE_FIELDS)


def team_verdicts(team: Team, *, now: datetime) -> list[tuple[Pool, list[AccountWithVerdict]]]:
    """team_overview's answer, cheaper: only the verdict's columns, and windows read as the
    rules' plain values rather than model rows (three queries, however many accounts)."""
    pools = {pool.pk: pool for pool in Pool.objects.filter(team=team).select_related("team")}
    windows: dict[int, list[state.Window]] = {}
    for account_id, *values in QuotaWindow.objects.filter(account__pool__team=team).values_list(
        "account_id", *QuotaWindow.STATE_FIELDS
    ):
        windows.setdefault(account_id, []).append(
            state.Window(**dict(zip(QuotaWindow.STATE_FIELDS, values, strict=True)))
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


def consumer_key_with_pool(key_hash: str) -> ConsumerKey | None:
    """The unrevoked key with this hash and its pool, in one query. Checkout reads the key in
    its own statement instead (checkout_sql.candidates)."""
    return (
        ConsumerKey.objects.select_related("pool")
        .filter(key_hash=key_hash, revoked_at__isnull=True)
        .first()
    )
