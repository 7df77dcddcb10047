"""Checkout reads only the account columns it uses (checkout_sql.ACCOUNT, built from the models'
constants); the others stay deferred, and one that a checkout went on to read would cost a
query of its own. These fail then: through the API and the relay, for each routing and kind."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts_pool import checkout_sql
from accounts_pool.models import Account, ConsumerKey, QuotaWindow
from accounts_pool.services import relay as relay_service
from accounts_pool.services.checkout import checkout_create
from accounts_pool.services.keys import consumer_key_create, secret_hash

from .api import Api
from .conftest import usable_account

pytestmark = pytest.mark.django_db

NEVER_READ = ("refresh_token", "organization_name", "refresh_claimed_until", "created_at")


@pytest.fixture
def secret(pool, alice):
    return consumer_key_create(pool=pool, name="laptop", created_by=alice)[1]


def selects(queries):
    """Statements that read on their own: the candidates' read and the record start WITH."""
    return [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]


@pytest.mark.parametrize("routing", ["priority", "balanced"])
@pytest.mark.parametrize("kind", ["oauth", "api_key"])
def test_an_api_checkout_reads_no_column_after_its_one_read(pool, secret, routing, kind):
    pool.routing = routing
    pool.save()
    for label in ("ana", "bea"):
        usable_account(
            pool, label, kind=kind, api_key="sk-ant-api03-x" if kind == "api_key" else ""
        )
    tool = Api(secret)
    tool.post("/pools/claude/checkout", {})  # the key's first use writes its last use

    with CaptureQueriesContext(connection) as queries:
        response = tool.post("/pools/claude/checkout", {"session": "s1"})

    assert response.status_code == 200, response.content
    assert response.json()["account"]["label"] in ("ana", "bea")
    assert selects(queries) == []  # the session's account is found inside the one read


def test_a_relayed_request_reads_no_column_after_its_one_read(pool, secret):
    usable_account(pool, "ana", access_from_401=True)

    with CaptureQueriesContext(connection) as queries:
        started = relay_service.relay_start(secret=secret, session="", model=None)

    assert started.routed.token_from_401 is True
    assert started.routed.version == 1
    assert selects(queries) == []


def test_the_account_handed_out_leaves_the_columns_checkout_does_not_use_deferred(pool, secret):
    usable_account(pool, "ana")

    result = checkout_create(key_hash=secret_hash(secret))

    assert {"created_at", "created_by_id"} <= result.key.get_deferred_fields()
    assert {"created_at", "name", "team_id"} <= result.key.pool.get_deferred_fields()
    deferred = result.account.get_deferred_fields()
    assert set(NEVER_READ) <= deferred
    assert not deferred & {f.name for f in checkout_sql.ACCOUNT.fields}
    assert set(Account.STATE_FIELDS) | set(Account.HANDOUT_FIELDS) <= {
        f.name for f in checkout_sql.ACCOUNT.fields
    }


def test_the_candidates_statement_reads_the_values_the_orm_reads(pool, secret):
    """Same values and types, time zones included."""
    made = usable_account(pool, "ana", cooldown_until=timezone.now() - timedelta(minutes=1))

    page = checkout_sql.candidates(secret_hash(secret), now=timezone.now())

    [candidate] = page.candidates
    pairs = [
        (checkout_sql.KEY, page.key, ConsumerKey.objects.get()),
        (checkout_sql.POOL, page.key.pool, type(pool).objects.get(pk=pool.pk)),
        (checkout_sql.ACCOUNT, candidate.account, Account.objects.get(pk=made.pk)),
    ]
    for part, read, orm in pairs:
        for field in part.fields:
            if field.name in checkout_sql.SEALED:
                continue
            mine, theirs = getattr(read, field.attname), getattr(orm, field.attname)
            assert (mine, type(mine)) == (theirs, type(theirs)), field.name
            assert getattr(mine, "tzinfo", None) == getattr(theirs, "tzinfo", None), field.name
    window = QuotaWindow.objects.get(account=made).as_state()
    assert candidate.windows == [window]
    assert candidate.windows[0].resets_at.tzinfo == window.resets_at.tzinfo
