"""The pure rules, table-driven, without a database and without patching the clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from accounts_pool.state import (
    AccountState,
    ClearsOn,
    FailureKind,
    OnboardingOutcome,
    PolicyStatus,
    PoolPolicy,
    QuotaFailure,
    QuotaFailureAction,
    ReasonCode,
    RefreshSuccessEffect,
    Status,
    TokenFailure,
    Window,
    access_rejected_effect,
    eligibility,
    exhausted_since,
    failure_kind,
    model_family,
    onboarding_token_outcome,
    onboarding_usage_outcome,
    parse_retry_after,
    quota_due,
    quota_failure_effect,
    quota_next_check_at,
    refresh_due,
    refresh_failure_effect,
    refresh_success_effect,
    window_applies,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
POLICY = PoolPolicy()
HEALTHY = AccountState(
    access_expires_at=NOW + 7 * HOUR,
    quota_checked_at=NOW - MIN,
    policy_checked_at=NOW - MIN,
    windows=(
        Window("five_hour", "5-hour", 25.0, NOW + 4 * HOUR),
        Window("seven_day", "7-day", 61.0, NOW + 90 * HOUR),
    ),
)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "invalid_grant", FailureKind.INVALID_GRANT),
        (400, "refresh_token_reused", FailureKind.INVALID_GRANT),
        (400, "invalid_request", FailureKind.REJECTED),
        (401, None, FailureKind.REJECTED),
        (403, None, FailureKind.REJECTED),
        (403, "invalid_grant", FailureKind.REJECTED),  # only a 400 carries invalid_grant
        (429, None, FailureKind.RATE_LIMITED),
        (500, None, FailureKind.SERVER_ERROR),
        (503, "overloaded_error", FailureKind.SERVER_ERROR),
    ],
)
def test_it_classifies_http_answers(status, code, kind):
    assert failure_kind(status=status, error_code=code) == kind


@pytest.mark.parametrize(
    ("header", "delay"),
    [
        (None, None),
        ("", None),
        ("120", timedelta(seconds=120)),
        ("1.5", timedelta(seconds=1.5)),
        ("-5", None),
        ("soon", None),
        ("Sun, 29 Nov 2026 12:10:00 GMT", timedelta(minutes=10)),
        ("Sun, 29 Nov 2026 11:00:00 GMT", timedelta(0)),
    ],
)
def test_it_reads_retry_after_as_seconds_or_http_date(header, delay):
    assert parse_retry_after(header, NOW) == delay


def _refresh(kind, failures=0, status=None, retry_after=None):
    failure = TokenFailure(kind=kind, status=status, retry_after=retry_after)
    return refresh_failure_effect(failure, previous_failures=failures, now=NOW)


@pytest.mark.parametrize(
    ("kind", "previous", "retry_after", "delay"),
    [
        # other 4xx (400, 401, 403): 30 min doubling to 24 h
        (FailureKind.REJECTED, 0, None, 30 * MIN),
        (FailureKind.REJECTED, 1, None, 60 * MIN),
        (FailureKind.REJECTED, 3, None, 4 * HOUR),
        (FailureKind.REJECTED, 10, None, 24 * HOUR),
        # 429 and 5xx: Retry-After (capped at 24 h), else 5 min doubling to 60 min
        (FailureKind.RATE_LIMITED, 0, "90", timedelta(seconds=90)),
        (FailureKind.RATE_LIMITED, 0, "999999", 24 * HOUR),
        (FailureKind.RATE_LIMITED, 0, "0", MIN),  # never a retry on every tick
        (FailureKind.SERVER_ERROR, 0, "Sun, 29 Nov 2026 11:00:00 GMT", MIN),
        (FailureKind.RATE_LIMITED, 0, None, 5 * MIN),
        (FailureKind.SERVER_ERROR, 1, None, 10 * MIN),
        (FailureKind.SERVER_ERROR, 9, None, 60 * MIN),
        # network, timeout, malformed: 5 min
        (FailureKind.NETWORK, 0, None, 5 * MIN),
        (FailureKind.NETWORK, 6, None, 5 * MIN),
        (FailureKind.MALFORMED, 2, None, 5 * MIN),
        (FailureKind.INTERNAL, 0, None, 5 * MIN),
    ],
)
def test_it_follows_the_refresh_backoff_ladders(kind, previous, retry_after, delay):
    effect = _refresh(kind, previous, retry_after=retry_after)
    assert effect.backoff_until == NOW + delay
    assert effect.failures == previous + 1
    assert not effect.needs_relogin


def test_invalid_grant_parks_the_account_without_a_timed_retry():
    effect = _refresh(FailureKind.INVALID_GRANT, status=400)
    assert effect.needs_relogin
    assert effect.backoff_until is None


def _quota(
    status=None,
    kind=FailureKind.SERVER_ERROR,
    failures=0,
    retried=False,
    retry=None,
    from_401=False,
):
    failure = QuotaFailure(kind=kind, status=status, retry_after=retry)
    return quota_failure_effect(
        failure,
        previous_failures=failures,
        token_from_401=from_401,
        retried=retried,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("status", "kind", "previous", "retry_after", "delay"),
    [
        (429, FailureKind.RATE_LIMITED, 0, "30", timedelta(seconds=30)),
        (429, FailureKind.RATE_LIMITED, 0, "3600", 15 * MIN),
        (429, FailureKind.RATE_LIMITED, 0, "0", timedelta(seconds=30)),
        (500, FailureKind.SERVER_ERROR, 0, None, 1 * MIN),
        (502, FailureKind.SERVER_ERROR, 2, None, 4 * MIN),
        (503, FailureKind.SERVER_ERROR, 8, None, 15 * MIN),
        (None, FailureKind.NETWORK, 1, None, 2 * MIN),
        (200, FailureKind.MALFORMED, 0, None, 1 * MIN),
    ],
)
def test_it_follows_the_quota_backoff_ladder(status, kind, previous, retry_after, delay):
    effect = _quota(status, kind, previous, retry=retry_after)
    assert effect.action == QuotaFailureAction.BACKOFF
    assert effect.backoff_until == NOW + delay
    assert effect.failures == previous + 1


def test_a_quota_403_is_policy_not_a_quota_failure():
    effect = _quota(403, FailureKind.REJECTED, failures=2)
    assert effect.action == QuotaFailureAction.POLICY_BLOCKED
    assert effect.backoff_until is None
    assert effect.failures == 2


@pytest.mark.parametrize(
    ("retried", "from_401", "action"),
    [
        (False, False, QuotaFailureAction.REFRESH_AND_RETRY),
        (True, False, QuotaFailureAction.ACCESS_REJECTED),  # the retry got 401 again
        (False, True, QuotaFailureAction.ACCESS_REJECTED),  # the token came from a usage 401
    ],
)
def test_a_quota_401_refreshes_once_per_token_and_is_never_a_quota_failure(
    retried, from_401, action
):
    effect = _quota(401, FailureKind.REJECTED, failures=3, retried=retried, from_401=from_401)
    assert effect.action == action
    assert effect.backoff_until is None
    assert effect.failures == 3


@pytest.mark.parametrize(
    ("previous", "delay"),
    [(0, 5 * MIN), (1, 10 * MIN), (3, 40 * MIN), (4, 60 * MIN), (30, 60 * MIN)],
)
def test_a_rejected_access_token_backs_the_refresh_off_on_its_own_ladder(previous, delay):
    effect = access_rejected_effect(previous_failures=previous, now=NOW)
    assert effect.outcome == FailureKind.ACCESS_REJECTED
    assert effect.backoff_until == NOW + delay
    assert effect.failures == previous + 1
    assert not effect.needs_relogin


@pytest.mark.parametrize(
    ("previous_kind", "asked", "failures", "from_401"),
    [
        ("", False, 0, False),  # an ordinary refresh clears the streak
        ("rejected", False, 0, False),  # recovering from a token-endpoint failure
        ("", True, 0, True),  # asked for by a usage 401
        ("access_rejected", False, 2, True),  # replacing a rejected token: the streak goes on
    ],
)
def test_a_refresh_marks_tokens_obtained_because_of_a_usage_401(
    previous_kind, asked, failures, from_401
):
    effect = refresh_success_effect(
        previous_failures=2, previous_error_kind=previous_kind, asked_by_401=asked
    )
    assert effect == RefreshSuccessEffect(failures=failures, token_from_401=from_401)


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (QuotaFailure(kind=FailureKind.REJECTED, status=403), OnboardingOutcome.POLICY_BLOCKED),
        (QuotaFailure(kind=FailureKind.REJECTED, status=401), OnboardingOutcome.REFUSED),
        (QuotaFailure(kind=FailureKind.RATE_LIMITED, status=429), OnboardingOutcome.UNVERIFIED),
        (QuotaFailure(kind=FailureKind.NETWORK), OnboardingOutcome.UNVERIFIED),
    ],
)
def test_onboarding_classifies_a_pasted_access_tokens_usage_failure(failure, outcome):
    assert onboarding_usage_outcome(failure) == outcome


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (TokenFailure(kind=FailureKind.INVALID_GRANT, status=400), OnboardingOutcome.REFUSED),
        (TokenFailure(kind=FailureKind.REJECTED, status=403), OnboardingOutcome.REFUSED),
        (TokenFailure(kind=FailureKind.SERVER_ERROR, status=503), OnboardingOutcome.UNVERIFIED),
        (TokenFailure(kind=FailureKind.MALFORMED, status=200), OnboardingOutcome.UNVERIFIED),
    ],
)
def test_onboarding_classifies_a_pasted_refresh_tokens_failure(failure, outcome):
    assert onboarding_token_outcome(failure) == outcome


@pytest.mark.parametrize(
    ("changes", "due"),
    [
        ({}, False),
        ({"access_expires_at": NOW + 3 * HOUR}, True),  # inside the 4 h lead
        ({"access_expires_at": NOW - HOUR}, True),
        ({"access_expires_at": None, "has_access_token": False}, True),
        ({"access_expires_at": NOW - HOUR, "refresh_backoff_until": NOW + MIN}, False),
        ({"access_expires_at": NOW - HOUR, "refresh_backoff_until": NOW}, True),
        ({"access_expires_at": NOW - HOUR, "needs_relogin": True}, False),
        ({"access_expires_at": NOW - HOUR, "enabled": False}, False),
        ({"access_expires_at": NOW - HOUR, "has_refresh_token": False}, False),
        ({"access_expires_at": NOW - HOUR, "is_oauth": False}, False),
        ({"access_expires_at": NOW - HOUR, "cooldown_until": NOW + HOUR}, True),  # parked too
    ],
)
def test_refresh_due(changes, due):
    assert refresh_due(replace(HEALTHY, **changes), POLICY, NOW) is due


@pytest.mark.parametrize(
    ("changes", "due"),
    [
        ({}, False),
        ({"quota_checked_at": NOW - 5 * MIN}, True),
        ({"quota_checked_at": None}, True),
        ({"quota_checked_at": None, "quota_backoff_until": NOW + MIN}, False),
        ({"quota_checked_at": None, "access_expires_at": NOW - MIN}, False),
        ({"policy_status": PolicyStatus.BLOCKED, "policy_checked_at": NOW - 29 * MIN}, False),
        ({"policy_status": PolicyStatus.BLOCKED, "policy_checked_at": NOW - 30 * MIN}, True),
        ({"quota_checked_at": None, "enabled": False}, False),
        # relayed answers' headers keep a busy account's windows live: no poll needed
        ({"quota_checked_at": NOW - 9 * MIN, "windows_observed_at": NOW - 2 * MIN}, False),
        ({"quota_checked_at": NOW - 9 * MIN, "windows_observed_at": NOW - 5 * MIN}, True),
        ({"quota_checked_at": None, "windows_observed_at": NOW}, True),  # never polled
    ],
)
def test_quota_due(changes, due):
    assert quota_due(replace(HEALTHY, **changes), POLICY, NOW) is due


def _verdict(policy=POLICY, **changes):
    return eligibility(replace(HEALTHY, **changes), policy, NOW)


def _codes(verdict):
    return [r.code for r in verdict.reasons]


def test_a_healthy_account_is_usable_with_no_reasons():
    verdict = _verdict()
    assert verdict.status == Status.USABLE
    assert verdict.reasons == ()
    assert verdict.next_change_at is None


@pytest.mark.parametrize(
    ("changes", "status", "code", "until", "clears_on"),
    [
        ({"enabled": False}, Status.EXCLUDED, ReasonCode.DISABLED, None, ClearsOn.MANUAL),
        (
            {"needs_relogin": True, "access_expires_at": NOW - MIN},
            Status.EXCLUDED,
            ReasonCode.NEEDS_RELOGIN,
            None,
            ClearsOn.RELOGIN,
        ),
        (
            {"refresh_backoff_until": NOW + 5 * MIN, "access_expires_at": NOW - MIN},
            Status.EXCLUDED,
            ReasonCode.REFRESH_BACKOFF,
            NOW + 5 * MIN,
            ClearsOn.TIME,
        ),
        (
            {"refresh_backoff_until": NOW + 5 * MIN},
            Status.DEGRADED,
            ReasonCode.REFRESH_BACKOFF,
            NOW + 5 * MIN,
            ClearsOn.TIME,
        ),
        (
            {"access_expires_at": NOW - MIN},
            Status.EXCLUDED,
            ReasonCode.TOKEN_EXPIRED,
            None,
            ClearsOn.SUCCESS,
        ),
        (
            {"policy_status": PolicyStatus.BLOCKED, "policy_message": "not allowed"},
            Status.EXCLUDED,
            ReasonCode.ORG_POLICY_BLOCKED,
            None,
            ClearsOn.SUCCESS,
        ),
        (
            {"windows": (Window("five_hour", "5-hour", 100.0, NOW + 4 * HOUR),)},
            Status.EXCLUDED,
            ReasonCode.QUOTA_EXHAUSTED,
            NOW + 4 * HOUR,
            ClearsOn.TIME,
        ),
        (
            {"quota_checked_at": None, "windows": ()},
            Status.EXCLUDED,
            ReasonCode.QUOTA_UNKNOWN,
            None,
            ClearsOn.SUCCESS,
        ),
        (
            {"quota_checked_at": NOW - 20 * MIN, "quota_backoff_until": NOW + 3 * MIN},
            Status.DEGRADED,
            ReasonCode.QUOTA_STALE,
            NOW + 3 * MIN,
            ClearsOn.SUCCESS,
        ),
        (
            {"cooldown_until": NOW + 20 * MIN, "cooldown_reason": "429"},
            Status.EXCLUDED,
            ReasonCode.COOLDOWN,
            NOW + 20 * MIN,
            ClearsOn.TIME,
        ),
    ],
)
def test_each_reason_says_why_and_until_when(changes, status, code, until, clears_on):
    verdict = _verdict(**changes)
    assert verdict.status == status
    reason = verdict.first_reason
    assert reason is not None
    assert (reason.code, reason.until, reason.clears_on) == (code, until, clears_on)
    assert reason.message


def test_the_policy_reason_carries_the_providers_message():
    verdict = _verdict(policy_status=PolicyStatus.BLOCKED, policy_message="OAuth not allowed")
    assert "OAuth not allowed" in verdict.reasons[0].message


def test_unknown_quota_only_degrades_when_the_pool_fails_open():
    fail_open = PoolPolicy(fail_closed_on_unknown_quota=False)
    verdict = _verdict(fail_open, quota_checked_at=None, windows=())
    assert verdict.status == Status.DEGRADED
    assert _codes(verdict) == [ReasonCode.QUOTA_UNKNOWN]


def test_windows_that_are_all_unknown_mean_unknown_quota():
    windows = (Window("five_hour", "5-hour", None, None), Window("seven_day", "7-day", None, None))
    assert _codes(_verdict(windows=windows)) == [ReasonCode.QUOTA_UNKNOWN]


@pytest.mark.parametrize(
    ("utilization", "minimum", "excluded"),
    [(89.0, 10.0, False), (90.5, 10.0, True), (99.9, 0.0, False), (100.0, 0.0, True)],
)
def test_a_window_below_the_pool_minimum_excludes(utilization, minimum, excluded):
    policy = PoolPolicy(min_remaining_percent=minimum)
    verdict = _verdict(policy, windows=(Window("seven_day", "7-day", utilization, NOW + HOUR),))
    assert (verdict.status == Status.EXCLUDED) is excluded


def test_a_window_whose_reset_has_passed_no_longer_excludes():
    verdict = _verdict(windows=(Window("five_hour", "5-hour", 100.0, NOW - MIN),))
    assert verdict.status == Status.USABLE


def test_excluding_reasons_come_first_and_next_change_is_the_earliest_until():
    verdict = _verdict(
        refresh_backoff_until=NOW + 30 * MIN,  # degraded only: token still valid
        cooldown_until=NOW + 20 * MIN,
        windows=(Window("five_hour", "5-hour", 100.0, NOW + 4 * HOUR),),
    )
    assert verdict.status == Status.EXCLUDED
    assert _codes(verdict) == [
        ReasonCode.QUOTA_EXHAUSTED,
        ReasonCode.COOLDOWN,
        ReasonCode.REFRESH_BACKOFF,
    ]
    assert verdict.next_change_at == NOW + 20 * MIN
    assert verdict.usable_at == NOW + 4 * HOUR


def test_usable_at_is_unknown_when_a_reason_needs_a_person():
    verdict = _verdict(enabled=False, cooldown_until=NOW + MIN)
    assert verdict.usable_at is None


def test_api_key_accounts_have_no_token_or_quota_reasons():
    verdict = _verdict(is_oauth=False, access_expires_at=None, quota_checked_at=None, windows=())
    assert verdict.status == Status.USABLE


def test_a_degraded_backoff_changes_when_the_token_expires_before_it_ends():
    verdict = _verdict(access_expires_at=NOW + 30 * MIN, refresh_backoff_until=NOW + 2 * HOUR)
    assert verdict.status == Status.DEGRADED
    assert verdict.next_change_at == NOW + 30 * MIN


def test_a_full_window_without_a_reset_time_clears_on_the_next_check():
    reason = _verdict(windows=(Window("seven_day", "7-day", 100.0, None),)).first_reason
    assert (reason.code, reason.until, reason.clears_on) == (
        ReasonCode.QUOTA_EXHAUSTED,
        None,
        ClearsOn.SUCCESS,
    )


def test_the_policy_reason_says_when_it_is_rechecked():
    reason = _verdict(
        policy_status=PolicyStatus.BLOCKED, policy_message="no", policy_checked_at=NOW - MIN
    ).first_reason
    assert "rechecked after 12:29 UTC, 29 Nov 2026" in reason.message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, NOW - MIN + 5 * MIN),
        ({"quota_backoff_until": NOW + 3 * MIN}, NOW + 3 * MIN),
        ({"policy_status": PolicyStatus.BLOCKED}, NOW - MIN + 30 * MIN),
        ({"access_expires_at": NOW - MIN}, None),  # a refresh comes first
        ({"enabled": False}, None),
        ({"quota_checked_at": None}, None),
        ({"quota_checked_at": NOW - 9 * MIN, "windows_observed_at": NOW - 2 * MIN}, NOW + 3 * MIN),
    ],
)
def test_the_next_quota_check_mirrors_due_ness(changes, expected):
    assert quota_next_check_at(replace(HEALTHY, **changes), POLICY, NOW) == expected


def test_a_forced_retry_waits_a_minute_after_the_last_failure():
    from accounts_pool.state import force_too_soon

    assert not force_too_soon(None, NOW)
    assert force_too_soon(NOW - timedelta(seconds=59), NOW)
    assert not force_too_soon(NOW - timedelta(seconds=61), NOW)


def test_a_reported_429_cools_down_by_retry_after_else_the_fullest_reset_capped():
    from accounts_pool.state import report_cooldown

    soon, later = NOW + timedelta(minutes=5), NOW + timedelta(minutes=12)
    assert report_cooldown("120", [(100.0, soon)], NOW) == timedelta(minutes=2)
    assert report_cooldown(None, [(40.0, soon), (100.0, later)], NOW) == timedelta(minutes=12)
    assert report_cooldown(None, [(40.0, soon), (50.0, later)], NOW) == timedelta(minutes=5)
    assert report_cooldown(None, [(100.0, NOW + timedelta(days=3))], NOW) == timedelta(minutes=30)
    assert report_cooldown(None, [], NOW) == timedelta(minutes=30)


OPUS_ONLY = Window(
    "model:claude-opus-4", "Opus-only weekly", 100.0, NOW + 3 * HOUR, NOW, "claude-opus-4", "Opus"
)
OPUS_BY_NAME = replace(OPUS_ONLY, key="model:opus", model_id="")


def test_a_full_scoped_window_leaves_the_account_usable_when_no_model_is_asked_for():
    verdict = eligibility(replace(HEALTHY, windows=(*HEALTHY.windows, OPUS_ONLY)), POLICY, NOW)
    assert verdict.status == Status.USABLE
    assert verdict.reasons == ()


@pytest.mark.parametrize(
    ("window", "model", "excluded"),
    [
        (OPUS_ONLY, "claude-opus-4", True),
        (OPUS_ONLY, "claude-opus-4-5", False),  # an id names one model exactly
        (OPUS_ONLY, "claude-sonnet-4-5", False),
        (OPUS_BY_NAME, "claude-opus-4-5", True),  # no id: the display name names the family
        (OPUS_BY_NAME, "claude-haiku-4-5", False),
        (OPUS_BY_NAME, "some-model", False),
    ],
)
def test_a_full_scoped_window_excludes_only_requests_for_its_model(window, model, excluded):
    verdict = eligibility(
        replace(HEALTHY, windows=(*HEALTHY.windows, window)), POLICY, NOW, model=model
    )
    assert (verdict.status == Status.EXCLUDED) is excluded
    if excluded:
        assert verdict.reasons[0].code == ReasonCode.QUOTA_EXHAUSTED
        assert verdict.reasons[0].message.startswith("Opus-only weekly window at 100%")


def test_a_scoped_window_alone_is_not_a_known_quota():
    verdict = eligibility(replace(HEALTHY, windows=(OPUS_ONLY,)), POLICY, NOW)
    assert verdict.reasons[0].code == ReasonCode.QUOTA_UNKNOWN


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-opus-4-5-20251101", "opus"),
        ("claude-3-5-sonnet", "sonnet"),
        ("Claude-Haiku", "haiku"),
        ("gpt-5", ""),
    ],
)
def test_a_models_family_is_the_first_family_named_in_its_id(model, family):
    assert model_family(model) == family


def test_account_wide_windows_apply_to_every_request():
    assert window_applies(HEALTHY.windows[0], None)
    assert window_applies(HEALTHY.windows[0], "claude-opus-4")
    assert not window_applies(OPUS_ONLY, None)


def test_a_refresh_backoff_after_a_rejected_access_token_says_so():
    rejected = replace(
        HEALTHY,
        access_expires_at=NOW,
        refresh_backoff_until=NOW + 5 * MIN,
        refresh_error_kind="access_rejected",
        refresh_error_status=401,
        refresh_error_message="the usage endpoint rejected the access token a refresh had just "
        "issued",
    )
    reason = eligibility(rejected, POLICY, NOW).reasons[0]
    assert reason.code == ReasonCode.REFRESH_BACKOFF
    assert reason.excludes
    assert reason.message.startswith("Access token rejected (HTTP 401 right after a refresh: ")
    assert "the usage endpoint rejected" in reason.message


STALE = {"quota_checked_at": NOW - 20 * MIN, "quota_error_message": "HTTP 503"}


@pytest.mark.parametrize(
    ("changes", "codes", "until"),
    [
        (
            {**STALE, "quota_backoff_until": NOW + 3 * MIN, "quota_failures": 2},
            ["quota_stale"],
            NOW + 3 * MIN,
        ),
        # The backoff ended, the checks still fail (failures are cleared only by a success).
        ({**STALE, "quota_backoff_until": NOW - MIN, "quota_failures": 2}, ["quota_stale"], None),
        ({**STALE, "quota_backoff_until": None, "quota_failures": 1}, ["quota_stale"], None),
        # Old but nothing failing: simply due, not stale.
        ({**STALE, "quota_backoff_until": None, "quota_failures": 0}, [], None),
        # Fresh snapshot with failures: not stale yet.
        ({"quota_checked_at": NOW - MIN, "quota_failures": 3}, [], None),
    ],
)
def test_quota_stays_stale_while_checks_fail_even_between_backoffs(changes, codes, until):
    verdict = _verdict(**changes)
    assert [r.code.value for r in verdict.reasons] == codes
    if codes:
        assert verdict.status == Status.DEGRADED
        assert verdict.reasons[0].until == until


FULL = Window("five_hour", "5-hour", 100.0, NOW + 4 * HOUR)


@pytest.mark.parametrize(
    ("before", "after", "since"),
    [
        (None, FULL, NOW),
        (replace(FULL, exhausted_since=NOW - HOUR), FULL, NOW - HOUR),
        # a poll's reset to the microsecond, then the headers' to the second: the same period
        (
            replace(FULL, exhausted_since=NOW - HOUR),
            replace(FULL, resets_at=NOW + 4 * HOUR + timedelta(microseconds=400_000)),
            NOW - HOUR,
        ),
        (replace(FULL, exhausted_since=NOW - HOUR), replace(FULL, resets_at=NOW + 9 * HOUR), NOW),
        (replace(FULL, utilization=50.0), FULL, NOW),
        (replace(FULL, exhausted_since=NOW - HOUR), replace(FULL, utilization=40.0), None),
    ],
)
def test_exhausted_since_is_kept_across_polls_of_the_same_period(before, after, since):
    assert exhausted_since(before, after, POLICY, NOW) == since


def test_quota_exhausted_since_is_when_the_window_filled_not_the_last_poll():
    window = replace(FULL, checked_at=NOW - MIN, exhausted_since=NOW - 2 * HOUR)
    reason = _verdict(windows=(window,)).reasons[0]
    assert reason.code == ReasonCode.QUOTA_EXHAUSTED
    assert reason.since == NOW - 2 * HOUR


# --- A 401 report's version, and interrupted refreshes (issue 16) ------------------------------


def test_a_401_about_a_replaced_credential_is_stale():
    from accounts_pool.state import Report401Action, report_401_action

    assert (
        report_401_action(reported_version=3, current_version=4, token_from_401=False)
        == Report401Action.STALE
    )
    assert (
        report_401_action(reported_version=3, current_version=4, token_from_401=True)
        == Report401Action.STALE
    )


def test_a_401_about_the_current_credential_refreshes_once_then_backs_off():
    from accounts_pool.state import Report401Action, report_401_action

    assert (
        report_401_action(reported_version=4, current_version=4, token_from_401=False)
        == Report401Action.REFRESH
    )
    assert (
        report_401_action(reported_version=4, current_version=4, token_from_401=True)
        == Report401Action.BACK_OFF
    )
    # A checkout recorded before versions were kept is taken as about the current credential.
    assert (
        report_401_action(reported_version=None, current_version=4, token_from_401=False)
        == Report401Action.REFRESH
    )


def test_a_refresh_is_interrupted_only_once_its_claim_lapsed_without_an_answer():
    from accounts_pool.state import refresh_interrupted

    sent = NOW - timedelta(minutes=3)
    assert refresh_interrupted(sent_at=sent, claimed_until=NOW - timedelta(seconds=1), now=NOW)
    assert refresh_interrupted(sent_at=sent, claimed_until=None, now=NOW)
    # Still in flight under its claim, or no request out: not interrupted.
    assert not refresh_interrupted(sent_at=sent, claimed_until=NOW + timedelta(seconds=5), now=NOW)
    assert not refresh_interrupted(sent_at=None, claimed_until=None, now=NOW)


def test_an_invalid_grant_after_an_interrupted_refresh_says_the_token_may_have_rotated():
    from accounts_pool.state import (
        INTERRUPTED_REFRESH_NOTE,
        FailureKind,
        TokenFailure,
        interrupted_failure,
    )

    dead = TokenFailure(kind=FailureKind.INVALID_GRANT, status=400, message="invalid_grant")
    said = interrupted_failure(dead, interrupted=True)
    assert said.message.startswith(INTERRUPTED_REFRESH_NOTE)
    assert (said.kind, said.status) == (FailureKind.INVALID_GRANT, 400)
    assert interrupted_failure(dead, interrupted=False) == dead
    busy = TokenFailure(kind=FailureKind.SERVER_ERROR, status=503, message="overloaded")
    assert interrupted_failure(busy, interrupted=True) == busy
