"""The two 403s of DESIGN.md 3.1, as a team lead reads them through GET /accounts/{id}: the
separate groups say which operation failed."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from accounts_pool.services.cycle import cycle_run
from accounts_pool.services.keys import api_token_create

from .api import Api
from .conftest import POLICY_MESSAGE, make_account, policy_403


@pytest.fixture
def lead(alice):
    return Api(api_token_create(user=alice, name="cli")[1])


def test_a_token_endpoint_403_shows_in_the_refresh_group_only(lead, pool, provider):
    account = make_account(pool, access_expires_at=timezone.now() - timedelta(minutes=1))
    provider.token.respond(403, text="<html>Forbidden</html>")
    list(cycle_run())
    body = lead.get(f"/accounts/{account.pk}").json()
    refresh = body["refresh"]
    assert datetime.fromisoformat(refresh["backoff_until"]) > timezone.now()
    assert refresh["last_error"]["status"] == 403
    assert refresh["failures"] == 1
    assert body["policy"]["status"] == "ok"
    assert body["quota"]["backoff_until"] is None
    assert body["reasons"][0]["code"] == "refresh_backoff"
    assert body["reasons"][0]["until"] == refresh["backoff_until"]


def test_a_usage_endpoint_403_shows_in_the_policy_group_only(lead, pool, provider):
    account = make_account(pool, quota_checked_at=None)
    provider.usage.respond(403, json=policy_403())
    list(cycle_run())
    body = lead.get(f"/accounts/{account.pk}").json()
    assert body["policy"]["status"] == "blocked"
    assert body["policy"]["message"] == POLICY_MESSAGE
    assert body["quota"]["backoff_until"] is None
    assert body["quota"]["last_error"] is None
    assert body["refresh"]["backoff_until"] is None
    assert body["refresh"]["last_error"] is None
    assert body["status"] == "excluded"
    assert body["reasons"][0]["code"] == "org_policy_blocked"
    assert provider.token.call_count == 0


def test_the_history_is_paginated_newest_first_and_filterable(lead, account):
    from accounts_pool.services.events import event_record
    from accounts_pool.state import Operation

    now = timezone.now()
    for n in range(5):
        event_record(
            account_id=account.pk,
            at=now - timedelta(minutes=n),
            operation=Operation.ADMIN,
            outcome=f"step{n}",
        )
    event_record(
        account_id=account.pk,
        at=now - timedelta(hours=1),
        operation=Operation.QUOTA_CHECK,
        outcome="server_error",
    )
    page = lead.get(f"/accounts/{account.pk}/events", page=1, page_size=2).json()
    assert [e["outcome"] for e in page["items"]] == ["step0", "step1"]
    assert (page["count"], page["page"], page["page_size"]) == (6, 1, 2)
    quota = lead.get(f"/accounts/{account.pk}/events", operation="quota_check").json()
    assert [e["outcome"] for e in quota["items"]] == ["server_error"]
    by_outcome = lead.get(f"/accounts/{account.pk}/events", outcome="step3").json()
    assert by_outcome["count"] == 1


def test_the_levers_record_who_pulled_them(lead, pool, provider):
    account = make_account(pool, refresh_backoff_until=timezone.now() + timedelta(hours=1))
    cleared = lead.post(f"/accounts/{account.pk}/actions/clear-backoff").json()
    assert cleared["outcome"] == "cleared"
    assert cleared["account"]["refresh"]["backoff_until"] is None
    events = lead.get(f"/accounts/{account.pk}/events").json()["items"]
    assert (events[0]["operation"], events[0]["actor"]) == ("admin", "user:alice")


def test_patch_disables_with_a_reason_and_enables(lead, account):
    off = lead.patch(f"/accounts/{account.pk}", {"enabled": False, "disabled_reason": "left"})
    assert off.json()["status"] == "excluded"
    assert off.json()["reasons"][0]["message"] == "Disabled: left"
    on = lead.patch(f"/accounts/{account.pk}", {"enabled": True, "label": "back", "priority": 3})
    assert (on.json()["enabled"], on.json()["label"], on.json()["priority"]) == (True, "back", 3)


def test_listing_a_teams_pools_costs_the_same_queries_for_one_pool_or_four(lead, pool, team):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts_pool.models import Pool

    make_account(pool, label="a")

    def listed() -> tuple[int, list[str]]:
        with CaptureQueriesContext(connection) as queries:
            response = lead.get("/teams/acme/pools")
        assert response.status_code == 200
        return len(queries), [p["slug"] for p in response.json()]

    listed()  # the token's first use in a minute also records that use
    one, slugs = listed()
    assert slugs == ["claude"]
    for n in range(3):
        other = Pool.objects.create(team=team, name=f"Pool {n}", slug=f"pool-{n}")
        make_account(other, label="b")
        make_account(other, label="c")
    four, slugs = listed()
    assert slugs == ["claude", "pool-0", "pool-1", "pool-2"]
    assert four == one
