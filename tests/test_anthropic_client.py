"""The provider client: typed errors by operation, defensive parsing, no secret in a message."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from accounts_pool.providers import anthropic
from accounts_pool.state import FailureKind

from .conftest import ACCESS, FIVE_HOUR_RESET, REFRESH, policy_403, token_answer, usage_answer


def _client():
    return anthropic.client()


def test_refresh_posts_the_refresh_grant_and_returns_the_rotated_tokens(provider):
    provider.token.respond(200, json=token_answer())
    grant = _client().refresh(REFRESH)
    sent = json.loads(provider.token.calls.last.request.content)
    assert sent["grant_type"] == "refresh_token"
    assert sent["refresh_token"] == REFRESH
    assert "org:create_api_key" not in sent["scope"]
    assert grant.access_token == "sk-ant-oat01-new-access"
    assert grant.refresh_token == "sk-ant-ort01-new-refresh"
    assert grant.expires_in == timedelta(hours=8)
    assert (grant.account_uuid, grant.email) == ("acct-uuid-1", "dev@acme.test")


def test_a_refresh_answer_without_refresh_token_says_so(provider):
    provider.token.respond(200, json=token_answer(refresh=None))
    assert _client().refresh(REFRESH).refresh_token is None


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (
            400,
            {"error": "invalid_grant", "error_description": "Refresh token revoked"},
            FailureKind.INVALID_GRANT,
            "invalid_grant",
        ),
        (400, {"error": "invalid_request"}, FailureKind.REJECTED, "invalid_request"),
        (403, "<html><body>Forbidden by edge</body></html>", FailureKind.REJECTED, None),
        (
            429,
            {"error": {"type": "rate_limit_error", "message": "slow down"}},
            FailureKind.RATE_LIMITED,
            "rate_limit_error",
        ),
        (502, "", FailureKind.SERVER_ERROR, None),
    ],
)
def test_token_endpoint_errors_are_typed_and_classified(provider, status, body, kind, code):
    if isinstance(body, dict):
        provider.token.respond(status, json=body, headers={"Retry-After": "30"})
    else:
        provider.token.respond(status, text=body, headers={"Retry-After": "30"})
    with pytest.raises(anthropic.TokenEndpointError) as caught:
        _client().refresh(REFRESH)
    failure = caught.value.failure
    assert (failure.kind, failure.status, failure.error_code) == (kind, status, code)
    assert failure.retry_after == "30"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"access_token": "x"}),  # no expires_in
        httpx.Response(200, json={"access_token": "x", "expires_in": "soon"}),
        httpx.Response(200, json={"access_token": None, "expires_in": 3600}),
    ],
)
def test_an_unusable_token_answer_is_malformed(provider, answer):
    provider.token.mock(return_value=answer)
    with pytest.raises(anthropic.TokenEndpointError) as caught:
        _client().refresh(REFRESH)
    assert caught.value.failure.kind == FailureKind.MALFORMED


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
def test_network_failures_are_typed_by_operation(provider, exc):
    provider.token.mock(side_effect=exc)
    provider.usage.mock(side_effect=exc)
    with pytest.raises(anthropic.TokenEndpointError) as token_error:
        _client().refresh(REFRESH)
    with pytest.raises(anthropic.UsageEndpointError) as usage_error:
        _client().usage(ACCESS)
    assert token_error.value.failure.kind == FailureKind.NETWORK
    assert usage_error.value.failure.kind == FailureKind.NETWORK


def test_usage_sends_the_bearer_token_and_beta_header_and_parses_windows(provider):
    provider.usage.respond(200, json=usage_answer())
    usage = _client().usage(ACCESS)
    request = provider.usage.calls.last.request
    assert request.headers["authorization"] == f"Bearer {ACCESS}"
    assert request.headers["anthropic-beta"] == "oauth-2025-04-20"
    windows = {w.key: w for w in usage.windows}
    assert windows["five_hour"].utilization == 25.0
    assert windows["five_hour"].resets_at == FIVE_HOUR_RESET
    opus = windows["model:claude-opus-4"]
    assert (opus.utilization, opus.label) == (40.0, "Opus-only weekly")
    assert (opus.model_id, opus.model_name) == ("claude-opus-4", "Opus")


def test_a_scoped_limit_named_only_by_its_display_name_is_kept(provider):
    body = usage_answer()
    body["limits"][0]["scope"] = {"model": {"id": None, "display_name": "Opus"}}
    provider.usage.respond(200, json=body)
    windows = {w.key: w for w in _client().usage(ACCESS).windows}
    opus = windows["model:opus"]
    assert (opus.utilization, opus.model_id, opus.model_name) == (40.0, "", "Opus")


def test_a_scoped_limit_that_names_no_model_is_dropped(provider):
    body = usage_answer()
    body["limits"][0]["scope"] = {"model": {"id": None, "display_name": None}}
    provider.usage.respond(200, json=body)
    keys = {w.key for w in _client().usage(ACCESS).windows}
    assert keys == {"five_hour", "seven_day"}


@pytest.mark.parametrize(
    "five_hour",
    [None, {}, {"utilization": None}, {"utilization": "n/a"}, {"utilization": True}, "x"],
)
def test_a_null_missing_or_non_numeric_window_is_unknown_not_zero(provider, five_hour):
    body = usage_answer()
    body["five_hour"] = five_hour
    provider.usage.respond(200, json=body)
    windows = {w.key: w for w in _client().usage(ACCESS).windows}
    assert windows["five_hour"].utilization is None


def test_older_answers_with_per_model_objects_are_read(provider):
    body = {
        "five_hour": None,
        "seven_day": None,
        "seven_day_opus": {"utilization": 80, "resets_at": None},
    }
    provider.usage.respond(200, json=body)
    windows = {w.key: w for w in _client().usage(ACCESS).windows}
    assert windows["seven_day_opus"].utilization == 80.0
    assert (windows["seven_day_opus"].model_name, windows["seven_day_opus"].scoped) == (
        "Opus",
        True,
    )


def test_a_usage_403_carries_the_providers_policy_message(provider):
    provider.usage.respond(403, json=policy_403())
    with pytest.raises(anthropic.UsageEndpointError) as caught:
        _client().usage(ACCESS)
    assert caught.value.failure.error_code == "permission_error"
    assert "not allowed for this organization" in caught.value.failure.message


def test_no_error_message_repeats_a_token(provider):
    echo = {"error": "invalid_grant", "error_description": f"token {REFRESH} was revoked"}
    provider.token.respond(400, json=echo)
    with pytest.raises(anthropic.TokenEndpointError) as caught:
        _client().refresh(REFRESH)
    assert REFRESH not in str(caught.value)
    assert REFRESH not in caught.value.failure.message


def test_the_pkce_login_url_has_every_parameter():
    login = anthropic.pkce_login("https://claude.example/oauth/authorize")
    url = httpx.URL(login.authorize_url)
    assert url.params["code_challenge_method"] == "S256"
    assert url.params["state"] == login.state
    assert len(login.state) == 32
    assert url.params["client_id"] == anthropic.CLIENT_ID
    assert "org:create_api_key" in url.params["scope"]


def test_exchange_code_posts_the_pkce_grant(provider):
    provider.token.respond(200, json=token_answer())
    grant = _client().exchange_code(code="the-code", state="s" * 32, verifier="v" * 64)
    sent = json.loads(provider.token.calls.last.request.content)
    assert sent == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "state": "s" * 32,
        "client_id": anthropic.CLIENT_ID,
        "redirect_uri": anthropic.REDIRECT_URI,
        "code_verifier": "v" * 64,
    }
    assert grant.organization_uuid == "org-uuid-1"


def test_profile_reads_identity_and_tolerates_missing_parts(provider):
    provider.profile.respond(200, json={"account": {"uuid": "u1", "email_address": "a@b.test"}})
    profile = _client().profile(ACCESS)
    assert (profile.account_uuid, profile.email, profile.organization_uuid) == (
        "u1",
        "a@b.test",
        "",
    )


def test_a_profile_failure_is_its_own_type(provider):
    provider.profile.respond(401, json={"type": "error", "error": {"type": "authentication_error"}})
    with pytest.raises(anthropic.ProfileEndpointError):
        _client().profile(ACCESS)


def test_a_compressed_answer_is_read(provider):
    import gzip

    body = gzip.compress(json.dumps(usage_answer()).encode())
    provider.usage.respond(200, content=body, headers={"Content-Encoding": "gzip"})
    windows = {w.key: w for w in _client().usage(ACCESS).windows}
    assert windows["five_hour"].utilization == 25.0


def test_a_body_dripped_slowly_is_cut_at_the_overall_deadline():
    import time

    from simulator import Fault, SimulatedAnthropic

    with SimulatedAnthropic() as sim:
        account = sim.add_account()
        sim.inject("usage", Fault.slow_body(4.0))
        client = anthropic.AnthropicClient(
            token_url=sim.env()["ANTHROPIC_TOKEN_URL"],
            usage_url=sim.env()["ANTHROPIC_USAGE_URL"],
            profile_url=sim.env()["ANTHROPIC_PROFILE_URL"],
            timeout=1.0,
        )
        started = time.monotonic()
        with pytest.raises(anthropic.UsageEndpointError) as caught:
            client.usage(account.access_token)
        elapsed = time.monotonic() - started
    assert caught.value.failure.kind == FailureKind.NETWORK
    assert elapsed < 3.5  # the body alone takes 4 s: it was cut, not read to the end


def test_a_cookie_one_answer_sets_is_never_sent_with_another_accounts_request(provider):
    provider.token.respond(
        200, json=token_answer(), headers={"set-cookie": "__cf_bm=first-account; Path=/"}
    )
    provider.usage.respond(200, json=usage_answer())
    _client().refresh(REFRESH)
    _client().refresh("sk-ant-ort01-another-account")
    _client().usage(ACCESS)
    sent = [call.request for call in (*provider.token.calls, *provider.usage.calls)]
    assert [request.headers.get("cookie") for request in sent] == [None, None, None]
