"""A per-model weekly window ("Opus only") is stored, shown and exposed, but a full one does not
exclude the account for every model: it only counts for that model's requests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from accounts_pool.models import QuotaWindow
from accounts_pool.services.keys import consumer_key_create
from accounts_pool.services.quota import account_check_quota
from accounts_pool.state import Status

from .api import Api
from .conftest import NOW, SEVEN_DAY_RESET, make_account, usage_answer


@pytest.fixture
def opus_full(pool, provider):
    """An account whose last poll found its Opus-only weekly window at 100%."""
    account = make_account(pool, quota_checked_at=NOW - timedelta(minutes=10))
    body = usage_answer()
    body["limits"][0]["percent"] = 100
    provider.usage.respond(200, json=body)
    account_check_quota(account_id=account.pk, now=NOW)
    return account


def test_a_full_opus_only_window_is_stored_as_scoped(opus_full):
    window = QuotaWindow.objects.get(account=opus_full, key="model:claude-opus-4")
    assert (window.utilization, window.model_id, window.model_name) == (
        100.0,
        "claude-opus-4",
        "Opus",
    )


def test_the_account_stays_usable_for_requests_of_no_model(opus_full):
    assert opus_full.verdict(NOW).status == Status.USABLE
    opus = opus_full.verdict(NOW, model="claude-opus-4")
    assert opus.status == Status.EXCLUDED
    assert opus.reasons[0].until == SEVEN_DAY_RESET


def test_its_page_says_usable_and_that_the_window_limits_opus_only(client, alice, opus_full):
    client.force_login(alice)
    page = client.get(reverse("account", args=[opus_full.pk])).content.decode()
    assert "Opus-only weekly" in page
    assert "Opus requests only" in page
    assert "Usable" in page
    assert "model_quota_exhausted" in page  # its history says so, as a per-model limit
    assert "<strong>quota_exhausted</strong>" not in page


def test_the_api_shows_the_window_with_its_scope_and_the_account_usable(pool, alice, opus_full):
    _key, secret = consumer_key_create(pool=pool, name="laptop", created_by=alice)
    body = Api(secret).get("/pools/claude").json()
    account = body["accounts"][0]
    assert account["status"] == "usable"
    scoped = [w for w in account["windows"] if w["scope"]]
    assert scoped[0]["scope"] == {"model_id": "claude-opus-4", "model_name": "Opus"}
    assert scoped[0]["utilization"] == 100.0


def test_checkout_hands_the_account_out(pool, alice, opus_full):
    _key, secret = consumer_key_create(pool=pool, name="laptop", created_by=alice)
    answer = Api(secret).post("/pools/claude/checkout", {})
    assert answer.status_code == 200
    assert answer.json()["account"]["id"] == opus_full.pk


def test_checkout_for_opus_skips_it_and_names_the_model_and_for_sonnet_hands_it_out(
    pool, alice, opus_full
):
    _key, secret = consumer_key_create(pool=pool, name="laptop", created_by=alice)
    api = Api(secret)
    refused = api.post("/pools/claude/checkout", {"model": "claude-opus-4"})
    assert refused.status_code == 503
    reasons = refused.json()["error"]["details"]["accounts"][0]["reasons"]
    assert reasons[0]["code"] == "quota_exhausted"
    assert reasons[0]["message"].startswith("Opus-only weekly window at 100% until")
    served = api.post("/pools/claude/checkout", {"model": "claude-sonnet-4-5"})
    assert (served.status_code, served.json()["account"]["id"]) == (200, opus_full.pk)


@pytest.mark.parametrize("model", ["", "x" * 201, 7])
def test_checkout_refuses_a_model_that_is_not_a_model_name(pool, alice, opus_full, model):
    _key, secret = consumer_key_create(pool=pool, name="laptop", created_by=alice)
    answer = Api(secret).post("/pools/claude/checkout", {"model": model})
    assert answer.status_code == 422
    assert "error" in answer.json()


def test_the_openapi_schema_documents_the_checkout_model(client):
    schema = client.get("/api/v1/openapi.json").json()
    fields = schema["components"]["schemas"]["CheckoutIn"]["properties"]
    assert "per-model weekly window" in fields["model"]["description"]
