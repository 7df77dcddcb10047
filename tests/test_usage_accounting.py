"""Usage counted from relayed answers and reports, read back through the API (JSON and CSV);
quota history; the forecast in payloads, the page and /metrics."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts_pool import usage_selectors
from accounts_pool.models import QuotaPoint, UsageHour
from accounts_pool.providers.anthropic import UsageWindow
from accounts_pool.services import usage as usage_service
from accounts_pool.services.keys import api_token_create, consumer_key_create
from accounts_pool.services.quota_history import quota_points_record
from accounts_pool.services.reports import store_windows
from accounts_pool.tasks import prune_events

from .api import Api, error_code
from .test_relay import BODY, MESSAGES, _no_harvest_wait, relay, reply, stream, upstream, usable
from .test_usage_rules import STREAM_EVENTS

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["_no_harvest_wait", "upstream"]  # fixtures shared with test_relay
USAGE = {"input_tokens": 11, "output_tokens": 22, "cache_read_input_tokens": 5}


@pytest.fixture
def keys(pool, alice):
    return [consumer_key_create(pool=pool, name=n, created_by=alice) for n in ("ci", "laptop")]


@pytest.fixture
def lead(alice):
    return Api(api_token_create(user=alice, name="t")[1])


def json_reply(usage=USAGE):
    answer = reply()
    body = {"type": "message", "content": [{"type": "text", "text": "hi"}], "usage": usage}
    return answer.__class__(200, json=body)


def test_json_and_stream_answers_are_counted_per_key_account_model(pool, keys, lead, upstream):
    account = usable(pool, "one")
    upstream.post(MESSAGES).side_effect = [json_reply(), json_reply(), stream(*STREAM_EVENTS)]
    (_ci, ci_secret), (_laptop, laptop_secret) = keys
    assert relay(ci_secret)[0] == 200
    assert relay(ci_secret, body={**BODY, "model": "claude-opus-4-5"})[0] == 200
    assert relay(laptop_secret, body={**BODY, "stream": True})[0] == 200
    assert UsageHour.objects.count() == 0  # nothing written per request
    usage_service.usage_flush()
    rows = lead.get("/pools/claude/usage", group_by="key,model").json()["rows"]
    summary = {(r["key"]["name"], r["model"]): r for r in rows}
    assert summary[("ci", "claude-sonnet-4-5")]["input_tokens"] == 11
    assert summary[("ci", "claude-opus-4-5")]["cache_read_input_tokens"] == 5
    streamed = summary[("laptop", "claude-sonnet-4-5")]
    assert (streamed["input_tokens"], streamed["output_tokens"]) == (120, 42)
    assert (streamed["cache_creation_input_tokens"], streamed["responses_2xx"]) == (7, 1)
    by_account = lead.get("/pools/claude/usage", group_by="account").json()["rows"]
    assert by_account == [
        {**by_account[0], "account": {"id": account.pk, "label": "one"}, "requests": 3}
    ]


def test_a_flush_adds_to_the_hours_row_instead_of_replacing_it(pool, keys, upstream):
    usable(pool, "one")
    upstream.post(MESSAGES).side_effect = [json_reply(), json_reply()]
    relay(keys[0][1])
    usage_service.usage_flush()
    relay(keys[0][1])
    usage_service.usage_flush()
    row = UsageHour.objects.get()
    assert (row.requests, row.input_tokens, row.output_tokens) == (2, 22, 44)


def test_a_passed_through_error_counts_its_status_class_and_no_tokens(pool, keys, upstream):
    usable(pool, "one")
    upstream.post(MESSAGES).respond(529, json={"type": "error", "error": {"type": "overloaded"}})
    assert relay(keys[0][1])[0] == 529
    usage_service.usage_flush()
    row = UsageHour.objects.get()
    assert (row.requests, row.responses_5xx, row.input_tokens) == (1, 1, 0)


def test_count_tokens_and_refused_requests_are_not_usage(pool, keys, upstream):
    upstream.post(f"{MESSAGES}/count_tokens").respond(200, json={"input_tokens": 9})
    relay(keys[0][1])  # no account: 429 from the relay itself
    usable(pool, "one")
    relay(keys[0][1], path="/v1/messages/count_tokens")
    assert usage_service.pending_requests() == 0


def test_a_flush_the_database_refuses_keeps_its_counts(pool, keys, upstream, monkeypatch):
    usable(pool, "one")
    upstream.post(MESSAGES).return_value = json_reply()
    relay(keys[0][1])

    def refuse(*args, **kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr(usage_service, "_upsert", refuse)
    assert usage_service.usage_flush() == 0
    monkeypatch.undo()
    assert usage_service.pending_requests() == 1
    usage_service.usage_flush()
    assert UsageHour.objects.get().requests == 1


def test_a_report_with_usage_is_counted_and_without_it_is_not(pool, keys, lead, provider):
    usable(pool, "one")
    tool = Api(keys[1][1])
    checkout = tool.post("/pools/claude/checkout", {}).json()["checkout_id"]
    report = {"status": 200, "usage": {"input_tokens": 3, "output_tokens": 4}}
    assert tool.post(f"/checkouts/{checkout}/report", {**report, "model": "m"}).status_code == 200
    assert tool.post(f"/checkouts/{checkout}/report", {"status": 200}).status_code == 200
    usage_service.usage_flush()
    rows = lead.get("/pools/claude/usage", group_by="key").json()["rows"]
    assert [(r["key"]["name"], r["requests"], r["output_tokens"]) for r in rows] == [
        ("laptop", 1, 4)
    ]


@pytest.mark.parametrize(
    "usage", [{"input_tokens": -1}, {"input_tokens": "many"}, {"prompt": "hello"}, [1]]
)
def test_a_report_with_bad_usage_is_422_and_counts_nothing(pool, keys, usage):
    usable(pool, "one")
    tool = Api(keys[0][1])
    checkout = tool.post("/pools/claude/checkout", {}).json()["checkout_id"]
    response = tool.post(f"/checkouts/{checkout}/report", {"status": 200, "usage": usage})
    assert (response.status_code, error_code(response)) == (422, "validation_error")
    assert usage_service.pending_requests() == 0


def test_usage_as_csv_for_a_period(pool, keys, lead, upstream):
    usable(pool, "=cmd")
    upstream.post(MESSAGES).return_value = json_reply()
    relay(keys[0][1])
    usage_service.usage_flush()
    now = timezone.now()
    response = lead.get(
        "/pools/claude/usage",
        since=(now - timedelta(hours=2)).isoformat(),
        until=(now + timedelta(hours=1)).isoformat(),
        group_by="key,account,model,hour",
        format="csv",
    )
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 1
    assert (rows[0]["key_name"], rows[0]["account_label"]) == ("ci", "'=cmd")  # no formula
    assert (rows[0]["input_tokens"], rows[0]["requests"]) == ("11", "1")


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "key,colour"},
        {"group_by": "key,key"},
        {"since": "yesterday"},
        {"since": "2026-12-06T10:00:00Z", "until": "2026-12-06T09:00:00Z"},
        {"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "2026-12-06T10:00:00"},
        {"format": "xml"},
    ],
)
def test_bad_usage_queries_are_422(pool, lead, params):
    response = lead.get("/pools/claude/usage", **params)
    assert (response.status_code, error_code(response)) == (422, "validation_error")


def test_a_consumer_key_and_another_team_cannot_read_usage(pool, keys, bob, db):
    assert Api(keys[0][1]).get("/pools/claude/usage").status_code == 403


def test_quota_history_keeps_one_point_per_window_per_minute(pool, lead):
    account = usable(pool, "one")
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    for seconds, used in ((0, 10.0), (20, 11.0), (70, 12.0)):
        window = UsageWindow("five_hour", "5-hour", used, start + timedelta(hours=3))
        store_windows(account.pk, (window,), start + timedelta(seconds=seconds), "relay")
    points = lead.get(f"/accounts/{account.pk}/quota-history", window="five_hour").json()
    assert [(p["utilization"], p["source"]) for p in points["points"]] == [
        (10.0, "relay"),
        (12.0, "relay"),
    ]
    assert lead.get(f"/accounts/{account.pk}/quota-history", window="seven_day").json() == {
        "points": []
    }


def test_quota_history_older_than_30_days_is_pruned(pool):
    account = usable(pool, "one")
    window = UsageWindow("five_hour", "5-hour", 10.0, None)
    now = timezone.now()
    quota_points_record(account.pk, [window], now - timedelta(days=31), "poll")
    quota_points_record(account.pk, [window], now - timedelta(days=29), "poll")
    prune_events()
    assert QuotaPoint.objects.count() == 1


def burning(pool, label, used_now, per_hour, resets_in=timedelta(hours=4)):
    """An account whose 5-hour window rose `per_hour` points over the last hour."""
    account = usable(pool, label)
    now = timezone.now()
    resets = now + resets_in
    for minutes in (60, 30, 0):
        used = used_now - per_hour * minutes / 60
        window = UsageWindow("five_hour", "5-hour", used, resets)
        quota_points_record(account.pk, [window], now - timedelta(minutes=minutes), "relay")
    account.quota_windows.filter(key="five_hour").update(utilization=used_now, resets_at=resets)
    return account


def test_the_forecast_is_in_the_pool_and_account_payloads(pool, lead):
    one = burning(pool, "one", 50, 20)
    burning(pool, "two", 50, 20)
    forecast = lead.get("/pools/claude").json()["forecast"]
    assert forecast["basis"] == "pace"
    assert forecast["burn_per_hour"]["five_hour"] == pytest.approx(40, abs=0.1)
    runs_dry = datetime.fromisoformat(forecast["runs_dry_at"])
    # 100 points left over both, at 40 an hour: 2.5 hours, before the reset in 4.
    assert abs(runs_dry - (timezone.now() + timedelta(hours=2.5))) < timedelta(minutes=2)
    assert "runs dry at" in forecast["message"]
    account = lead.get(f"/accounts/{one.pk}").json()["forecast"]
    assert account["windows"][0]["full_before_reset"] is True
    assert account["runs_dry_at"] is not None
    listed = lead.get("/teams/acme/pools").json()
    assert listed[0]["forecast"]["basis"] == "pace"


def test_the_pool_page_shows_the_forecast_and_the_chart(pool, alice, keys, upstream):
    burning(pool, "one", 50, 20)
    upstream.post(MESSAGES).return_value = json_reply()
    relay(keys[0][1])
    usage_service.usage_flush()
    browser = Client()
    browser.force_login(alice)
    page = browser.get("/pools/claude/").content.decode()
    assert "At the last hour&#x27;s pace the pool runs dry at" in page
    assert '<svg class="chart"' in page
    assert "<title id=" in page
    assert '<th scope="col">ci</th>' in page  # the table fallback names the key


def test_the_account_page_draws_utilization_with_resets(pool, alice):
    account = burning(pool, "one", 50, 20)
    past_reset = timezone.now() - timedelta(hours=2)
    quota_points_record(
        account.pk,
        [UsageWindow("five_hour", "5-hour", 99.0, past_reset)],
        past_reset - timedelta(minutes=5),
        "poll",
    )
    browser = Client()
    browser.force_login(alice)
    page = browser.get(f"/accounts/{account.pk}/").content.decode()
    assert "5-hour: now 50%, peak 99%" in page
    assert "1 resets marked" in page


def test_metrics_carry_the_pools_runs_dry_gauge(client, settings, pool):
    burning(pool, "one", 50, 20)
    settings.METRICS_TOKEN = "scrape-secret"
    text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").content.decode()
    line = next(x for x in text.splitlines() if x.startswith("accounts_pool_pool_runs_dry"))
    seconds = float(line.split()[-1])
    assert 2.4 * 3600 < seconds < 2.6 * 3600


def test_past_its_limit_quota_history_keeps_the_newest_points(pool):
    account = usable(pool, "one")
    now = timezone.now()
    for minutes in (30, 20, 10):
        window = UsageWindow("five_hour", "5-hour", float(minutes), None)
        quota_points_record(account.pk, [window], now - timedelta(minutes=minutes), "poll")
    points = usage_selectors.quota_points(
        account, window=None, since=now - timedelta(hours=1), limit=2
    )
    assert [p.utilization for p in points] == [20.0, 10.0]
