"""Bad input gets a clear 4xx in the one error shape and changes nothing."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from accounts_pool.models import Account, AccountEvent, ConsumerKey, OAuthLogin, Pool, Team
from accounts_pool.services.keys import api_token_create

from .api import Api, error_code
from .conftest import token_answer

MODELS = (Team, Pool, Account, AccountEvent, ConsumerKey, OAuthLogin)


@pytest.fixture
def lead(alice, pool):
    return Api(api_token_create(user=alice, name="cli")[1])


def _counts():
    return {model.__name__: model.objects.count() for model in MODELS}


def _refused(response, status, code=None):
    assert response.status_code == status, response.content
    got = error_code(response)
    if code:
        assert got == code


@pytest.mark.parametrize(
    ("path", "raw", "status", "code"),
    [
        ("/teams/acme/pools", "{not json", 400, "bad_request"),
        ("/teams/acme/pools", "[1, 2]", 422, "validation_error"),
        ("/teams/acme/pools", '{"name": "x", "slug": "Not A Slug"}', 422, "validation_error"),
        ("/teams/acme/pools", '{"name": 5, "slug": "ok"}', 422, "validation_error"),
        ("/teams/acme/pools", '{"name": "x", "slug": "ok", "colour": "red"}', 422, None),
        ("/teams/acme/pools", '{"name": "x", "slug": "ok", "refresh_lead_seconds": -1}', 422, None),
        ("/teams/acme/pools", '{"name": "x", "slug": "ok", "routing": "random"}', 422, None),
        ("/pools/claude/accounts", '{"label": "x", "kind": "oauth"}', 422, None),
        (
            "/pools/claude/accounts",
            '{"label": "x", "kind": "magic", "refresh_token": "r"}',
            422,
            None,
        ),
        (
            "/pools/claude/accounts",
            '{"label": "x", "kind": "oauth", "refresh_token": "r", "expires_at": "soon"}',
            422,
            None,
        ),
        (
            "/pools/claude/accounts",
            '{"label": "x", "kind": "api_key", "refresh_token": "r", "api_key": "k"}',
            422,
            None,
        ),
        ("/pools/claude/accounts/import", '{"claudeAiOauth": "nope"}', 422, "import_invalid"),
        ("/pools/claude/accounts/import", '{"version": 2, "accounts": []}', 422, "import_invalid"),
        ("/pools/claude/accounts/import", '{"version": 1, "accounts": []}', 422, "import_invalid"),
        ("/pools/claude/accounts/import", "null", 422, None),
        ("/pools/claude/consumer-keys", '{"name": ""}', 422, None),
        ("/pools/claude/oauth/complete", '{"session": "x"}', 422, None),
    ],
)
def test_bad_bodies_are_refused_and_change_nothing(lead, path, raw, status, code):
    before = _counts()
    _refused(lead.post(path, raw=raw), status, code)
    assert _counts() == before


def test_an_oversized_body_is_a_413(lead, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    before = _counts()
    big = '{"version": 1, "accounts": [' + ",".join(['{"refreshToken": "x"}'] * 100) + "]}"
    _refused(lead.post("/pools/claude/accounts/import", raw=big), 413, "payload_too_large")
    assert _counts() == before


def test_wrong_types_in_the_query_are_refused(lead, account):
    _refused(lead.get(f"/accounts/{account.pk}/events", page="zero"), 422, "validation_error")
    _refused(lead.get(f"/accounts/{account.pk}/events", page_size=10_000), 422)
    _refused(lead.get(f"/accounts/{account.pk}/events", operation="dance"), 422)
    _refused(lead.get("/accounts/not-a-number"), 422)


def _start(lead):
    started = lead.post("/pools/claude/oauth/start", {}).json()
    return started["session"], httpx.URL(started["authorize_url"]).params["state"]


def _complete(lead, session, code, label="login"):
    return lead.post(
        "/pools/claude/oauth/complete", {"session": session, "code": code, "label": label}
    )


def test_a_state_mismatch_is_refused_before_the_provider_is_asked(lead, provider):
    session, _ = _start(lead)
    before = _counts()
    _refused(_complete(lead, session, "code#not-the-state"), 400, "state_mismatch")
    _refused(_complete(lead, session, "code-without-state"), 422, "state_missing")
    assert provider.token.call_count == 0
    assert _counts() == before


def test_an_expired_login_session_is_refused(lead, provider):
    session, state = _start(lead)
    OAuthLogin.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    before = _counts()
    _refused(_complete(lead, session, f"code#{state}"), 410, "login_expired")
    assert provider.token.call_count == 0
    assert _counts() == before


def test_a_replayed_login_session_is_refused(lead, provider):
    provider.token.respond(200, json=token_answer())
    session, state = _start(lead)
    assert _complete(lead, session, f"code#{state}").status_code == 201
    before = _counts()
    _refused(_complete(lead, session, f"code#{state}", label="again"), 409, "login_used")
    assert provider.token.call_count == 1
    assert _counts() == before


def test_an_unknown_login_session_is_a_404(lead):
    _refused(_complete(lead, "made-up", "code#state"), 404, "login_not_found")


def test_a_login_started_for_another_pool_is_unknown_here(lead, team, provider):
    Pool.objects.create(team=team, name="Second", slug="second")
    started = lead.post("/pools/second/oauth/start", {}).json()
    state = httpx.URL(started["authorize_url"]).params["state"]
    _refused(_complete(lead, started["session"], f"code#{state}"), 404, "login_not_found")


@pytest.mark.parametrize(
    ("method", "path", "raw"),
    [
        ("post", "/teams/acme/pools", '{"name": "a\\u0000b", "slug": "ok"}'),
        (
            "post",
            "/pools/claude/accounts/import",
            '{"claudeAiOauth": {"refreshToken": "r", "accessToken": "a", '
            '"expiresAt": "0001-01-01T00:00:00+05:00"}}',
        ),
        (
            "post",
            "/pools/claude/accounts/import",
            '{"claudeAiOauth": {"refreshToken": "r\\u0000"}}',
        ),
    ],
)
def test_values_no_database_can_store_are_a_422(lead, method, path, raw):
    before = _counts()
    _refused(getattr(lead, method)(path, raw=raw), 422)
    assert _counts() == before


def test_a_nul_in_a_path_is_not_found_rather_than_a_crash(lead):
    response = lead.get("/pools/a%00b")
    assert response.status_code in (404, 422)
    error_code(response)


def test_a_malformed_callback_url_is_refused(lead):
    session, _ = _start(lead)
    _refused(_complete(lead, session, "http://[abc"), 422)
