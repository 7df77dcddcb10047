"""Onboarding: tokens checked with the provider before anything is saved, the PKCE login,
imports all or nothing, and the import command."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts_pool.models import Account, AccountEvent, OAuthLogin
from accounts_pool.services.keys import api_token_create

from .api import Api, error_code
from .conftest import ACCESS, REFRESH, make_account, policy_403, token_answer, usage_answer


@pytest.fixture
def lead(alice):
    return Api(api_token_create(user=alice, name="cli")[1])


def _onboard(lead, **body):
    return lead.post("/pools/claude/accounts", {"label": "new", "kind": "oauth", **body})


def _with_access(**extra):
    expires = (timezone.now() + timedelta(hours=6)).isoformat()
    return {"refresh_token": REFRESH, "access_token": ACCESS, "expires_at": expires, **extra}


def test_a_refresh_token_is_checked_by_a_refresh_and_the_rotation_kept(lead, pool, provider):
    provider.token.respond(200, json=token_answer())
    response = _onboard(lead, refresh_token=REFRESH)
    assert response.status_code == 201
    account = Account.objects.get()
    assert account.refresh_token == "sk-ant-ort01-new-refresh"
    assert (account.provider_account_uuid, account.email) == ("acct-uuid-1", "dev@acme.test")


def test_a_dead_refresh_token_is_refused_with_the_providers_answer(lead, pool, provider):
    provider.token.respond(400, json={"error": "invalid_grant", "error_description": "revoked"})
    response = _onboard(lead, refresh_token=REFRESH)
    assert response.status_code == 422
    assert error_code(response) == "provider_refused"
    assert response.json()["error"]["details"]["provider_error"] == "invalid_grant"
    assert Account.objects.count() == 0
    assert AccountEvent.objects.count() == 0


def test_an_unexpired_access_token_is_checked_by_the_usage_endpoint(lead, pool, provider):
    provider.usage.respond(200, json=usage_answer())
    provider.profile.respond(200, json={"account": {"uuid": "u-9", "email_address": "x@y.test"}})
    response = _onboard(lead, **_with_access())
    assert response.status_code == 201
    assert response.json()["account"]["status"] == "usable"
    assert provider.token.call_count == 0
    assert Account.objects.get().provider_account_uuid == "u-9"


def test_a_rejected_access_token_is_refused(lead, pool, provider):
    provider.usage.respond(401, json={"type": "error", "error": {"type": "authentication_error"}})
    response = _onboard(lead, **_with_access())
    assert response.status_code == 422
    assert Account.objects.count() == 0


def test_an_organisation_policy_403_onboards_the_account_as_blocked(lead, pool, provider):
    provider.usage.respond(403, json=policy_403())
    provider.profile.respond(403, json=policy_403())
    response = _onboard(lead, **_with_access())
    assert response.status_code == 201
    body = response.json()
    assert body["outcome"] == "policy_blocked"
    assert body["account"]["policy"]["status"] == "blocked"
    assert body["account"]["reasons"][0]["code"] == "org_policy_blocked"


@pytest.mark.parametrize(
    "answer", [httpx.Response(503), httpx.Response(429), httpx.ConnectError("x")]
)
def test_a_transient_failure_onboards_and_leaves_the_retry_to_the_cycle(
    lead, pool, provider, answer
):
    if isinstance(answer, Exception):
        provider.token.mock(side_effect=answer)
    else:
        provider.token.mock(return_value=answer)
    response = _onboard(lead, refresh_token=REFRESH)
    assert response.status_code == 201
    assert response.json()["outcome"] == "unverified"
    account = Account.objects.get()
    assert account.refresh_token == REFRESH
    assert account.refresh_backoff_until is not None


def test_a_provider_account_already_in_the_team_is_a_409(lead, pool, provider):
    make_account(pool, label="existing", provider_account_uuid="acct-uuid-1")
    provider.token.respond(200, json=token_answer())
    response = _onboard(lead, refresh_token="sk-ant-ort01-other")
    assert response.status_code == 409
    assert error_code(response) == "duplicate_account"
    assert Account.objects.count() == 1


def _start(lead, **body):
    started = lead.post("/pools/claude/oauth/start", body).json()
    return started, httpx.URL(started["authorize_url"]).params["state"]


def test_the_pkce_login_accepts_the_whole_callback_url(lead, pool, provider):
    provider.token.respond(200, json=token_answer())
    started, state = _start(lead)
    callback = f"https://platform.claude.com/oauth/code/callback?code=abc&state={state}"
    response = lead.post(
        "/pools/claude/oauth/complete",
        {"session": started["session"], "code": callback, "label": "login"},
    )
    assert response.status_code == 201, response.content
    sent = json.loads(provider.token.calls.last.request.content)
    assert (sent["grant_type"], sent["code"], sent["state"]) == ("authorization_code", "abc", state)
    assert OAuthLogin.objects.get().verifier == sent["code_verifier"]


def test_a_pkce_login_re_authorizes_an_account_in_place(lead, pool, provider):
    account = make_account(pool, label="old", provider_account_uuid="acct-uuid-1")
    account.relogin_required_for = account.refresh_token_fingerprint
    account.save()
    AccountEvent.objects.create(
        account=account, at=timezone.now(), operation="token_refresh", outcome="invalid_grant"
    )
    provider.token.respond(200, json=token_answer())
    started, state = _start(lead, account_id=account.pk)
    response = lead.post(
        "/pools/claude/oauth/complete", {"session": started["session"], "code": f"c#{state}"}
    )
    assert response.status_code == 201, response.content
    assert response.json()["outcome"] == "reauthorized"
    account.refresh_from_db()
    assert not account.needs_relogin
    assert account.refresh_token == "sk-ant-ort01-new-refresh"
    assert AccountEvent.objects.filter(account=account, outcome="invalid_grant").exists()
    assert Account.objects.count() == 1


def test_an_anthropic_auth_accounts_file_imports_every_account(lead, pool):
    document = {
        "version": 1,
        "accounts": [
            {"refreshToken": "sk-ant-ort01-one", "email": "one@acme.test"},
            {
                "refreshToken": "sk-ant-ort01-two",
                "label": "two",
                "accessToken": "sk-ant-oat01-two",
                "expiresAt": int((timezone.now() + timedelta(hours=5)).timestamp() * 1000),
            },
        ],
    }
    response = lead.post("/pools/claude/accounts/import", document)
    assert response.status_code == 201, response.content
    assert response.json()["imported"] == 2
    labels = sorted(Account.objects.values_list("label", flat=True))
    assert labels == ["one@acme.test", "two"]


def test_a_corrupt_import_lists_every_bad_entry_and_saves_nothing(lead, pool):
    make_account(pool, label="there", refresh_token="sk-ant-ort01-present")
    document = {
        "version": 1,
        "accounts": [
            {"refreshToken": "sk-ant-ort01-fine"},
            {"accessToken": "no refresh"},
            "not an object",
            {"refreshToken": "sk-ant-ort01-x", "accessToken": "a", "expiresAt": "tomorrow"},
        ],
    }
    response = lead.post("/pools/claude/accounts/import", document)
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [d["index"] for d in details] == [1, 2, 3]
    assert Account.objects.count() == 1


def test_an_import_of_a_token_already_in_the_team_saves_nothing(lead, pool):
    there = make_account(pool, label="there", refresh_token="sk-ant-ort01-present")
    document = {
        "version": 1,
        "accounts": [
            {"refreshToken": "sk-ant-ort01-new"},
            {"refreshToken": "sk-ant-ort01-present"},
        ],
    }
    response = lead.post("/pools/claude/accounts/import", document)
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {
            "index": 1,
            "error": "this refresh token is already in the team as “there”",
            "account_id": there.pk,
        }
    ]
    assert Account.objects.count() == 1


def test_the_import_command_prints_counts(pool, tmp_path):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"claudeAiOauth": {"refreshToken": "sk-ant-ort01-cmd"}}))
    out = StringIO()
    call_command("import_accounts", "--pool", "claude", str(path), stdout=out)
    assert out.getvalue().strip().endswith("1 account(s) imported into claude, 0 skipped")
    assert Account.objects.get().label == "Claude Code"


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not JSON"), ('{"something": 1}', "Not a Claude Code credentials file")],
)
def test_the_import_command_refuses_bad_files_and_saves_nothing(pool, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("import_accounts", "--pool", "claude", str(path))
    assert Account.objects.count() == 0


def test_an_api_key_account_needs_no_refresh_token_field(lead, pool):
    body = {"label": "spare", "kind": "api_key", "api_key": "sk-ant-api03-spare"}

    response = lead.post("/pools/claude/accounts", body)

    assert response.status_code == 201, response.content
    assert Account.objects.get().kind == "api_key"
