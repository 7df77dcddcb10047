"""An account a lead deletes while a checkout is using it: the tool gets another account (or
the pool's 503), never a 500."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts_pool.models import Account, Checkout
from accounts_pool.services.keys import consumer_key_create

from . import processes
from .api import Api
from .conftest import token_answer, usable_account

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_account_deleted_during_its_refresh_at_checkout_hands_out_the_next_one(
    pool, alice, provider
):
    now = timezone.now()
    expiring = usable_account(pool, "expiring", access_expires_at=now + timedelta(minutes=4))
    spare = usable_account(pool, "spare", priority=200)
    spare.quota_windows.update(utilization=80)  # second by either routing
    tool = Api(consumer_key_create(pool=pool, name="laptop", created_by=alice)[1])

    def deleted_meanwhile(request: httpx.Request) -> httpx.Response:
        Account.objects.filter(pk=expiring.pk).delete()  # a lead, in another request
        return httpx.Response(200, json=token_answer())

    provider.token.mock(side_effect=deleted_meanwhile)
    response = tool.post("/pools/claude/checkout", {})
    assert response.status_code == 200, response.content
    assert response.json()["account"]["id"] == spare.pk
    assert provider.token.call_count == 1
    assert list(Checkout.objects.values_list("account_id", flat=True)) == [spare.pk]


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])


@pytest.mark.postgres
def test_an_account_deleted_between_the_read_and_the_record_hands_out_the_next_one(pool, alice):
    """A lead deletes the account in a transaction that commits while the checkout, having
    read it, waits to record it: the record fails on the missing account, and the checkout
    picks again."""
    first = usable_account(pool, "first")
    spare = usable_account(pool, "spare", priority=200)
    tool = Api(consumer_key_create(pool=pool, name="laptop", created_by=alice)[1])
    deleting, commit, answered = threading.Event(), threading.Event(), {}

    def lead() -> None:
        try:
            with transaction.atomic():
                Account.objects.filter(pk=first.pk).delete()
                deleting.set()
                commit.wait(10)
        finally:
            connection.close()

    def checkout() -> None:
        try:
            answered["response"] = tool.post("/pools/claude/checkout", {})
        finally:
            connection.close()

    deleter = threading.Thread(target=lead)
    deleter.start()
    assert deleting.wait(10)
    # Read before the delete commits (the row is still there to read), blocked at the record.
    checking_out = threading.Thread(target=checkout)
    checking_out.start()
    processes.wait_for(_waiting_on_a_lock, 10, "the checkout to wait for the deleted row")
    commit.set()
    deleter.join(20)
    checking_out.join(20)
    response = answered["response"]
    assert response.status_code == 200, response.content
    assert response.json()["account"]["id"] == spare.pk
    assert list(Checkout.objects.values_list("account_id", flat=True)) == [spare.pk]
    assert not Account.objects.filter(pk=first.pk).exists()
