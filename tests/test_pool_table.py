"""The pool table's rules, pure: filters, search, sort and counts read from the URL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounts_pool.pool_table import Line, TableQuery, table_view
from accounts_pool.state import ClearsOn, Reason, ReasonCode, Status, Verdict, Window

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _line(pk, label, status=Status.USABLE, codes=(), until=None, used=10.0, expires=60, email=""):
    reasons = tuple(
        Reason(ReasonCode(c), c, None, until, ClearsOn.TIME, status == Status.EXCLUDED)
        for c in codes
    )
    window = Window("five_hour", "5-hour", used, NOW + 60 * MIN)
    verdict = Verdict(status, reasons, until)
    return Line(pk, label, email, True, verdict, (window,), NOW + expires * MIN)


LINES = [
    _line(1, "ana", email="ana@x.test", used=30.0, expires=200),
    _line(2, "bo", Status.EXCLUDED, ("needs_relogin",), expires=-5),
    _line(3, "cy", Status.EXCLUDED, ("quota_exhausted",), NOW + 90 * MIN, 100.0),
    _line(4, "di", Status.DEGRADED, ("quota_stale",), NOW + 3 * MIN, 55.0, email="di@corp.test"),
    _line(5, "ed", Status.EXCLUDED, ("cooldown", "quota_stale"), NOW + 10 * MIN),
]


def _labels(params):
    return [line.label for line in table_view(LINES, TableQuery.from_params(params)).lines]


@pytest.mark.parametrize(
    ("params", "labels"),
    [
        ({}, ["bo", "cy", "ed", "di", "ana"]),
        ({"status": "excluded"}, ["bo", "cy", "ed"]),
        ({"reason": "quota_stale"}, ["ed", "di"]),
        ({"reason": "needs_relogin"}, ["bo"]),
        ({"q": "CORP"}, ["di"]),
        ({"q": "an"}, ["ana"]),
        ({"sort": "account"}, ["ana", "bo", "cy", "di", "ed"]),
        ({"sort": "-account"}, ["ed", "di", "cy", "bo", "ana"]),
        ({"sort": "quota"}, ["bo", "ed", "ana", "di", "cy"]),
        ({"sort": "token"}, ["bo", "cy", "di", "ed", "ana"]),
        ({"sort": "until"}, ["di", "ed", "cy", "ana", "bo"]),
        (
            {"status": "nonsense", "reason": "drop table", "sort": "-evil"},
            ["bo", "cy", "ed", "di", "ana"],
        ),
    ],
)
def test_it_filters_searches_and_sorts_from_the_url(params, labels):
    assert _labels(params) == labels


def test_counts_follow_the_search_so_a_badge_says_what_a_click_shows():
    view = table_view(LINES, TableQuery.from_params({"q": "d", "status": "usable"}))
    assert view.status_counts == {"usable": 0, "degraded": 1, "excluded": 1}
    assert [(code, count) for code, _, count in view.reason_counts] == [
        ("quota_stale", 2),
        ("cooldown", 1),
    ]
    assert view.lines == []


def test_reason_counts_name_the_reason_in_words():
    view = table_view(LINES, TableQuery())
    assert ("needs_relogin", "needs re-login", 1) in view.reason_counts


def test_the_query_round_trips_through_its_url_parameters():
    query = TableQuery.from_params({"status": "excluded", "q": " ana ", "sort": "-token"})
    assert query.params() == {"status": "excluded", "q": "ana", "sort": "-token"}
    assert TableQuery.from_params(query.params()) == query
    assert TableQuery().params() == {}
