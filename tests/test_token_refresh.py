"""Token refresh: rotation, dead refresh tokens, backoff by the ladders, zero hammering."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from accounts_pool.crypto import fingerprint
from accounts_pool.models import AccountEvent
from accounts_pool.services.cycle import cycle_run
from accounts_pool.services.onboarding import account_store_tokens
from accounts_pool.services.refresh import account_refresh
from accounts_pool.state import PolicyStatus, ReasonCode, Status

from .conftest import NOW, REFRESH, make_account, token_answer

MIN = timedelta(minutes=1)
EXPIRING = {"access_expires_at": NOW + timedelta(hours=1)}


def _cycles(account, *offsets):
    for offset in offsets:
        list(cycle_run(now=NOW + offset, account_id=account.pk))


def test_it_stores_the_rotated_tokens_and_bumps_the_version(pool, provider):
    account = make_account(pool, **EXPIRING)
    provider.token.respond(200, json=token_answer())
    result = account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert result.outcome == "refreshed"
    assert account.access_token == "sk-ant-oat01-new-access"
    assert account.refresh_token == "sk-ant-ort01-new-refresh"
    assert account.refresh_token_fingerprint == fingerprint("sk-ant-ort01-new-refresh")
    assert account.access_expires_at == NOW + timedelta(hours=8)
    assert account.credential_version == 2
    assert (account.email, account.organization_name) == ("dev@acme.test", "Acme Org")


def test_a_refresh_reads_claims_and_stores_in_three_statements(
    pool, provider, django_assert_num_queries
):
    account = make_account(pool, **EXPIRING)
    provider.token.respond(200, json=token_answer())
    with django_assert_num_queries(3):  # a column the load left out would be a query of its own
        assert account_refresh(account_id=account.pk, now=NOW).outcome == "refreshed"


def test_a_failed_refresh_adds_only_its_record_and_history_row(
    pool, provider, django_assert_num_queries
):
    account = make_account(pool, access_expires_at=NOW - MIN, refresh_failures=1)
    provider.token.respond(403)
    with django_assert_num_queries(4):  # load, claim, the failure, its history row
        assert account_refresh(account_id=account.pk, now=NOW).outcome == "rejected"


def test_an_answer_without_refresh_token_keeps_the_old_one(pool, provider):
    account = make_account(pool, **EXPIRING)
    provider.token.respond(200, json=token_answer(refresh=None))
    account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert account.refresh_token == REFRESH
    assert account.access_token == "sk-ant-oat01-new-access"


def test_a_fresh_token_is_not_refreshed(account, provider):
    assert account_refresh(account_id=account.pk, now=NOW).outcome == "not_due"
    assert provider.token.call_count == 0


def test_token_endpoint_403_arms_the_refresh_backoff_and_stops_calls(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.respond(403, text="<html>Forbidden</html>")
    _cycles(account, timedelta(0))
    account.refresh_from_db()
    assert provider.token.call_count == 1
    assert account.refresh_backoff_until == NOW + 30 * MIN
    assert account.refresh_error_status == 403
    assert account.refresh_failures == 1
    assert account.policy_status == PolicyStatus.OK  # the policy group is untouched
    assert account.policy_since is None
    assert account.quota_failures == 0
    assert account.quota_backoff_until is None
    _cycles(account, MIN, 2 * MIN, 10 * MIN, 29 * MIN)
    assert provider.token.call_count == 1  # zero calls while the backoff runs
    event = AccountEvent.objects.get(account=account)
    assert (event.operation, event.outcome, event.http_status) == ("token_refresh", "rejected", 403)
    assert event.until == NOW + 30 * MIN


def test_after_the_backoff_a_second_403_doubles_it(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.respond(403, json={"error": "forbidden"})
    _cycles(account, timedelta(0), 30 * MIN)
    account.refresh_from_db()
    assert provider.token.call_count == 2
    assert account.refresh_backoff_until == NOW + 30 * MIN + 60 * MIN
    verdict = account.verdict(NOW + 31 * MIN)
    assert verdict.status == Status.EXCLUDED
    assert verdict.first_reason.code == ReasonCode.REFRESH_BACKOFF
    assert "HTTP 403 from the token endpoint" in verdict.first_reason.message


def test_invalid_grant_needs_relogin_and_stops_every_refresh(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.respond(400, json={"error": "invalid_grant", "error_description": "revoked"})
    _cycles(account, timedelta(0), MIN, timedelta(hours=3), timedelta(days=2))
    account.refresh_from_db()
    assert provider.token.call_count == 1
    assert account.needs_relogin
    assert account.refresh_backoff_until is None
    assert account_refresh(account_id=account.pk, now=NOW, force=True).outcome == "needs_relogin"
    assert provider.token.call_count == 1
    assert account.verdict(NOW).first_reason.code == ReasonCode.NEEDS_RELOGIN


def test_a_new_refresh_token_clears_needs_relogin(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.respond(400, json={"error": "invalid_grant"})
    _cycles(account, timedelta(0))
    account.refresh_from_db()
    account_store_tokens(account=account, refresh_token="sk-ant-ort01-relogin", actor="alice")
    account.refresh_from_db()
    assert not account.needs_relogin
    provider.token.respond(200, json=token_answer())
    _cycles(account, MIN)
    account.refresh_from_db()
    assert provider.token.call_count == 2
    assert account.access_token == "sk-ant-oat01-new-access"
    assert ReasonCode.NEEDS_RELOGIN not in [r.code for r in account.verdict(NOW + MIN).reasons]


@pytest.mark.parametrize(
    ("status", "headers", "first", "second"),
    [
        (429, {"Retry-After": "120"}, timedelta(seconds=120), timedelta(seconds=120)),
        (429, {}, 5 * MIN, 10 * MIN),
        (503, {}, 5 * MIN, 10 * MIN),
        (500, {"Retry-After": "600"}, 10 * MIN, 10 * MIN),
    ],
)
def test_429_and_5xx_follow_the_transient_ladder(pool, provider, status, headers, first, second):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.respond(status, headers=headers)
    account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert account.refresh_backoff_until == NOW + first
    later = account.refresh_backoff_until
    account_refresh(account_id=account.pk, now=later)
    account.refresh_from_db()
    assert account.refresh_backoff_until == later + second
    assert provider.token.call_count == 2


def test_a_timeout_backs_off_five_minutes(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.mock(side_effect=httpx.ConnectTimeout("slow"))
    account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert account.refresh_backoff_until == NOW + 5 * MIN
    assert account.refresh_error_kind == "network_error"


def test_a_success_clears_the_failures_and_records_the_recovery(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.side_effect = [httpx.Response(503), httpx.Response(200, json=token_answer())]
    account_refresh(account_id=account.pk, now=NOW)
    account_refresh(account_id=account.pk, now=NOW + 5 * MIN)
    account.refresh_from_db()
    assert (account.refresh_failures, account.refresh_backoff_until) == (0, None)
    assert (account.refresh_error_status, account.refresh_error_message) == (None, "")
    outcomes = list(AccountEvent.objects.order_by("at").values_list("outcome", flat=True))
    assert outcomes == ["server_error", "recovered"]


def test_force_ignores_the_backoff_but_still_records(pool, provider):
    account = make_account(pool, refresh_backoff_until=NOW + 20 * MIN, refresh_failures=2)
    provider.token.respond(200, json=token_answer())
    assert account_refresh(account_id=account.pk, now=NOW, force=True).outcome == "refreshed"
    assert provider.token.call_count == 1


def test_no_secret_reaches_the_history_or_the_log(pool, provider, caplog):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.respond(400, json={"error": "invalid_request", "error_description": REFRESH})
    with caplog.at_level("DEBUG"):
        account_refresh(account_id=account.pk, now=NOW)
    event = AccountEvent.objects.get(account=account)
    assert REFRESH not in event.message
    assert REFRESH not in caplog.text
    assert "sk-ant" not in caplog.text


def test_an_absurd_token_lifetime_is_malformed_and_backs_off(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.respond(200, json={**token_answer(), "expires_in": 1e300})
    result = account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert result.outcome == "malformed"
    assert account.refresh_backoff_until == NOW + 5 * MIN
    assert account.refresh_token == REFRESH


def test_an_internal_failure_around_the_call_backs_off_and_surfaces(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.mock(side_effect=RuntimeError("boom"))
    with pytest.raises(RuntimeError):
        account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert (account.refresh_error_kind, account.refresh_backoff_until) == (
        "internal_error",
        NOW + 5 * MIN,
    )
    assert account.refresh_claimed_until is None


def test_refresh_now_waits_a_minute_after_a_failure(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    provider.token.respond(503)
    account_refresh(account_id=account.pk, now=NOW)
    forced = account_refresh(account_id=account.pk, now=NOW + 30 * timedelta(seconds=1), force=True)
    assert forced.outcome == "backing_off"
    assert provider.token.call_count == 1
    account_refresh(account_id=account.pk, now=NOW + 2 * MIN, force=True)
    assert provider.token.call_count == 2


def test_a_relogin_during_a_refresh_keeps_the_new_login(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)

    def relogin_then_answer(request):
        account_store_tokens(account=account, refresh_token="sk-ant-ort01-relogin", actor="alice")
        return httpx.Response(200, json=token_answer())

    provider.token.side_effect = relogin_then_answer
    result = account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert result.outcome == "refreshed_elsewhere"
    assert account.refresh_token == "sk-ant-ort01-relogin"


def test_a_failure_after_the_claim_was_taken_over_changes_nothing(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)

    def taken_over_then_refused(request):
        account.__class__.objects.filter(pk=account.pk).update(
            refresh_claimed_until=NOW + timedelta(hours=1)
        )
        return httpx.Response(403)

    provider.token.side_effect = taken_over_then_refused
    result = account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert result.outcome == "claimed_elsewhere"
    assert (account.refresh_backoff_until, account.refresh_failures) == (None, 0)
    assert not AccountEvent.objects.filter(account=account).exists()


def test_an_answer_after_the_claim_was_taken_over_is_kept_and_leaves_that_claim(pool, provider):
    account = make_account(pool, access_expires_at=NOW - MIN)
    theirs = NOW + timedelta(hours=1)

    def taken_over_then_answered(request):
        account.__class__.objects.filter(pk=account.pk).update(refresh_claimed_until=theirs)
        return httpx.Response(200, json=token_answer())

    provider.token.side_effect = taken_over_then_answered
    result = account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert result.outcome == "refreshed"  # the provider already rotated: the answer is stored
    assert account.refresh_token == "sk-ant-ort01-new-refresh"
    assert account.refresh_claimed_until == theirs  # their claim stays theirs
