"""Quota checks: windows, exhaustion, organisation policy, and the 401/403 paths."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from accounts_pool.models import AccountEvent, QuotaWindow
from accounts_pool.services.cycle import cycle_run
from accounts_pool.services.quota import account_check_quota
from accounts_pool.state import PolicyStatus, ReasonCode, Status

from .conftest import (
    FIVE_HOUR_RESET,
    NOW,
    POLICY_MESSAGE,
    make_account,
    policy_403,
    token_answer,
    usage_answer,
)

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DUE = {"quota_checked_at": NOW - 10 * MIN}


def _cycles(account, *offsets):
    for offset in offsets:
        list(cycle_run(now=NOW + offset, account_id=account.pk))


def test_it_stores_every_window(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.respond(200, json=usage_answer())
    assert account_check_quota(account_id=account.pk, now=NOW).outcome == "checked"
    windows = {w.key: w for w in QuotaWindow.objects.filter(account=account)}
    assert set(windows) == {"five_hour", "seven_day", "model:claude-opus-4"}
    assert windows["seven_day"].utilization == 61.0
    assert windows["five_hour"].checked_at == NOW
    account.refresh_from_db()
    assert account.quota_checked_at == NOW
    assert account.verdict(NOW).status == Status.USABLE


def test_a_new_poll_replaces_the_windows(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.respond(200, json=usage_answer(five_hour=10))
    account_check_quota(account_id=account.pk, now=NOW)
    provider.usage.respond(200, json={"five_hour": {"utilization": 30}, "seven_day": None})
    account_check_quota(account_id=account.pk, now=NOW + 5 * MIN)
    rows = dict(QuotaWindow.objects.filter(account=account).values_list("key", "utilization"))
    assert rows == {"five_hour": 30.0, "seven_day": None}


def test_a_full_window_excludes_until_its_reset_and_records_it(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.respond(200, json=usage_answer(five_hour=100.0))
    account_check_quota(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    verdict = account.verdict(NOW)
    assert verdict.status == Status.EXCLUDED
    assert verdict.first_reason.code == ReasonCode.QUOTA_EXHAUSTED
    assert verdict.first_reason.until == FIVE_HOUR_RESET
    event = AccountEvent.objects.get(account=account)
    assert (event.outcome, event.until) == ("quota_exhausted", verdict.first_reason.until)


def test_a_window_below_the_pool_minimum_excludes(pool, provider):
    pool.min_remaining_percent = 50
    pool.save()
    account = make_account(pool, **DUE)
    provider.usage.respond(200, json=usage_answer(seven_day=61.0))
    account_check_quota(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    reason = account.verdict(NOW).first_reason
    assert reason.code == ReasonCode.QUOTA_EXHAUSTED
    assert "7-day" in reason.message


@pytest.mark.parametrize(
    ("fail_closed", "status"), [(True, Status.EXCLUDED), (False, Status.DEGRADED)]
)
def test_unknown_quota_follows_the_pool(pool, provider, fail_closed, status):
    pool.fail_closed_on_unknown_quota = fail_closed
    pool.save()
    account = make_account(pool, **DUE)
    provider.usage.respond(200, json={"five_hour": None, "seven_day": {"utilization": "?"}})
    account_check_quota(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    verdict = account.verdict(NOW)
    assert verdict.status == status
    assert [r.code for r in verdict.reasons] == [ReasonCode.QUOTA_UNKNOWN]


def test_usage_403_blocks_by_policy_without_touching_quota_or_refresh(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.respond(403, json=policy_403())
    result = account_check_quota(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert result.outcome == "policy_blocked"
    assert account.policy_status == PolicyStatus.BLOCKED
    assert account.policy_message == POLICY_MESSAGE
    assert (account.policy_since, account.policy_checked_at) == (NOW, NOW)
    assert account.quota_backoff_until is None  # no quota backoff
    assert (account.quota_failures, account.quota_error_message) == (0, "")  # no quota error
    assert account.quota_checked_at == NOW - 10 * MIN
    assert (account.refresh_failures, account.refresh_backoff_until) == (0, None)
    assert account.refresh_error_kind == ""
    assert provider.token.call_count == 0
    event = AccountEvent.objects.get(account=account)
    assert (event.operation, event.outcome, event.http_status) == (
        "quota_check",
        "policy_blocked",
        403,
    )
    reason = account.verdict(NOW).first_reason
    assert reason.code == ReasonCode.ORG_POLICY_BLOCKED
    assert POLICY_MESSAGE in reason.message


def test_a_blocked_account_is_rechecked_only_after_the_policy_interval(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.respond(403, json=policy_403())
    _cycles(account, timedelta(0), MIN, 5 * MIN, 15 * MIN, 29 * MIN)
    assert provider.usage.call_count == 1
    _cycles(account, 30 * MIN)
    assert provider.usage.call_count == 2
    assert AccountEvent.objects.filter(account=account).count() == 1  # unchanged: no new row


def test_the_policy_clears_when_the_usage_endpoint_answers_again(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.side_effect = [
        httpx.Response(403, json=policy_403()),
        httpx.Response(200, json=usage_answer()),
    ]
    _cycles(account, timedelta(0), 30 * MIN)
    account.refresh_from_db()
    assert account.policy_status == PolicyStatus.OK
    assert account.policy_message == ""
    outcomes = list(AccountEvent.objects.order_by("at").values_list("outcome", flat=True))
    assert outcomes == ["policy_blocked", "policy_cleared"]


def test_usage_401_refreshes_then_retries_once(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.side_effect = [httpx.Response(401), httpx.Response(200, json=usage_answer())]
    provider.token.respond(200, json=token_answer())
    assert account_check_quota(account_id=account.pk, now=NOW).outcome == "checked"
    assert (provider.usage.call_count, provider.token.call_count) == (2, 1)
    retried = provider.usage.calls.last.request
    assert retried.headers["authorization"] == "Bearer sk-ant-oat01-new-access"
    account.refresh_from_db()
    assert (account.quota_failures, account.quota_backoff_until) == (0, None)


def test_a_second_401_rejects_the_new_token_and_backs_the_refresh_off(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.respond(401)
    provider.token.respond(200, json=token_answer())
    assert account_check_quota(account_id=account.pk, now=NOW).outcome == "access_rejected"
    account.refresh_from_db()
    assert (provider.usage.call_count, provider.token.call_count) == (2, 1)
    assert (account.quota_failures, account.quota_backoff_until) == (0, None)  # not quota
    assert account.quota_error_kind == ""
    assert account.access_expires_at == NOW  # the rejected token is not handed out
    assert account.refresh_backoff_until == NOW + 5 * MIN
    reason = account.verdict(NOW).first_reason
    assert (reason.code, reason.until) == (ReasonCode.REFRESH_BACKOFF, NOW + 5 * MIN)


def test_persistent_usage_401s_never_loop_and_the_refresh_ladder_climbs(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.respond(401)
    provider.token.respond(200, json=token_answer())
    _cycles(account, timedelta(0), MIN, 4 * MIN)
    assert (provider.usage.call_count, provider.token.call_count) == (2, 1)
    _cycles(account, 5 * MIN, 6 * MIN, 14 * MIN)  # the next cycle after 5 min refreshes once
    account.refresh_from_db()
    assert (provider.usage.call_count, provider.token.call_count) == (3, 2)
    assert account.access_from_401  # its 401 did not refresh again at once
    assert account.refresh_backoff_until == NOW + 5 * MIN + 10 * MIN


def test_a_token_403_inside_the_quota_pass_arms_the_refresh_backoff(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.respond(401)
    provider.token.respond(403, json={"error": {"type": "permission_error", "message": "no"}})
    _cycles(account, timedelta(0))
    account.refresh_from_db()
    assert (provider.usage.call_count, provider.token.call_count) == (1, 1)
    assert account.refresh_backoff_until == NOW + 30 * MIN
    assert account.refresh_error_status == 403
    assert account.policy_status == PolicyStatus.OK  # a token 403 is never the policy
    assert account.quota_backoff_until is None
    _cycles(account, MIN, 5 * MIN, 10 * MIN, 20 * MIN, 29 * MIN)
    assert (provider.usage.call_count, provider.token.call_count) == (1, 1)
    reason = account.verdict(NOW + MIN).first_reason
    assert (reason.code, reason.until) == (ReasonCode.REFRESH_BACKOFF, NOW + 30 * MIN)


@pytest.mark.parametrize(
    ("answer", "first", "second"),
    [
        (
            httpx.Response(429, headers={"Retry-After": "45"}),
            timedelta(seconds=45),
            timedelta(seconds=45),
        ),
        (httpx.Response(429), MIN, 2 * MIN),
        (httpx.Response(500), MIN, 2 * MIN),
        (httpx.Response(200, text="<html>oops</html>"), MIN, 2 * MIN),
    ],
)
def test_transient_quota_failures_follow_the_ladder(pool, provider, answer, first, second):
    account = make_account(pool, **DUE)
    provider.usage.mock(return_value=answer)
    account_check_quota(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert account.quota_backoff_until == NOW + first
    later = account.quota_backoff_until
    _cycles(account, later - NOW - timedelta(seconds=1))
    assert provider.usage.call_count == 1
    account_check_quota(account_id=account.pk, now=later)
    account.refresh_from_db()
    assert account.quota_backoff_until == later + second
    assert account.refresh_backoff_until is None
    assert account.policy_status == PolicyStatus.OK


def test_a_network_error_keeps_the_old_windows_and_shows_them_stale(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.side_effect = [httpx.Response(200, json=usage_answer()), httpx.ConnectError("x")]
    account_check_quota(account_id=account.pk, now=NOW)
    account_check_quota(account_id=account.pk, now=NOW + 6 * MIN)
    account.refresh_from_db()
    assert QuotaWindow.objects.filter(account=account).count() == 3
    verdict = account.verdict(NOW + 6 * MIN)
    assert verdict.status == Status.DEGRADED
    assert verdict.first_reason.code == ReasonCode.QUOTA_STALE


def test_a_success_clears_the_quota_failures(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.side_effect = [httpx.Response(503), httpx.Response(200, json=usage_answer())]
    account_check_quota(account_id=account.pk, now=NOW)
    account_check_quota(account_id=account.pk, now=NOW + MIN)
    account.refresh_from_db()
    assert (account.quota_failures, account.quota_backoff_until, account.quota_error_kind) == (
        0,
        None,
        "",
    )
    outcomes = list(AccountEvent.objects.order_by("at").values_list("outcome", flat=True))
    assert outcomes == ["server_error", "recovered"]


def test_an_expired_token_is_not_sent_to_the_usage_endpoint(pool, provider):
    account = make_account(
        pool, access_expires_at=NOW - MIN, refresh_backoff_until=NOW + MIN, **DUE
    )
    assert account_check_quota(account_id=account.pk, now=NOW).outcome == "no_valid_token"
    assert (
        account_check_quota(account_id=account.pk, now=NOW, force=True).outcome == "no_valid_token"
    )
    assert (provider.usage.call_count, provider.token.call_count) == (0, 0)


def test_a_401_right_after_an_ordinary_refresh_still_refreshes_and_retries(pool, provider):
    account = make_account(pool, last_refreshed_at=NOW - MIN, **DUE)
    provider.usage.side_effect = [httpx.Response(401), httpx.Response(200, json=usage_answer())]
    provider.token.respond(200, json=token_answer())
    assert account_check_quota(account_id=account.pk, now=NOW).outcome == "checked"
    account.refresh_from_db()
    assert (provider.usage.call_count, provider.token.call_count) == (2, 1)
    assert (account.quota_failures, account.quota_checked_at) == (0, NOW)


def test_a_401_on_a_token_a_usage_401_obtained_is_not_refreshed_again(pool, provider):
    account = make_account(pool, access_from_401=True, **DUE)
    provider.usage.respond(401)
    assert account_check_quota(account_id=account.pk, now=NOW).outcome == "access_rejected"
    account.refresh_from_db()
    assert (provider.usage.call_count, provider.token.call_count) == (1, 0)
    assert account.quota_backoff_until is None
    assert account.refresh_backoff_until == NOW + 5 * MIN


def test_an_ordinary_refresh_ends_the_usage_401_guard(pool, provider):
    account = make_account(pool, access_from_401=True, access_expires_at=NOW + 3 * HOUR, **DUE)
    provider.token.respond(200, json=token_answer())
    _cycles(account, timedelta(0))
    account.refresh_from_db()
    assert provider.token.call_count == 1
    assert not account.access_from_401


def test_check_quota_now_waits_a_minute_after_a_failure(pool, provider):
    account = make_account(pool, **DUE)
    provider.usage.respond(500)
    account_check_quota(account_id=account.pk, now=NOW)
    forced = account_check_quota(account_id=account.pk, now=NOW + MIN / 2, force=True)
    assert forced.outcome == "backing_off"
    assert provider.usage.call_count == 1
