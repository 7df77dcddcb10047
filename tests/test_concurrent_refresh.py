"""Single-flight refresh (DESIGN.md 3.4): many callers at once, one token call.

Runs on the configured database: PostgreSQL in CI (.ci/run), SQLite on a bare machine."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from accounts_pool.models import Account
from accounts_pool.services.cycle import dispatch_token_refresh
from accounts_pool.services.refresh import account_refresh

from .conftest import REFRESH, make_account, token_answer

CALLERS = 8


def _single_use_token_endpoint(provider):
    """Like the real endpoint: the first use of a refresh token rotates it, a reuse is dead."""
    used: set[str] = set()
    lock = threading.Lock()

    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["refresh_token"]
        with lock:
            reused = sent in used
            used.add(sent)
        time.sleep(0.3)  # keep the winner in flight while the others arrive
        if reused:
            return httpx.Response(400, json={"error": "invalid_grant"})
        return httpx.Response(200, json=token_answer(access="sk-ant-oat01-winner"))

    provider.token.side_effect = answer


def _at_once(work: Callable[[], None]) -> None:
    """Run `work` on CALLERS threads released together, each with its own connection."""
    barrier = threading.Barrier(CALLERS)

    def caller() -> None:
        try:
            barrier.wait()
            work()
        finally:
            connection.close()

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


def _run_at_once(account_id: int) -> list:
    results: list = []
    _at_once(
        lambda: results.append(
            account_refresh(account_id=account_id, now=timezone.now(), wait=True)
        )
    )
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_make_exactly_one_token_call(pool, provider):
    account = make_account(pool, access_expires_at=timezone.now() + timedelta(minutes=10))
    _single_use_token_endpoint(provider)
    results = _run_at_once(account.pk)
    assert len(results) == CALLERS
    assert provider.token.call_count == 1
    assert sorted(r.outcome for r in results) == ["refreshed"] + ["refreshed_elsewhere"] * (
        CALLERS - 1
    )
    account.refresh_from_db()
    assert account.access_token == "sk-ant-oat01-winner"
    assert account.refresh_token == "sk-ant-ort01-new-refresh"
    assert account.credential_version == 2
    assert not account.needs_relogin
    assert account.refresh_claimed_until is None


@pytest.mark.django_db(transaction=True)
def test_a_lapsed_claim_is_taken_over(pool, provider):
    """A worker killed mid-refresh leaves a claim; once it lapses the next caller proceeds."""
    now = timezone.now()
    account = make_account(
        pool,
        access_expires_at=now + timedelta(minutes=10),
        refresh_claimed_until=now - timedelta(seconds=1),
    )
    provider.token.respond(200, json=token_answer())
    assert account_refresh(account_id=account.pk, now=now).outcome == "refreshed"
    blocked = make_account(
        pool,
        label="held",
        access_expires_at=now + timedelta(minutes=10),
        refresh_claimed_until=now + timedelta(seconds=60),
    )
    assert account_refresh(account_id=blocked.pk, now=now).outcome == "claimed_elsewhere"
    assert provider.token.call_count == 1
    assert Account.objects.get(pk=blocked.pk).refresh_token == REFRESH


@pytest.mark.django_db(transaction=True)
def test_concurrent_dispatchers_never_queue_an_account_twice(pool):
    """Dispatchers running at once (a tick's chained runs on several workers) take disjoint
    accounts: on PostgreSQL each locks what it marks and skips what another holds."""
    due = {
        make_account(pool, label=f"a{n}", access_expires_at=timezone.now()).pk for n in range(40)
    }
    queued: list[int] = []
    lock = threading.Lock()

    def dispatcher() -> None:
        while True:
            mine: list[int] = []
            if not dispatch_token_refresh(enqueue=mine.append, limit=3):
                return
            with lock:
                queued.extend(mine)

    _at_once(dispatcher)
    assert sorted(queued) == sorted(due)  # every due account once, none twice
