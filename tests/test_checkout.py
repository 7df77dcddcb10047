"""Checkout picks a usable account by the pool's routing; reports change what it picks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts_pool.models import Account, AccountEvent, Checkout, QuotaWindow
from accounts_pool.services.keys import consumer_key_create

from .api import Api, error_code
from .conftest import make_account, token_answer


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def tool(pool, alice):
    return Api(consumer_key_create(pool=pool, name="laptop", created_by=alice)[1])


def usable(pool, now, label, five_hour=10.0, resets_in=timedelta(hours=4), **fields):
    account = make_account(pool, label=label, quota_checked_at=now, **fields)
    account.quota_windows.create(
        key="five_hour",
        label="5-hour",
        utilization=five_hour,
        resets_at=now + resets_in,
        checked_at=now,
    )
    return account


def _checkout(tool, **body):
    response = tool.post("/pools/claude/checkout", body)
    assert response.status_code == 200, response.content
    return response.json()


def test_priority_routing_takes_the_lowest_priority_then_least_recently_used(tool, pool, now):
    usable(pool, now, "backup", priority=200)
    first = usable(pool, now, "main-1", priority=10, last_used_at=now - timedelta(minutes=1))
    second = usable(pool, now, "main-2", priority=10, last_used_at=now - timedelta(minutes=5))
    assert _checkout(tool)["account"]["id"] == second.pk
    assert _checkout(tool)["account"]["id"] == first.pk


def test_balanced_routing_prefers_the_most_quota_per_hour_until_reset(tool, pool, now):
    pool.routing = "balanced"
    pool.save()
    usable(pool, now, "resets in days", five_hour=5.0, resets_in=timedelta(days=4))
    soon = usable(pool, now, "resets soon", five_hour=60.0, resets_in=timedelta(hours=1))
    assert _checkout(tool)["account"]["label"] == soon.label


def test_a_session_stays_on_its_account_while_it_stays_usable(tool, pool, now):
    a = usable(pool, now, "a")
    usable(pool, now, "b")
    first = _checkout(tool, session="task-42")
    assert first["account"]["id"] == a.pk
    assert _checkout(tool)["account"]["id"] != a.pk  # no session: least recently used
    assert _checkout(tool, session="task-42")["account"]["id"] == a.pk
    Account.objects.filter(pk=a.pk).update(cooldown_until=now + timedelta(minutes=5))
    assert _checkout(tool, session="task-42")["account"]["id"] != a.pk


def test_degraded_accounts_serve_only_when_no_account_is_usable(tool, pool, now):
    degraded = usable(pool, now, "degraded", refresh_backoff_until=now + timedelta(minutes=9))
    assert _checkout(tool)["account"]["id"] == degraded.pk
    healthy = usable(pool, now, "healthy")
    assert _checkout(tool)["account"]["id"] == healthy.pk


def test_a_token_expiring_within_five_minutes_is_refreshed_first(tool, pool, now, provider):
    usable(pool, now, "expiring", access_expires_at=now + timedelta(minutes=4))
    provider.token.respond(200, json=token_answer(access="sk-ant-oat01-fresh"))
    body = _checkout(tool)
    assert provider.token.call_count == 1
    assert body["credential"]["access_token"] == "sk-ant-oat01-fresh"
    assert body["credential"]["kind"] == "oauth"


def test_it_records_the_checkout_and_the_last_use(tool, pool, now):
    account = usable(pool, now, "a")
    body = _checkout(tool, session="s")
    checkout = Checkout.objects.get(pk=body["checkout_id"])
    assert checkout.account_id == account.pk
    assert checkout.session_hash
    assert checkout.session_hash != "s"
    account.refresh_from_db()
    assert account.last_used_at is not None


def test_none_usable_is_a_503_with_retry_after_and_every_reason(tool, pool, now):
    usable(pool, now, "cooling", cooldown_until=now + timedelta(minutes=10))
    usable(pool, now, "full", five_hour=100.0, resets_in=timedelta(hours=2))
    response = tool.post("/pools/claude/checkout", {})
    assert response.status_code == 503
    assert error_code(response) == "no_usable_account"
    assert 595 <= int(response["Retry-After"]) <= 601
    accounts = {a["label"]: a for a in response.json()["error"]["details"]["accounts"]}
    assert accounts["cooling"]["reasons"][0]["code"] == "cooldown"
    assert accounts["full"]["reasons"][0]["code"] == "quota_exhausted"


def test_a_users_token_cannot_check_out(alice, pool, now):
    from accounts_pool.services.keys import api_token_create

    usable(pool, now, "a")
    lead = Api(api_token_create(user=alice, name="cli")[1])
    assert lead.post("/pools/claude/checkout", {}).status_code == 403


def _report(tool, checkout_id, **body):
    response = tool.post(f"/checkouts/{checkout_id}/report", body)
    assert response.status_code == 200, response.content
    return response.json()


def test_a_429_without_retry_after_cools_down_until_the_reported_reset(tool, pool, now):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    reset = int((now + timedelta(minutes=12)).timestamp())
    body = _report(
        tool,
        checkout["checkout_id"],
        status=429,
        headers={
            "anthropic-ratelimit-unified-5h-utilization": "1.0",
            "anthropic-ratelimit-unified-5h-reset": str(reset),
            "anthropic-ratelimit-unified-status": "rejected",
        },
    )
    account.refresh_from_db()
    assert abs(account.cooldown_until.timestamp() - reset) < 2
    assert body["windows_updated"] == ["five_hour"]
    window = QuotaWindow.objects.get(account=account, key="five_hour")
    assert (window.utilization, window.source) == (100.0, "report")


def test_a_long_limit_caps_the_cooldown_and_lets_the_window_exclude(tool, pool, now):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    reset = int((now + timedelta(days=2)).timestamp())
    _report(
        tool,
        checkout["checkout_id"],
        status=429,
        headers={
            "anthropic-ratelimit-unified-7d-utilization": "1.0",
            "anthropic-ratelimit-unified-7d-reset": str(reset),
        },
    )
    account.refresh_from_db()
    assert account.cooldown_until <= timezone.now() + timedelta(minutes=30)
    verdict = account.verdict(timezone.now() + timedelta(minutes=31))
    assert verdict.first_reason.code == "quota_exhausted"
    assert abs(verdict.first_reason.until.timestamp() - reset) < 2


def test_a_401_report_excludes_the_account_and_queues_a_refresh(
    tool, pool, now, django_capture_on_commit_callbacks
):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    with django_capture_on_commit_callbacks() as queued:
        body = _report(tool, checkout["checkout_id"], status=401)
    assert body["queued"] == ["refresh"]
    assert len(queued) == 1
    account.refresh_from_db()
    assert account.verdict(timezone.now()).first_reason.code == "token_expired"


def test_a_policy_403_report_blocks_and_queues_one_check(
    tool, pool, now, django_capture_on_commit_callbacks
):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    message = "OAuth authentication is currently not allowed for this organization."
    with django_capture_on_commit_callbacks() as queued:
        first = _report(tool, checkout["checkout_id"], status=403, message=message)
        again = _report(tool, checkout["checkout_id"], status=403, message=message)
    assert (first["queued"], again["queued"]) == (["quota_check"], [])
    assert len(queued) == 1
    account.refresh_from_db()
    assert (account.policy_status, account.policy_message) == ("blocked", message)
    assert account.refresh_backoff_until is None


def test_every_report_is_history_with_the_key_as_actor(tool, pool, now):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    _report(tool, checkout["checkout_id"], status=500, message="overloaded")
    event = AccountEvent.objects.get(account=account)
    assert (event.operation, event.outcome, event.http_status) == ("report", "recorded", 500)
    assert event.actor.startswith("key:laptop:")


def test_another_pools_key_cannot_report_on_this_checkout(tool, pool, team, alice, now):
    from accounts_pool.models import Pool

    usable(pool, now, "a")
    checkout = _checkout(tool)
    other = Pool.objects.create(team=team, name="Other", slug="other")
    stranger = Api(consumer_key_create(pool=other, name="x", created_by=alice)[1])
    response = stranger.post(f"/checkouts/{checkout['checkout_id']}/report", {"status": 429})
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_a_retry_after_date_far_in_the_future_is_capped(tool, pool, now):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    body = _report(
        tool, checkout["checkout_id"], status=429, retry_after="Fri, 31 Dec 9999 23:59:59 GMT"
    )
    assert body["outcome"] == "rate_limited"
    account.refresh_from_db()
    assert account.cooldown_until <= timezone.now() + timedelta(minutes=30)
