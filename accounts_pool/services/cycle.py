"""The refresh cycle: dispatch due accounts (Celery) or run them in-process (the command)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import selectors
from ..models import Account, Pool
from .quota import QuotaResult, account_check_quota
from .refresh import RefreshResult, account_refresh


def _batch() -> int:
    return int(settings.ACCOUNTS_POOL_DISPATCH_BATCH)


def dispatch_chunk() -> int:
    return int(settings.ACCOUNTS_POOL_DISPATCH_CHUNK)


def _hold() -> timedelta:
    return timedelta(seconds=settings.ACCOUNTS_POOL_CLAIM_SECONDS)


def dispatch_budget_left(*, budget: int | None, asked: int, dispatched: int) -> int:
    """How many more accounts this tick may still queue after a dispatcher run that asked for
    `asked` and got `dispatched`: none once a run comes back short (nothing more is due) or
    the tick's budget (ACCOUNTS_POOL_DISPATCH_BATCH) is spent."""
    total = _batch() if budget is None else budget
    return total - dispatched if dispatched >= asked and total > dispatched else 0


def dispatch_tick_run(
    dispatch: Callable[..., int],
    *,
    enqueue: Callable[[int], object],
    continue_with: Callable[[int], object],
    budget: int | None = None,
    now: datetime | None = None,
) -> int:
    """One dispatcher run of a beat tick: `dispatch` queues one chunk; when the chunk was full
    and the tick's budget (default ACCOUNTS_POOL_DISPATCH_BATCH) is not spent, the rest goes to
    `continue_with` (the next run, on any worker). No run grows with the number due."""
    asked = min(dispatch_chunk(), _batch() if budget is None else budget)
    dispatched = dispatch(enqueue=enqueue, now=now, limit=asked)
    left = dispatch_budget_left(budget=budget, asked=asked, dispatched=dispatched)
    if left:
        continue_with(left)
    return dispatched


def _dispatch(
    select: Callable[..., list[int]],
    mark: str,
    *,
    enqueue: Callable[[int], object],
    now: datetime | None,
    limit: int | None,
) -> int:
    """Claim up to `limit` due accounts and enqueue one task each. The rows are locked while
    they are marked as queued, and rows locked by a concurrent dispatcher are skipped, so two
    dispatchers never queue the same account. The marks commit before anything is queued; a
    task lost after that is queued again once its mark lapses."""
    now = now or timezone.now()
    with transaction.atomic():
        ids = select(now=now, limit=limit or _batch(), lock=True)
        Account.objects.filter(pk__in=ids).update(**{mark: now + _hold()})
    for account_id in ids:
        enqueue(account_id)
    return len(ids)


def dispatch_token_refresh(
    *, enqueue: Callable[[int], object], now: datetime | None = None, limit: int | None = None
) -> int:
    """Enqueue one refresh per due account, at most `limit` (default: the tick's batch);
    returns how many. Each is marked as queued, so the next tick does not queue it again while
    it waits for a worker."""
    return _dispatch(
        selectors.accounts_due_for_refresh,
        "refresh_dispatched_until",
        enqueue=enqueue,
        now=now,
        limit=limit,
    )


def dispatch_quota_checks(
    *, enqueue: Callable[[int], object], now: datetime | None = None, limit: int | None = None
) -> int:
    """Enqueue one quota check per due account, at most `limit` (marked like refreshes)."""
    return _dispatch(
        selectors.accounts_due_for_quota,
        "quota_dispatched_until",
        enqueue=enqueue,
        now=now,
        limit=limit,
    )


def cycle_run(
    *,
    now: datetime | None = None,
    pool: Pool | None = None,
    account_id: int | None = None,
    force: bool = False,
) -> Iterator[RefreshResult | QuotaResult]:
    """One token pass, then one quota pass, in this process (no broker). Yields each result.

    With `force` and an account, that account is refreshed and checked whether due or not.
    `now` is for tests; without it each account's work reads the clock as it goes, so a slow
    pass never writes backoffs and claims that have already run out."""
    selected_at = now or timezone.now()
    if force and account_id is not None:
        refresh_ids = [account_id]
    else:
        refresh_ids = selectors.accounts_due_for_refresh(
            now=selected_at, limit=_batch(), pool=pool, account_id=account_id
        )
    for refresh_id in refresh_ids:
        yield account_refresh(account_id=refresh_id, now=now, force=force)
    if force and account_id is not None:
        quota_ids = [account_id]
    else:
        quota_ids = selectors.accounts_due_for_quota(
            now=now or timezone.now(), limit=_batch(), pool=pool, account_id=account_id
        )
    for quota_id in quota_ids:
        yield account_check_quota(account_id=quota_id, now=now, force=force)
