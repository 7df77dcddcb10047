"""The column lists that reads for the state rules load are complete: an account or a window
loaded with only those columns gives the rules their whole view without another query."""

from __future__ import annotations

import dataclasses

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts_pool import selectors, state
from accounts_pool.models import Account, QuotaWindow

from .conftest import make_account

pytestmark = pytest.mark.django_db


def test_state_snapshot_reads_only_the_accounts_state_fields(pool):
    made = make_account(pool, label="ana")
    made.quota_windows.create(
        key="five_hour", label="5-hour", utilization=10, checked_at=timezone.now()
    )
    account = Account.objects.only(*Account.STATE_FIELDS).get(pk=made.pk)
    windows = list(QuotaWindow.objects.filter(account=made).only(*QuotaWindow.STATE_FIELDS))
    with CaptureQueriesContext(connection) as queries:
        snapshot = account.state_snapshot(windows=windows)
    assert len(queries) == 0, [q["sql"] for q in queries]
    assert snapshot == made.state_snapshot()  # the same view as a full read gives


def test_every_state_field_is_a_column_the_snapshot_needs(pool):
    """No column in the list is dead weight: each is read by state_snapshot (dropping any one
    from a read makes the snapshot query for it)."""
    made = make_account(pool, label="ana")
    for name in Account.STATE_FIELDS:
        fewer = [f for f in Account.STATE_FIELDS if f != name]
        account = Account.objects.only(*fewer).get(pk=made.pk)
        with CaptureQueriesContext(connection) as queries:
            account.state_snapshot(windows=[])
        assert len(queries) == 1, name


def test_the_verdict_read_of_a_team_loads_the_state_fields(pool, team):
    make_account(pool, label="ana")
    assert set(Account.STATE_FIELDS) <= set(selectors.VERDICT_FIELDS)
    [(_, rows)] = selectors.team_verdicts(team, now=timezone.now())
    assert rows[0].verdict.status in set(state.Status)
    assert {f.name for f in dataclasses.fields(state.Window)} == set(QuotaWindow.STATE_FIELDS)
