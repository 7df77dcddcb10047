"""Celery tasks: ids in, one service call out."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import metrics
from .services.checkout import checkouts_prune
from .services.cycle import dispatch_quota_checks, dispatch_tick_run, dispatch_token_refresh
from .services.events import events_prune
from .services.limits import limit_events_prune
from .services.notifications import (
    deliveries_due,
    deliveries_prune,
    delivery_attempt,
    digests_queue,
    notifications_evaluate,
)
from .services.quota import account_check_quota
from .services.quota_history import quota_points_prune
from .services.refresh import account_refresh


@shared_task(name="accounts_pool.refresh_account")
def refresh_account(account_id: int) -> str:
    return account_refresh(account_id=account_id).outcome


@shared_task(name="accounts_pool.check_account_quota")
def check_account_quota(account_id: int, force: bool = False) -> str:
    return account_check_quota(account_id=account_id, force=force).outcome


def enqueue_refresh(account_id: int) -> None:
    """Queue a refresh once the current transaction commits."""
    transaction.on_commit(lambda: refresh_account.delay(account_id))


def enqueue_quota_check(account_id: int, *, force: bool = False) -> None:
    transaction.on_commit(lambda: check_account_quota.delay(account_id, force=force))


@shared_task(name="accounts_pool.dispatch_token_refresh")
def dispatch_token_refresh_task(budget: int | None = None) -> int:
    """Beat's tick, and its chained runs: one chunk of due refreshes each."""
    with metrics.CYCLE_SECONDS.labels("dispatch_token_refresh").time():
        return dispatch_tick_run(
            dispatch_token_refresh,
            enqueue=refresh_account.delay,
            continue_with=dispatch_token_refresh_task.delay,
            budget=budget,
        )


@shared_task(name="accounts_pool.dispatch_quota_checks")
def dispatch_quota_checks_task(budget: int | None = None) -> int:
    """Beat's tick for quota checks, in chunks like the refreshes."""
    with metrics.CYCLE_SECONDS.labels("dispatch_quota_checks").time():
        return dispatch_tick_run(
            dispatch_quota_checks,
            enqueue=check_account_quota.delay,
            continue_with=dispatch_quota_checks_task.delay,
            budget=budget,
        )


@shared_task(name="accounts_pool.prune_events")
def prune_events() -> int:
    """Daily: account history, key limit refusals and finished deliveries past the history's
    retention, checkouts past theirs, and quota history past its own."""
    now = timezone.now()
    events = timedelta(days=settings.ACCOUNTS_POOL_EVENT_RETENTION_DAYS)
    checkouts = timedelta(days=settings.ACCOUNTS_POOL_CHECKOUT_RETENTION_DAYS)
    points = timedelta(days=settings.QUOTA_HISTORY_RETENTION_DAYS)
    return (
        events_prune(now=now, older_than=events)
        + checkouts_prune(now=now, older_than=checkouts)
        + deliveries_prune(now=now, older_than=events)
        + quota_points_prune(now=now, older_than=points)
        + limit_events_prune(now=now, older_than=events)
    )


@shared_task(name="accounts_pool.deliver_notification")
def deliver_notification(delivery_id: str) -> str:
    return delivery_attempt(delivery_id=delivery_id).value


@shared_task(name="accounts_pool.notify_tick")
def notify_tick() -> int:
    """Beat's tick for notifications: queue the retries that are due, then turn this tick's
    changes of condition into messages (queued as they commit)."""
    with metrics.CYCLE_SECONDS.labels("notify_tick").time():
        for delivery_id in deliveries_due(now=timezone.now()):
            deliver_notification.delay(str(delivery_id))
        return notifications_evaluate(enqueue=deliver_notification.delay)


@shared_task(name="accounts_pool.notify_digest")
def notify_digest() -> int:
    """Daily: the summary email of every channel that asked for one."""
    return digests_queue(enqueue=deliver_notification.delay)
