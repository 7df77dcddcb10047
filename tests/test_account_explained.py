"""What the account page says about an account, pure: the card that causes the status, the
next change in words, the levers that apply, and the one time format."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from accounts_pool import explain, timefmt
from accounts_pool.state import AccountState, PolicyStatus, PoolPolicy, Window, eligibility

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MIN, HOUR = timedelta(minutes=1), timedelta(hours=1)
POLICY = PoolPolicy()
HEALTHY = AccountState(
    access_expires_at=NOW + 7 * HOUR,
    quota_checked_at=NOW - MIN,
    policy_checked_at=NOW - MIN,
    windows=(Window("five_hour", "5-hour", 25.0, NOW + 4 * HOUR),),
)


def _explained(**changes):
    state = replace(HEALTHY, **changes)
    return state, eligibility(state, POLICY, NOW)


@pytest.mark.parametrize(
    ("changes", "cards"),
    [
        ({}, {}),
        ({"needs_relogin": True}, {"refresh": "excludes"}),
        ({"policy_status": PolicyStatus.BLOCKED}, {"policy": "excludes"}),
        ({"cooldown_until": NOW + 5 * MIN}, {"cooldown": "excludes"}),
        ({"enabled": False}, {"admin": "excludes"}),
        ({"refresh_backoff_until": NOW + 5 * MIN}, {"refresh": "warns"}),
        (
            {"windows": (Window("five_hour", "5-hour", 100.0, NOW + HOUR),)},
            {"quota": "excludes"},
        ),
    ],
)
def test_the_card_holding_the_reason_is_the_one_highlighted(changes, cards):
    _, verdict = _explained(**changes)
    assert explain.cause_cards(verdict) == cards


def test_a_token_expiring_before_the_refresh_retry_is_explained():
    state, verdict = _explained(
        access_expires_at=NOW + 29 * MIN, refresh_backoff_until=NOW + 35 * MIN
    )
    assert explain.next_change_text(state, verdict, NOW) == (
        "The token expires at 12:29 UTC, before the refresh retry at 12:35 UTC, "
        "so the account is excluded from 12:29 UTC (in 29 min)."
    )


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({}, "Usable; nothing scheduled to change."),
        ({"cooldown_until": NOW + 20 * MIN}, "“rate-limited” ends at 12:20 UTC (in 20 min)."),
        ({"needs_relogin": True}, "Nothing changes by itself: it waits for a re-login."),
        ({"enabled": False}, "Nothing changes by itself: it waits for enabling it."),
    ],
)
def test_the_next_change_says_what_ends_and_when(changes, text):
    state, verdict = _explained(**changes)
    assert explain.next_change_text(state, verdict, NOW) == text


def _levers(**changes):
    state, verdict = _explained(**changes)
    return {lever.name: lever for lever in explain.levers(state, verdict, NOW)}


def test_a_healthy_account_offers_its_levers_as_secondary_and_no_clear():
    levers = _levers()
    assert set(levers) == {"refresh", "check-quota", "relogin"}
    assert not any(lever.primary for lever in levers.values())


def test_a_rejected_refresh_token_makes_relogin_the_lever_and_hides_refresh():
    levers = _levers(needs_relogin=True)
    assert "refresh" not in levers
    assert levers["relogin"].primary


def test_a_cooldown_is_cleared_by_a_lever_that_says_cooldown():
    levers = _levers(cooldown_until=NOW + 5 * MIN)
    assert levers["clear-backoff"].label == "Clear cooldown"
    assert levers["clear-backoff"].primary


def test_quota_cannot_be_checked_without_a_valid_token():
    levers = _levers(access_expires_at=NOW - MIN)
    assert not levers["check-quota"].applies
    assert levers["refresh"].primary


def test_the_policy_card_knows_its_next_recheck():
    state = replace(HEALTHY, policy_status=PolicyStatus.BLOCKED, policy_checked_at=NOW - 10 * MIN)
    assert explain.policy_next_recheck(state, POLICY) == NOW + 20 * MIN
    assert explain.policy_next_recheck(HEALTHY, POLICY) is None


@pytest.mark.parametrize(
    ("offset", "fact", "deadline"),
    [
        (timedelta(hours=1, minutes=59), "in 1 h 59 min", "in 1 h 59 min"),
        (timedelta(seconds=20), "in under a minute", "in under a minute"),
        (timedelta(seconds=-20), "just now", "due now"),
        (-3 * MIN, "3 min ago", "overdue 3 min"),
        (-3 * timedelta(days=1), "3 d ago", "overdue 3 d"),
    ],
)
def test_one_time_format_relative_first(offset, fact, deadline):
    assert timefmt.distance(NOW + offset, NOW) == fact
    assert timefmt.deadline(NOW + offset, NOW) == deadline


def test_the_absolute_time_is_utc():
    assert timefmt.utc(NOW + 4 * HOUR + 29 * MIN) == "16:29 UTC, 29 Nov 2026"


def test_every_reason_code_has_words_and_a_card():
    from accounts_pool.state import ReasonCode
    from accounts_pool.words import REASON_WORDS

    assert set(REASON_WORDS) == set(ReasonCode)
    assert set(explain.CARD_OF) == set(ReasonCode)
