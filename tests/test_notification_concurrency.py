"""Many workers at once on PostgreSQL: a change is announced once however many evaluations run
together, and a message is sent once however many workers take its task."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from accounts_pool.crypto import fingerprint
from accounts_pool.models import Delivery
from accounts_pool.services.channels import channel_create
from accounts_pool.services.notifications import delivery_attempt, notifications_evaluate

from . import receivers
from .conftest import NOW, REFRESH, make_account

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
CALLERS = 6


def _at_once(work: Callable[[], object]) -> list[object]:
    barrier, results = threading.Barrier(CALLERS), []

    def caller() -> None:
        try:
            barrier.wait()
            results.append(work())
        finally:
            connection.close()

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _needs_relogin(pool) -> None:
    make_account(pool, relogin_required_for=fingerprint(REFRESH))


def test_evaluations_at_once_announce_a_change_once(team, alice, pool):
    channel_create(
        team=team,
        name="h",
        channel_type="webhook",
        target="http://127.0.0.1:9/",
        kinds=["needs_relogin"],
        created_by=alice,
    )
    _needs_relogin(pool)
    counts = [int(str(n)) for n in _at_once(lambda: notifications_evaluate(now=NOW))]
    assert sorted(counts) == [0] * (CALLERS - 1) + [1]
    assert Delivery.objects.count() == 1


def test_workers_at_once_send_a_message_once(team, alice, pool):
    with receivers.receiver(200) as hook:
        channel_create(
            team=team,
            name="h",
            channel_type="webhook",
            target=hook.url,
            kinds=["needs_relogin"],
            created_by=alice,
        )
        _needs_relogin(pool)
        notifications_evaluate(now=NOW)
        delivery_id = Delivery.objects.get().pk
        outcomes = _at_once(lambda: delivery_attempt(delivery_id=delivery_id, now=NOW))
    assert sorted(map(str, outcomes)) == ["delivered"] + ["skipped"] * (CALLERS - 1)
    assert len(hook.got) == 1
