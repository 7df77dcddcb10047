"""A refresh token the team already holds is refused before anything sends it to the provider:
tokens are single-use, so one refresh with it would kill the account that holds it. Every way in
(API, web form, admin, import by API, upload and command, re-login) is covered, each time with
zero provider calls, and the holding account keeps refreshing afterwards."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from accounts_pool.models import Account, Pool, Team
from accounts_pool.services.errors import Conflict
from accounts_pool.services.keys import api_token_create
from accounts_pool.services.onboarding import account_store_tokens
from accounts_pool.services.refresh import account_refresh

from .api import Api, error_code
from .conftest import ACCESS, NOW, REFRESH, make_account, token_answer, usage_answer

CREDENTIALS = {"claudeAiOauth": {"refreshToken": REFRESH}}


@pytest.fixture
def lead(alice):
    return Api(api_token_create(user=alice, name="cli")[1])


@pytest.fixture
def browser(client, alice):
    client.force_login(alice)
    return client


def _paste(lead, **body):
    return lead.post(
        "/pools/claude/accounts",
        {"label": "again", "kind": "oauth", "refresh_token": REFRESH, **body},
    )


def _provider_calls(provider):
    return (provider.token.call_count, provider.usage.call_count, provider.profile.call_count)


def test_it_refuses_a_pasted_token_the_team_holds_without_calling_the_provider(
    lead, account, provider
):
    response = _paste(lead)
    assert response.status_code == 409
    assert error_code(response) == "duplicate_account"
    error = response.json()["error"]
    assert "“main”" in error["message"]
    assert error["details"] == {"account_id": account.pk}
    assert _provider_calls(provider) == (0, 0, 0)
    assert Account.objects.count() == 1


def test_it_refuses_it_with_an_access_token_too_and_checks_neither(lead, account, provider):
    expires = (timezone.now() + timedelta(hours=6)).isoformat()
    response = _paste(lead, access_token="sk-ant-oat01-other", expires_at=expires)
    assert response.status_code == 409
    assert _provider_calls(provider) == (0, 0, 0)


def test_the_holding_account_keeps_refreshing_after_the_refusal(lead, account, provider):
    assert _paste(lead).status_code == 409
    provider.token.respond(200, json=token_answer())
    assert account_refresh(account_id=account.pk, now=NOW, force=True).outcome == "refreshed"
    account.refresh_from_db()
    assert account.refresh_token == "sk-ant-ort01-new-refresh"
    sent = json.loads(provider.token.calls.last.request.content)
    assert sent["refresh_token"] == REFRESH  # the first refresh ever sent with it


def test_an_account_onboarded_by_its_access_token_cannot_be_pasted_again(lead, pool, provider):
    provider.usage.respond(200, json=usage_answer())
    provider.profile.respond(200, json={"account": {"uuid": "u-1"}})
    expires = (timezone.now() + timedelta(hours=6)).isoformat()
    assert _paste(lead, access_token=ACCESS, expires_at=expires).status_code == 201
    provider.usage.reset()
    provider.profile.reset()
    assert _paste(lead).status_code == 409
    assert _provider_calls(provider) == (0, 0, 0)


def test_the_web_form_shows_the_refusal_next_to_the_token(browser, account, provider):
    response = browser.post(
        reverse("add_by_tokens", args=["claude"]), {"label": "again", "refresh_token": REFRESH}
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert 'id="id_refresh_token-error"' in page
    assert "already in the team as “main”" in page
    assert REFRESH not in page
    assert _provider_calls(provider) == (0, 0, 0)


def test_the_admin_add_form_refuses_it_on_the_form(admin_client, account, provider):
    response = admin_client.post(
        reverse("admin:accounts_pool_account_add"),
        {"pool": account.pool_id, "label": "again", "refresh_token": REFRESH},
    )
    assert response.status_code == 200
    assert "already in the team as “main”" in response.content.decode()
    assert Account.objects.count() == 1


def test_an_import_by_the_api_lists_the_entry_the_team_holds(lead, account, provider):
    response = lead.post("/pools/claude/accounts/import", CREDENTIALS)
    assert response.status_code == 422
    assert error_code(response) == "import_invalid"
    [entry] = response.json()["error"]["details"]
    assert (entry["index"], entry["account_id"]) == (0, account.pk)
    assert "“main”" in entry["error"]
    assert _provider_calls(provider) == (0, 0, 0)
    assert Account.objects.count() == 1


def test_an_uploaded_file_says_which_entry_the_team_holds(browser, account, provider):
    upload = SimpleUploadedFile("c.json", json.dumps(CREDENTIALS).encode())
    response = browser.post(reverse("add_by_file", args=["claude"]), {"file": upload})
    assert response.status_code == 400
    assert "Entry 0: this refresh token is already in the team as “main”" in (
        response.content.decode()
    )
    assert Account.objects.count() == 1


def test_the_import_command_names_the_entry_and_saves_nothing(account, provider, tmp_path):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(CREDENTIALS))
    with pytest.raises(CommandError, match="entry 0: this refresh token is already in the team"):
        call_command("import_accounts", "--pool", "claude", str(path))
    assert _provider_calls(provider) == (0, 0, 0)
    assert Account.objects.count() == 1


def test_a_token_held_only_by_another_team_is_accepted(lead, pool, provider):
    other = Team.objects.create(name="Other", slug="other")
    make_account(Pool.objects.create(team=other, name="Theirs", slug="theirs"), label="theirs")
    provider.token.respond(200, json=token_answer())
    provider.usage.respond(200, json=usage_answer())
    response = _paste(lead)
    assert response.status_code == 201
    assert provider.token.call_count == 1


def test_a_token_stored_before_a_key_rotation_is_still_found(lead, account, provider, settings):
    settings.ACCOUNTS_POOL_ENCRYPTION_KEYS = [
        Fernet.generate_key().decode(),
        *settings.ACCOUNTS_POOL_ENCRYPTION_KEYS,
    ]
    response = _paste(lead)
    assert response.status_code == 409
    assert response.json()["error"]["details"] == {"account_id": account.pk}
    assert _provider_calls(provider) == (0, 0, 0)


def test_a_re_login_cannot_store_a_token_another_account_holds(pool, account):
    other = make_account(pool, label="other", refresh_token="sk-ant-ort01-other")
    with pytest.raises(Conflict) as refused:
        account_store_tokens(account=other, refresh_token=REFRESH, actor="test")
    assert refused.value.details == {"account_id": account.pk}
    other.refresh_from_db()
    assert other.refresh_token == "sk-ant-ort01-other"


def test_a_pkce_re_authorize_answered_with_a_held_token_stores_nothing(lead, pool, provider):
    holder = make_account(pool, label="holder", refresh_token="sk-ant-ort01-new-refresh")
    target = make_account(pool, label="target", refresh_token="sk-ant-ort01-target")
    provider.token.respond(200, json=token_answer())
    started = lead.post("/pools/claude/oauth/start", {"account_id": target.pk}).json()
    state = started["authorize_url"].split("state=")[1].split("&")[0]
    response = lead.post(
        "/pools/claude/oauth/complete", {"session": started["session"], "code": f"c#{state}"}
    )
    assert response.status_code == 409
    assert response.json()["error"]["details"] == {"account_id": holder.pk}
    target.refresh_from_db()
    assert target.refresh_token == "sk-ant-ort01-target"
