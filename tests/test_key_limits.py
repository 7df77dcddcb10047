"""Limits per consumer key, set by a lead: requests per minute, tokens per 5 hours, model
families (concurrency and cross-process holding are in test_usage_processes.py)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts_pool.models import ConsumerKey, KeyLimitEvent
from accounts_pool.services.keys import api_token_create, consumer_key_create
from accounts_pool.state import KeyLimits

from .api import Api, error_code
from .test_relay import BODY, MESSAGES, _no_harvest_wait, relay, upstream, usable
from .test_usage_accounting import json_reply

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["_no_harvest_wait", "upstream"]  # fixtures shared with test_relay


@pytest.fixture
def key(pool, alice):
    return consumer_key_create(pool=pool, name="ci", created_by=alice)


@pytest.fixture
def lead(alice):
    return Api(api_token_create(user=alice, name="t")[1])


def limit(lead, key, **limits):
    response = lead.patch(f"/pools/claude/consumer-keys/{key[0].pk}", {"limits": limits})
    assert response.status_code == 200, response.content
    return response.json()["limits"]


def test_a_lead_sets_and_clears_limits(pool, key, lead):
    set_ = limit(lead, key, requests_per_minute=5, model_families=["sonnet", "sonnet"])
    assert set_ == {
        "requests_per_minute": 5,
        "tokens_per_5h": None,
        "concurrent_requests": None,
        "model_families": ["sonnet"],
    }
    assert limit(lead, key)["requests_per_minute"] is None
    listed = lead.get("/pools/claude/consumer-keys").json()
    assert listed[0]["limits"]["model_families"] is None


@pytest.mark.parametrize(
    "limits",
    [
        {"requests_per_minute": 0},
        {"tokens_per_5h": -5},
        {"concurrent_requests": "many"},
        {"model_families": ["gpt"]},
        {"colour": "red"},
    ],
)
def test_bad_limits_are_422_and_change_nothing(pool, key, lead, limits):
    response = lead.patch(f"/pools/claude/consumer-keys/{key[0].pk}", {"limits": limits})
    assert (response.status_code, error_code(response)) == (422, "validation_error")
    assert not ConsumerKey.objects.get(pk=key[0].pk).limits.any


def test_a_member_or_a_key_cannot_set_limits(pool, key, bob):
    member = Api(api_token_create(user=bob, name="t")[1])
    path = f"/pools/claude/consumer-keys/{key[0].pk}"
    assert member.patch(path, {"limits": {"requests_per_minute": 1}}).status_code == 403
    assert Api(key[1]).patch(path, {"limits": {"requests_per_minute": 1}}).status_code == 403


def test_requests_over_the_minute_limit_get_429_with_retry_after_and_one_event(
    pool, key, lead, upstream
):
    usable(pool, "one")
    upstream.post(MESSAGES).return_value = json_reply()
    limit(lead, key, requests_per_minute=2)
    assert [relay(key[1])[0] for _ in range(2)] == [200, 200]
    status, headers, body = relay(key[1])
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert json.loads(body)["error"]["type"] == "rate_limit_error"
    assert "2 requests this minute" in json.loads(body)["error"]["message"]
    assert relay(key[1])[0] == 429
    assert upstream.calls.call_count == 2  # nothing over the limit went upstream
    events = list(KeyLimitEvent.objects.values_list("limit", flat=True))
    assert events == ["requests_per_minute"]  # one row a minute, not one per refusal


def test_a_model_family_limit_refuses_other_families(pool, key, lead, upstream):
    usable(pool, "one")
    upstream.post(MESSAGES).return_value = json_reply()
    limit(lead, key, model_families=["sonnet"])
    assert relay(key[1])[0] == 200
    status, _, body = relay(key[1], body={**BODY, "model": "claude-opus-4-5"})
    assert status == 429
    assert "sonnet models only" in json.loads(body)["error"]["message"]


def test_tokens_over_5_hours_refuse_the_next_request(pool, key, lead, upstream):
    usable(pool, "one")
    upstream.post(MESSAGES).return_value = json_reply()  # 38 tokens each
    limit(lead, key, tokens_per_5h=50)
    assert [relay(key[1])[0] for _ in range(2)] == [200, 200]
    status, headers, _ = relay(key[1])
    assert status == 429
    assert int(headers["Retry-After"]) > 4 * 3600  # both in this hour: 5 h after it began


def test_checkout_over_the_limit_is_a_json_429_with_retry_after(pool, key, lead):
    usable(pool, "one")
    limit(lead, key, requests_per_minute=1)
    tool = Api(key[1])
    assert tool.post("/pools/claude/checkout", {}).status_code == 200
    refused = tool.post("/pools/claude/checkout", {})
    assert (refused.status_code, error_code(refused)) == (429, "rate_limited")
    assert refused.json()["error"]["details"]["limit"] == "requests_per_minute"
    assert 1 <= int(refused["Retry-After"]) <= 60


def test_a_reports_usage_counts_against_the_token_limit(pool, key, lead):
    usable(pool, "one")
    limit(lead, key, tokens_per_5h=10)
    tool = Api(key[1])
    checkout = tool.post("/pools/claude/checkout", {}).json()["checkout_id"]
    report = {"status": 200, "usage": {"input_tokens": 8, "output_tokens": 4}}
    assert tool.post(f"/checkouts/{checkout}/report", report).status_code == 200
    refused = tool.post("/pools/claude/checkout", {})
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["limit"] == "tokens_per_5h"


def test_a_lead_sets_limits_on_the_keys_page(pool, key, alice):
    browser = Client()
    browser.force_login(alice)
    path = f"/pools/claude/keys/{key[0].pk}/limits/"
    assert path in browser.get("/pools/claude/keys/").content.decode()
    sent = {"requests_per_minute": "30", "tokens_per_5h": "", "model_families": ["haiku"]}
    assert browser.post(path, sent).status_code == 302
    assert ConsumerKey.objects.get(pk=key[0].pk).limits == KeyLimits(
        requests_per_minute=30, model_families=("haiku",)
    )


def test_bad_limits_on_the_page_are_form_errors_and_change_nothing(pool, key, alice):
    browser = Client()
    browser.force_login(alice)
    path = f"/pools/claude/keys/{key[0].pk}/limits/"
    page = browser.post(path, {"requests_per_minute": "-3", "model_families": ["gpt"]})
    assert page.status_code == 200
    assert page.content.decode().count('class="error"') == 2
    assert not ConsumerKey.objects.get(pk=key[0].pk).limits.any


def test_a_member_cannot_open_a_keys_limits(pool, key, bob):
    browser = Client()
    browser.force_login(bob)
    assert browser.get(f"/pools/claude/keys/{key[0].pk}/limits/").status_code in (403, 404)
