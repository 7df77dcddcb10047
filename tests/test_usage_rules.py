"""The pure rules of usage: reading tokens from an answer's bytes, the forecast, key limits."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from accounts_pool import charts, state
from accounts_pool.state import ForecastBasis, QuotaObservation
from accounts_pool.usage_meter import Tokens, UsageMeter

NOW = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def sse(*events: tuple[str, dict], crlf: bool = False) -> bytes:
    text = "".join(f"event: {kind}\ndata: {json.dumps(data)}\n\n" for kind, data in events)
    return (text.replace("\n", "\r\n") if crlf else text).encode()


STREAM_EVENTS = (
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "usage": {
                    "input_tokens": 120,
                    "output_tokens": 1,
                    "cache_creation_input_tokens": 7,
                    "cache_read_input_tokens": 300,
                }
            },
        },
    ),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "message_delta"}}),
    ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 42}}),
    ("message_stop", {"type": "message_stop"}),
)
STREAM_TOKENS = Tokens(120, 42, 7, 300)


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100_000])
@pytest.mark.parametrize("crlf", [False, True])
def test_a_streams_usage_is_read_whatever_the_chunk_boundaries(size, crlf):
    raw = sse(*STREAM_EVENTS, crlf=crlf)
    meter = UsageMeter("text/event-stream; charset=utf-8")
    for i in range(0, len(raw), size):
        meter.feed(raw[i : i + size])
    assert meter.finish() == STREAM_TOKENS


def test_a_json_answers_usage_is_read_at_its_end():
    body = {
        "content": [{"type": "tool_use", "input": {"usage": {"input_tokens": 999}}}],
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2},
    }
    raw = json.dumps(body).encode()
    meter = UsageMeter("application/json")
    for i in range(0, len(raw), 5):
        meter.feed(raw[i : i + 5])
    assert meter.finish() == Tokens(10, 5, 0, 2)


def test_a_stream_cut_after_message_start_counts_its_input():
    raw = sse(*STREAM_EVENTS[:3])
    meter = UsageMeter("text/event-stream")
    meter.feed(raw[:-1])  # the last event not even closed
    assert meter.finish() == Tokens(120, 1, 7, 300)


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b'{"usage": {"input_tokens": -4, "output_tokens": "7"}}', b"[1, 2]"],
)
def test_unreadable_or_odd_answers_count_no_tokens(raw):
    meter = UsageMeter("application/json")
    meter.feed(raw)
    assert meter.finish() == Tokens()


def obs(minutes_ago: float, used: float | None, resets_in: float | None = 120) -> QuotaObservation:
    at = NOW - timedelta(minutes=minutes_ago)
    resets = None if resets_in is None else NOW + timedelta(minutes=resets_in)
    return QuotaObservation(at, used, resets)


@pytest.mark.parametrize(
    ("case", "points", "rate", "full_at", "before_reset"),
    [
        ("steady burn", [obs(60, 20), obs(30, 35), obs(0, 50)], 30.0, NOW + 100 * MIN, True),
        ("no burn", [obs(60, 40), obs(0, 40)], 0.0, None, False),
        ("burn that stops at the reset", [obs(60, 10), obs(0, 20)], 10.0, NOW + 480 * MIN, False),
        ("unknown window", [obs(0, None)], None, None, False),
        ("too short a span", [obs(2, 10), obs(0, 30)], None, None, False),
        (
            "a reset inside the hour",
            [obs(50, 90), obs(20, 5), obs(0, 25)],
            60.0,
            NOW + 75 * MIN,
            True,
        ),
        ("older than an hour", [obs(120, 0), obs(90, 50), obs(0, 60)], None, None, False),
        ("already full", [obs(30, 80), obs(0, 100)], 40.0, NOW, True),
    ],
)
def test_window_forecast(case, points, rate, full_at, before_reset):
    forecast = state.window_forecast("five_hour", points, NOW)
    assert forecast.burn_per_hour == (pytest.approx(rate) if rate is not None else None), case
    assert forecast.full_at == full_at, case
    assert forecast.full_before_reset is before_reset, case


def outlook(used: float | None, rate: float | None, resets_in: float = 300, usable=True, back=None):
    resets = NOW + timedelta(minutes=resets_in)
    window = state.WindowForecast("five_hour", used, resets, rate, None, False)
    return state.AccountOutlook(usable, back, (window,))


@pytest.mark.parametrize(
    ("case", "accounts", "basis", "dry_at", "back_at"),
    [
        # Two accounts at 50% burning 25 points an hour in all: 100 points left last 4 hours.
        (
            "steady burn",
            [outlook(50, 10), outlook(50, 15)],
            ForecastBasis.PACE,
            NOW + timedelta(hours=4),
            NOW + timedelta(hours=5),
        ),
        ("no burn", [outlook(50, 0), outlook(90, None)], ForecastBasis.NO_BURN, None, None),
        # 15 points an hour: 65% at the reset in an hour, then 75% of each 5-hour window.
        (
            "burn that stops at the reset",
            [outlook(50, 15, resets_in=60)],
            ForecastBasis.LASTS,
            None,
            None,
        ),
        # 60 points an hour fills a fresh window 100 min after each reset: dry at 2 h 40 min.
        (
            "a pace no reset saves",
            [outlook(0, 60, resets_in=60)],
            ForecastBasis.PACE,
            NOW + 160 * MIN,
            NOW + 360 * MIN,
        ),
        ("unknown windows", [outlook(None, None)], ForecastBasis.UNKNOWN, None, None),
        (
            "dry now, back at a cooldown's end",
            [outlook(100, 0, usable=False, back=NOW + 20 * MIN)],
            ForecastBasis.DRY_NOW,
            NOW,
            NOW + 20 * MIN,
        ),
        # One usable account full in 30 min; the other comes back from a cooldown in 60 min.
        (
            "a returning account",
            [outlook(90, 20), outlook(0, 0, usable=False, back=NOW + 60 * MIN)],
            ForecastBasis.PACE,
            NOW + 30 * MIN,
            NOW + 60 * MIN,
        ),
    ],
)
def test_pool_forecast(case, accounts, basis, dry_at, back_at):
    forecast = state.pool_forecast(accounts, NOW)
    assert forecast.basis == basis, case
    if dry_at is None:
        assert forecast.runs_dry_at is None, case
    else:
        assert abs(forecast.runs_dry_at - dry_at) < timedelta(seconds=1), case
    assert forecast.back_at == back_at, case


@pytest.mark.parametrize(
    ("families", "model", "allowed"),
    [
        ((), None, True),
        (("sonnet",), "claude-sonnet-4-5", True),
        (("sonnet",), "claude-opus-4-5", False),
        (("sonnet", "haiku"), "claude-3-5-haiku-latest", True),
        (("sonnet",), None, False),
        (("sonnet",), "gpt-5", False),
    ],
)
def test_model_families(families, model, allowed):
    assert state.model_allowed(state.KeyLimits(model_families=families), model) is allowed


@pytest.mark.parametrize(
    ("used", "limit", "retry_after"),
    [
        ({}, 100, None),
        ({NOW: 99}, 100, None),
        # All in this hour: it leaves the window 5 hours after the hour began.
        ({NOW: 100}, 100, 5 * 3600 + 1),
        # The oldest counted hour (10:00) leaves at 15:00, an hour from now, and that suffices.
        ({NOW - timedelta(hours=4): 60, NOW: 50}, 100, 3600 + 1),
        # Hours older than five do not count.
        ({NOW - timedelta(hours=5): 1000, NOW: 10}, 100, None),
    ],
)
def test_tokens_per_5h(used, limit, retry_after):
    assert state.tokens_retry_after(used, limit, NOW) == retry_after


def test_a_minute_limit_waits_for_the_next_minute():
    assert state.minute_retry_after(NOW + timedelta(seconds=45)) == 15


def test_a_week_of_minutes_is_drawn_from_at_most_360_points_keeping_each_peak():
    start = NOW - timedelta(days=7)
    points = [(start + i * MIN, float(i % 97)) for i in range(7 * 1440)]
    drawn = charts.downsample(points, start, NOW)
    assert len(drawn) <= 361
    assert max(v for _, v in drawn) == 96.0
    assert drawn == sorted(drawn)  # still in time order


@pytest.mark.parametrize("tokens", [0, 1, 3, 7, 12_345])
def test_the_token_axis_never_repeats_a_tick_label(tokens: int) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    hours = [start + timedelta(hours=i) for i in range(3)]
    svg, _ = charts.stacked_bars(hours, [("laptop", [tokens, 0, 0])], title="t")
    labels = re.findall(r'text-anchor="end"[^>]*>([^<]+)</text>', str(svg))
    assert len(labels) == 5
    assert len(set(labels)) == 5, labels
