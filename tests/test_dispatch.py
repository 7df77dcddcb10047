"""The dispatchers select exactly the accounts the pure due-ness rules call due, and beat's
entries exist in the database for operators to see."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from accounts_pool import selectors, state
from accounts_pool.models import Account, AccountEvent, Checkout, OAuthLogin, PoolInvite
from accounts_pool.services.cycle import (
    dispatch_budget_left,
    dispatch_quota_checks,
    dispatch_tick_run,
    dispatch_token_refresh,
)
from accounts_pool.services.events import event_record, events_prune
from accounts_pool.services.invites import invite_create
from accounts_pool.services.keys import consumer_key_create
from accounts_pool.tasks import prune_events

from .conftest import NOW, make_account

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)

CASES = {
    "fresh": {},
    "expiring": {"access_expires_at": NOW + 3 * HOUR},
    "expired": {"access_expires_at": NOW - HOUR},
    "no access token": {"access_expires_at": None, "access_token": ""},
    "backing off": {"access_expires_at": NOW - HOUR, "refresh_backoff_until": NOW + MIN},
    "claimed": {"access_expires_at": NOW - HOUR, "refresh_claimed_until": NOW + MIN},
    "disabled": {"access_expires_at": NOW - HOUR, "enabled": False},
    "quota stale": {"quota_checked_at": NOW - 6 * MIN},
    "quota never": {"quota_checked_at": None},
    "quota backoff": {"quota_checked_at": None, "quota_backoff_until": NOW + MIN},
    "blocked recently": {
        "policy_status": "blocked",
        "policy_checked_at": NOW - 10 * MIN,
        "quota_checked_at": None,
    },
    "blocked long ago": {"policy_status": "blocked", "policy_checked_at": NOW - 31 * MIN},
    "api key": {"kind": "api_key", "access_expires_at": None, "quota_checked_at": None},
}


@pytest.fixture
def accounts(pool):
    made = {label: make_account(pool, label=label, **fields) for label, fields in CASES.items()}
    needs_relogin = make_account(pool, label="needs relogin", access_expires_at=NOW - HOUR)
    needs_relogin.relogin_required_for = needs_relogin.refresh_token_fingerprint
    needs_relogin.save()
    made["needs relogin"] = needs_relogin
    return made


def _expected(accounts, rule):
    return sorted(
        label
        for label, account in accounts.items()
        if rule(account.state_snapshot(windows=[]), account.pool.policy, NOW)
        and not (account.refresh_claimed_until and account.refresh_claimed_until > NOW)
    )


def _labels(accounts, ids):
    by_id = {a.pk: label for label, a in accounts.items()}
    return sorted(by_id[i] for i in ids)


def test_the_refresh_query_agrees_with_the_pure_rule(accounts):
    ids = selectors.accounts_due_for_refresh(now=NOW, limit=100)
    assert _labels(accounts, ids) == _expected(accounts, state.refresh_due)
    assert _labels(accounts, ids) == ["expired", "expiring", "no access token"]


def test_the_quota_query_agrees_with_the_pure_rule(accounts):
    ids = selectors.accounts_due_for_quota(now=NOW, limit=100)
    assert _labels(accounts, ids) == _expected(accounts, state.quota_due)
    assert _labels(accounts, ids) == ["blocked long ago", "quota never", "quota stale"]


def test_a_pool_with_a_longer_lead_refreshes_earlier(pool, team):
    from accounts_pool.models import Pool

    eager = Pool.objects.create(team=team, name="Eager", slug="eager", refresh_lead=6 * HOUR)
    lazy = make_account(pool, label="lazy", access_expires_at=NOW + 5 * HOUR)
    early = make_account(eager, label="early", access_expires_at=NOW + 5 * HOUR)
    assert selectors.accounts_due_for_refresh(now=NOW, limit=10) == [early.pk]
    assert lazy.pk not in selectors.accounts_due_for_quota(now=NOW, limit=10)


def test_dispatch_enqueues_each_due_account_once_in_a_bounded_batch(pool, settings):
    settings.ACCOUNTS_POOL_DISPATCH_BATCH = 3
    for n in range(5):
        make_account(pool, label=f"a{n}", access_expires_at=NOW - n * MIN, quota_checked_at=None)
    enqueued: list[int] = []
    assert dispatch_token_refresh(enqueue=enqueued.append, now=NOW) == 3
    assert len(set(enqueued)) == 3
    assert dispatch_quota_checks(enqueue=enqueued.append, now=NOW) == 0  # tokens expired


def test_beat_entries_are_in_the_database(db):
    tasks = dict(PeriodicTask.objects.values_list("task", "enabled"))
    assert tasks == {
        "accounts_pool.dispatch_token_refresh": True,
        "accounts_pool.dispatch_quota_checks": True,
        "accounts_pool.prune_events": True,
        "accounts_pool.verify_secrets": True,
        "accounts_pool.notify_tick": True,
        "accounts_pool.notify_digest": True,
    }
    prune = PeriodicTask.objects.get(task="accounts_pool.prune_events")
    assert prune.crontab is not None
    assert prune.interval is None
    dispatch = PeriodicTask.objects.get(task="accounts_pool.dispatch_token_refresh")
    assert (dispatch.interval.every, dispatch.interval.period) == (1, "minutes")


def test_prune_drops_history_older_than_the_retention(account):
    old = event_record(
        account_id=account.pk,
        at=NOW - timedelta(days=31),
        operation=state.Operation.ADMIN,
        outcome="disabled",
    )
    kept = event_record(
        account_id=account.pk,
        at=NOW - timedelta(days=29),
        operation=state.Operation.ADMIN,
        outcome="enabled",
    )
    assert events_prune(now=NOW, older_than=timedelta(days=30)) == 1
    assert list(AccountEvent.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not AccountEvent.objects.filter(pk=old.pk).exists()


def test_the_daily_prune_drops_checkouts_past_their_retention(account, alice, settings):
    """Every tool request writes a checkout; only recent ones are read (reports, sessions)."""
    settings.ACCOUNTS_POOL_CHECKOUT_RETENTION_DAYS = 7
    key, _ = consumer_key_create(pool=account.pool, name="laptop", created_by=alice)
    now = timezone.now()
    ages = {"old": timedelta(days=8), "recent": timedelta(days=6)}
    made = {
        name: Checkout.objects.create(
            id=uuid.uuid4(), account=account, consumer_key=key, at=now - age
        )
        for name, age in ages.items()
    }
    # Run as a task (eagerly, inside this test's transaction): the connection survives it.
    assert prune_events.apply().get() == 1
    assert list(Checkout.objects.values_list("pk", flat=True)) == [made["recent"].pk]


def test_a_queued_account_is_not_queued_again_by_the_next_tick(pool):
    make_account(pool, label="due", access_expires_at=NOW - MIN, quota_checked_at=None)
    first: list[int] = []
    second: list[int] = []
    assert dispatch_token_refresh(enqueue=first.append, now=NOW) == 1
    assert dispatch_token_refresh(enqueue=second.append, now=NOW + MIN) == 0
    later: list[int] = []  # a task lost with its worker is queued again once the mark lapses
    assert dispatch_token_refresh(enqueue=later.append, now=NOW + 3 * MIN) == 1


def test_a_full_dispatcher_run_hands_the_rest_of_the_tick_on(settings):
    settings.ACCOUNTS_POOL_DISPATCH_BATCH = 120
    assert dispatch_budget_left(budget=None, asked=50, dispatched=50) == 70
    assert dispatch_budget_left(budget=70, asked=50, dispatched=50) == 20
    assert dispatch_budget_left(budget=20, asked=20, dispatched=20) == 0  # the tick is spent
    assert dispatch_budget_left(budget=None, asked=50, dispatched=49) == 0  # nothing more due


def test_dispatch_takes_at_most_its_limit_and_the_next_run_takes_the_rest(pool):
    for n in range(5):
        make_account(pool, label=f"a{n}", access_expires_at=NOW - n * MIN, quota_checked_at=None)
    first: list[int] = []
    second: list[int] = []
    assert dispatch_token_refresh(enqueue=first.append, now=NOW, limit=3) == 3
    assert dispatch_token_refresh(enqueue=second.append, now=NOW, limit=3) == 2
    assert sorted(first + second) == sorted(Account.objects.values_list("pk", flat=True))


def test_a_tick_queues_chunks_until_its_budget_is_spent(pool, settings):
    settings.ACCOUNTS_POOL_DISPATCH_BATCH = 4
    settings.ACCOUNTS_POOL_DISPATCH_CHUNK = 3
    for n in range(10):
        make_account(pool, label=f"a{n}", access_expires_at=NOW - n * MIN, quota_checked_at=None)
    queued: list[int] = []
    runs: list[int | None] = [None]
    while runs:
        budget = runs.pop()
        dispatch_tick_run(
            dispatch_token_refresh,
            enqueue=queued.append,
            continue_with=runs.append,
            budget=budget,
            now=NOW,
        )
    assert len(queued) == len(set(queued)) == 4  # 3, then the tick's last 1


def test_the_daily_prune_drops_logins_and_invites_a_day_past_their_expiry(pool, alice):
    """Every login keeps an encrypted PKCE verifier, every invite a hash: none lives for ever."""
    now = timezone.now()
    for age in (timedelta(days=2), timedelta(hours=1)):
        started = now - age
        OAuthLogin.objects.create(
            pool=pool,
            session_hash=f"s{age}",
            state="x",
            verifier="v",
            created_by=alice,
            created_at=started,
            expires_at=started + timedelta(minutes=10),
        )
        invite_create(pool=pool, user=alice, now=started - timedelta(days=1))
    assert prune_events.apply().get() == 2
    (left,) = OAuthLogin.objects.values_list("expires_at", flat=True)
    assert left > now - timedelta(days=1)
    assert PoolInvite.objects.get().expires_at > now - timedelta(days=1)
