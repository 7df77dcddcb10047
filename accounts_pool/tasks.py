"""Celery tasks: ids in, one service call out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import metrics
from .services.checkout import checkouts_prune
from .services.cycle import dispatch_quota_checks, dispatch_tick_run, dispatch_token_refresh
from .services.events import events_prune
from .services.invites import invites_prune
from .services.limits import limit_events_prune
from .services.notifications import (
    deliveries_due,
    deliveries_prune,
    delivery_attempt,
    digests_queue,
    notifications_evaluate,
)
from .services.onboarding.pkce import logins_prune
from .services.quota import account_check_quota
from .services.quota_history import quota_points_prune
from .services.reencrypt import secrets_verify
from .services.refresh import account_refresh

logger = logging.getLogger(__name__)


@shared_task(name="accounts_pool.refresh_account")
def refresh_account(account_id: int, version: int | None = None) -> str:
    """The cycle's refresh of a due account; with `version`, a 401 report's: it replaces only
    that credential version (once), and the new token is marked as asked for by a 401."""
    if version is None:
        return account_refresh(account_id=account_id).outcome
    return account_refresh(account_id=account_id, only_version=version, asked_by_401=True).outcome


@shared_task(name="accounts_pool.check_account_quota")
def check_account_quota(account_id: int, force: bool = False) -> str:
    return account_check_quota(account_id=account_id, force=force).outcome


def _publish(send: Callable[[], object], what: str, account_id: int) -> bool:
    """Send one task; a broker that refuses it (down, unreachable) is logged, not raised: what
    asked for it is already recorded, and the cycle picks the account up once the broker is
    back (an expired token is due; a queued mark lapses)."""
    try:
        send()
    except Exception as exc:
        logger.warning(
            "account=%s %s not queued (broker: %s); the cycle will pick it up",
            account_id,
            what,
            type(exc).__name__,
        )
        metrics.PUBLISH_FAILURES.labels(what).inc()
        return False
    return True


def enqueue_refresh(account_id: int, *, version: int | None = None) -> bool:
    """Queue a refresh once the current transaction commits (at once outside one). False when
    the broker refused it then: the caller says the cycle will take it instead."""
    sent = [True]

    def send() -> None:
        sent[0] = _publish(
            lambda: refresh_account.delay(account_id, version), "refresh", account_id
        )

    transaction.on_commit(send)
    return sent[0]


def enqueue_quota_check(account_id: int, *, force: bool = False) -> bool:
    """As enqueue_refresh, for a quota check."""
    sent = [True]

    def send() -> None:
        sent[0] = _publish(
            lambda: check_account_quota.delay(account_id, force=force), "quota_check", account_id
        )

    transaction.on_commit(send)
    return sent[0]


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
    retention, checkouts past theirs, quota history past its own, and logins and invite links a
    day (ACCOUNTS_POOL_LOGIN_RETENTION_DAYS) past their expiry."""
    now = timezone.now()
    events = timedelta(days=settings.ACCOUNTS_POOL_EVENT_RETENTION_DAYS)
    checkouts = timedelta(days=settings.ACCOUNTS_POOL_CHECKOUT_RETENTION_DAYS)
    points = timedelta(days=settings.QUOTA_HISTORY_RETENTION_DAYS)
    logins = timedelta(days=settings.ACCOUNTS_POOL_LOGIN_RETENTION_DAYS)
    return (
        events_prune(now=now, older_than=events)
        + checkouts_prune(now=now, older_than=checkouts)
        + deliveries_prune(now=now, older_than=events)
        + quota_points_prune(now=now, older_than=points)
        + limit_events_prune(now=now, older_than=events)
        + logins_prune(now=now, older_than=logins)
        + invites_prune(now=now, older_than=logins)
    )


@shared_task(name="accounts_pool.verify_secrets")
def verify_secrets() -> int:
    """Daily: find accounts whose stored secrets no configured key decrypts (marked, so they
    are excluded with that reason and /healthz counts them), and clear those that read again."""
    return secrets_verify(now=timezone.now())


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
