"""The pure notification rules, table-driven with a fixed clock: which verdicts are conditions,
flap damping, the hourly cap, retry spacing, signatures, refused addresses and masks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounts_pool import notifyrules
from accounts_pool.notifyrules import Direction, Kind, Memory, notification_step
from accounts_pool.state import (
    ClearsOn,
    ForecastBasis,
    PoolForecast,
    Reason,
    ReasonCode,
    Status,
    Verdict,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _run(kind: Kind, timeline: list[tuple[int, bool]]) -> list[tuple[int, Direction]]:
    """Evaluate `kind` at each (minute, holds); the messages sent, as (minute, direction)."""
    memory, sent = Memory(), []
    for minute, holds in timeline:
        step = notification_step(memory, holds=holds, kind=kind, now=T0 + minute * MIN)
        memory = step.memory
        if step.send is not None:
            sent.append((minute, step.send))
    return sent


@pytest.mark.parametrize(
    ("timeline", "sent"),
    [
        # Holds from 0, evaluated each minute: announced once, at 5, never again.
        ([(m, True) for m in range(0, 30)], [(5, Direction.STARTED)]),
        # Reverts within 5 minutes: nothing at all.
        ([(0, True), (1, True), (4, True), (5, False), (6, False), (20, False)], []),
        # Reverts exactly as the 5 minutes end (at 4:59 it still held): nothing.
        ([(0, True), (4, True), (5, False), (11, False)], []),
        # Holds 5 minutes, then ends and stays ended 5 minutes: started, then ended.
        (
            [(0, True), (5, True), (6, False), (10, False), (11, False)],
            [(5, "started"), (11, "ended")],
        ),
        # Flapping every 2 minutes for an hour: nothing.
        ([(m, m % 4 < 2) for m in range(0, 60)], []),
        # Never held: nothing.
        ([(m, False) for m in range(0, 30)], []),
    ],
)
def test_it_damps_flaps_of_five_minutes(timeline, sent):
    assert _run(Kind.POLICY_BLOCKED, timeline) == sent


@pytest.mark.parametrize(
    ("timeline", "sent"),
    [
        # Started at 5, ended at 16, started again at 26: capped until 65 (an hour after 5).
        (
            [
                (0, True),
                (5, True),
                (10, False),
                (16, False),
                (20, True),
                (26, True),
                (40, True),
                (64, True),
                (65, True),
                (70, True),
            ],
            [(5, "started"), (16, "ended"), (65, "started")],
        ),
        # The same, but it ended again before the hour was over: nothing more to say.
        (
            [
                (0, True),
                (5, True),
                (10, False),
                (16, False),
                (20, True),
                (26, True),
                (40, False),
                (65, False),
                (70, False),
            ],
            [(5, "started"), (16, "ended")],
        ),
    ],
)
def test_it_sends_at_most_one_message_per_kind_and_direction_an_hour(timeline, sent):
    assert _run(Kind.POLICY_BLOCKED, timeline) == sent


def test_it_sends_needs_relogin_at_once_as_only_a_person_ends_it():
    assert _run(Kind.NEEDS_RELOGIN, [(0, True), (1, True), (2, False)]) == [
        (0, Direction.STARTED),
        (2, Direction.ENDED),
    ]


def _verdict(*reasons: Reason) -> Verdict:
    return Verdict(Status.EXCLUDED if reasons else Status.USABLE, reasons, None)


def _reason(code: ReasonCode, until: datetime | None = None) -> Reason:
    return Reason(code, f"{code} words", T0, until, ClearsOn.TIME, True)


@pytest.mark.parametrize(
    ("verdict", "kinds"),
    [
        (_verdict(), set()),
        (_verdict(_reason(ReasonCode.NEEDS_RELOGIN)), {Kind.NEEDS_RELOGIN}),
        (_verdict(_reason(ReasonCode.ORG_POLICY_BLOCKED)), {Kind.POLICY_BLOCKED}),
        (_verdict(_reason(ReasonCode.REFRESH_BACKOFF, T0 + 61 * MIN)), {Kind.REFRESH_BACKOFF}),
        (_verdict(_reason(ReasonCode.REFRESH_BACKOFF, T0 + 60 * MIN)), set()),
        (_verdict(_reason(ReasonCode.COOLDOWN, T0 + 300 * MIN)), set()),
        (_verdict(_reason(ReasonCode.QUOTA_EXHAUSTED, T0 + 300 * MIN)), set()),
        (
            _verdict(_reason(ReasonCode.NEEDS_RELOGIN), _reason(ReasonCode.ORG_POLICY_BLOCKED)),
            {Kind.NEEDS_RELOGIN, Kind.POLICY_BLOCKED},
        ),
    ],
)
def test_it_derives_account_conditions_from_the_verdict(verdict, kinds):
    assert set(notifyrules.account_conditions(verdict, T0)) == kinds


@pytest.mark.parametrize(
    ("usable", "total", "minimum", "kinds"),
    [
        (0, 0, 0, set()),  # an empty pool lost nothing
        (0, 3, 0, {Kind.POOL_DRY}),
        (0, 3, 2, {Kind.POOL_DRY}),  # dry, not also low
        (1, 3, 2, {Kind.POOL_LOW}),
        (2, 3, 2, set()),
        (1, 3, 0, set()),
    ],
)
def test_it_derives_pool_conditions_from_the_usable_count(usable, total, minimum, kinds):
    found = notifyrules.pool_conditions(usable=usable, total=total, minimum_usable=minimum)
    assert set(found) == kinds


def _forecast(basis, dry_in=None, back_in=None, burn=None):
    return PoolForecast(
        runs_dry_at=T0 + dry_in * MIN if dry_in is not None else None,
        basis=basis,
        back_at=T0 + back_in * MIN if back_in is not None else None,
        burn_per_hour={"five_hour": 30.0} if burn is None else burn,
    )


@pytest.mark.parametrize(
    ("forecast", "warned", "holds"),
    [
        (_forecast(ForecastBasis.PACE, dry_in=35, back_in=120), False, True),
        (_forecast(ForecastBasis.PACE, dry_in=60), False, True),  # exactly the hour: within
        (_forecast(ForecastBasis.PACE, dry_in=61), False, False),
        (_forecast(ForecastBasis.PACE, dry_in=61), True, False),  # the pace eased: it ends
        (_forecast(ForecastBasis.PACE, dry_in=0), False, True),
        (_forecast(ForecastBasis.LASTS), True, False),
        (_forecast(ForecastBasis.NO_BURN, burn={}), True, False),
        (_forecast(ForecastBasis.UNKNOWN), True, False),
        # Ran dry as forecast: the warning stands (no "no longer" as it comes true)...
        (_forecast(ForecastBasis.DRY_NOW, dry_in=0, back_in=90), True, True),
        # ...but a pool that runs dry unwarned is pool_dry's news only.
        (_forecast(ForecastBasis.DRY_NOW, dry_in=0, back_in=90), False, False),
    ],
)
def test_the_forecast_is_news_when_the_pool_runs_dry_within_the_hour(forecast, warned, holds):
    found = notifyrules.forecast_conditions(forecast, T0, warned=warned)
    assert (Kind.POOL_FORECAST_DRY in found) is holds
    assert set(found) <= {Kind.POOL_FORECAST_DRY}


def test_the_forecast_reason_says_when_at_what_pace_and_when_an_account_is_back():
    forecast = _forecast(ForecastBasis.PACE, dry_in=35, back_in=120, burn={"five_hour": 42.4})
    reason = notifyrules.forecast_conditions(forecast, T0, warned=False)[Kind.POOL_FORECAST_DRY]
    assert reason == (
        "At the last hour's pace (five-hour window 42 points an hour across the pool) every "
        "usable account's quota is used up at 09:35 UTC (in 35 min); the first account is "
        "usable again at 11:00 UTC (in 2 h)."
    )
    unknown = _forecast(ForecastBasis.PACE, dry_in=10)
    assert (
        "no account is known to be back"
        in notifyrules.forecast_conditions(unknown, T0, warned=False)[Kind.POOL_FORECAST_DRY]
    )


def test_a_forecast_that_holds_is_sent_once_damped_and_capped_like_any_pool_kind():
    """The forecast flapping across the hour's edge within 5 minutes sends nothing; held, it is
    announced once; ended and back within the hour, the second start waits for the cap."""
    timeline = [(0, True), (2, False), (3, False), (10, True)] + [(m, True) for m in range(11, 16)]
    timeline += [(m, False) for m in range(16, 22)] + [(m, True) for m in range(22, 80)]
    assert _run(Kind.POOL_FORECAST_DRY, timeline) == [
        (15, Direction.STARTED),
        (21, Direction.ENDED),
        (75, Direction.STARTED),
    ]


def test_degraded_accounts_count_as_usable():
    assert notifyrules.usable_count([Status.USABLE, Status.DEGRADED, Status.EXCLUDED]) == (2, 3)


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, 30), (2, 60), (3, 120), (8, 3840), (9, 7200), (40, 7200)],
)
def test_retries_double_from_the_base_up_to_two_hours(attempts, delay):
    assert notifyrules.retry_delay(attempts, timedelta(seconds=30)) == timedelta(seconds=delay)


def test_retries_stop_after_24_hours_from_the_transition():
    base = timedelta(seconds=30)
    late = T0 + timedelta(hours=23, minutes=59)
    assert notifyrules.next_attempt_at(created_at=T0, attempts=3, now=T0, base=base) == T0 + 2 * MIN
    assert notifyrules.next_attempt_at(created_at=T0, attempts=20, now=late, base=base) is None


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("169.254.169.254", True),
        ("10.1.2.3", True),
        ("192.168.0.10", True),
        ("172.16.5.4", True),
        ("::1", True),
        ("fe80::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("93.184.216.34", False),
        ("2606:4700::6810:84e5", False),
    ],
)
def test_it_refuses_addresses_inside_the_network(address, refused):
    assert notifyrules.address_refused(address) is refused


@pytest.mark.parametrize(
    ("url", "addresses", "allow", "problem"),
    [
        ("https://hooks.example.com/x", ["93.184.216.34"], False, None),
        ("http://127.0.0.1:9/x", ["127.0.0.1"], False, "127.0.0.1"),
        ("http://169.254.169.254/latest", ["169.254.169.254"], False, "169.254.169.254"),
        ("http://127.0.0.1:9/x", ["127.0.0.1"], True, None),
        ("https://both.example/x", ["93.184.216.34", "10.0.0.1"], False, "10.0.0.1"),
        ("ftp://example.com/x", ["93.184.216.34"], True, "http"),
        ("https://user:pw@example.com/", ["93.184.216.34"], True, "user name"),
        ("https://nowhere.invalid/", None, True, "does not resolve"),
        ("http://example.com:99999/x", ["93.184.216.34"], True, "http"),
        ("http://[::1/x", None, True, "http"),
    ],
)
def test_it_says_why_a_target_may_not_be_used(url, addresses, allow, problem):
    found = notifyrules.target_problem(url, addresses, allow_private=allow)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_masks_show_the_host_and_domains_only():
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert notifyrules.mask_url(url) == "https://hooks.slack.com/…"
    assert (
        notifyrules.mask_addresses("alice@acme.test, ops@acme.test") == "a…@acme.test, o…@acme.test"
    )


def test_the_signature_covers_timestamp_and_body():
    first = notifyrules.signature("whsec_x", 1700000000, b'{"a":1}')
    assert first.startswith("v1=")
    assert len(first) == 67
    assert first != notifyrules.signature("whsec_x", 1700000001, b'{"a":1}')
    assert first != notifyrules.signature("whsec_x", 1700000000, b'{"a":2}')
