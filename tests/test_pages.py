"""The HTML pages without a browser: access by role, forms that refuse bad input and change
nothing, query counts that do not grow with the rows, and no secret in any page."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts_pool.models import (
    Account,
    AccountEvent,
    ConsumerKey,
    Membership,
    Pool,
    PoolInvite,
)
from accounts_pool.services.invites import invite_create
from accounts_pool.services.keys import consumer_key_create

from .conftest import ACCESS, REFRESH, make_account, usage_answer


@pytest.fixture
def lead(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def member(client, bob):
    client.force_login(bob)
    return client


def _counts():
    return (Account.objects.count(), AccountEvent.objects.count(), ConsumerKey.objects.count())


def test_members_read_but_cannot_act(member, account):
    assert member.get(reverse("pool", args=["claude"])).status_code == 200
    assert member.get(reverse("account", args=[account.pk])).status_code == 200
    before = _counts()
    action = reverse("account_action", args=[account.pk, "clear-backoff"])
    assert member.post(action).status_code == 403
    assert member.get(reverse("add_account", args=["claude"])).status_code == 403
    assert member.get(reverse("consumer_keys", args=["claude"])).status_code == 403
    assert _counts() == before


def test_anonymous_visitors_are_sent_to_log_in(client, account):
    response = client.get(reverse("pool", args=["claude"]))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize(
    ("url", "data", "field", "message"),
    [
        ("add_by_tokens", {"label": "x"}, "refresh_token", "This field is required."),
        ("add_by_tokens", {"label": "", "refresh_token": REFRESH}, "label", "required"),
        (
            "add_by_tokens",
            {"label": "x", "refresh_token": REFRESH, "access_token": ACCESS},
            "expires_at",
            "Give the expiry of the access token too, or leave the token out.",
        ),
        (
            "add_by_tokens",
            {"label": "x", "refresh_token": REFRESH, "expires_at": "tomorrow-ish"},
            "expires_at",
            "Enter a valid date/time.",
        ),
    ],
)
def test_the_token_form_says_what_is_wrong_next_to_the_field(lead, pool, url, data, field, message):
    before = _counts()
    response = lead.post(reverse(url, args=["claude"]), data)
    assert response.status_code == 400
    page = response.content.decode()
    assert f'id="id_{field}-error"' in page
    assert message in page
    assert REFRESH not in page
    assert ACCESS not in page
    assert _counts() == before


def test_an_unreadable_expiry_says_so_and_not_that_it_is_missing(lead, pool):
    data = {"label": "x", "refresh_token": REFRESH, "access_token": ACCESS, "expires_at": "soon"}
    response = lead.post(reverse("add_by_tokens", args=["claude"]), data)
    page = response.content.decode()
    assert response.status_code == 400
    assert "Enter a valid date/time." in page
    assert "expiry too" not in page
    assert "together" not in page


def test_a_refused_refresh_token_is_reported_on_the_form(lead, pool, provider):
    provider.token.respond(400, json={"error": "invalid_grant", "error_description": "revoked"})
    response = lead.post(
        reverse("add_by_tokens", args=["claude"]), {"label": "x", "refresh_token": REFRESH}
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert 'id="id_refresh_token-error"' in page
    assert "The provider refused the refresh token: revoked" in page
    assert Account.objects.count() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{broken", "The file is not JSON."),
        (b'{"something": 1}', "Not a Claude Code credentials file"),
        (b'{"version": 1, "accounts": [{"accessToken": "x"}]}', "Entry 0: refreshToken is missing"),
    ],
)
def test_a_bad_credentials_file_is_refused_on_the_form(lead, pool, content, message):
    before = _counts()
    upload = SimpleUploadedFile("credentials.json", content, content_type="application/json")
    response = lead.post(reverse("add_by_file", args=["claude"]), {"file": upload})
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="id_file-error"' in page
    assert message in page
    assert _counts() == before


def test_a_pasted_code_with_the_wrong_state_is_refused_on_the_form(lead, pool, provider):
    lead.post(reverse("login_start", args=["claude"]))
    response = lead.post(
        reverse("login_complete", args=["claude"]), {"code": "c#wrong", "label": "x"}
    )
    assert response.status_code == 400
    assert "The state does not match this login session." in response.content.decode()
    assert provider.token.call_count == 0
    assert Account.objects.count() == 0


def test_a_key_needs_a_name(lead, pool):
    response = lead.post(reverse("consumer_keys", args=["claude"]), {"name": "  "})
    assert 'id="id_name-error"' in response.content.decode()
    assert ConsumerKey.objects.count() == 0


def test_a_new_key_is_shown_once_then_only_its_prefix(lead, pool):
    created = lead.post(reverse("consumer_keys", args=["claude"]), {"name": "laptop"})
    assert created.status_code == 302  # post/redirect/get: a reload cannot create a second key
    page = lead.get(created["Location"]).content.decode()
    key = ConsumerKey.objects.get()
    assert f'value="{key.prefix}' in page
    assert 'data-copy="new-key"' in page
    again = lead.get(reverse("consumer_keys", args=["claude"])).content.decode()
    assert f"<code>{key.prefix}…</code>" in again
    assert 'id="new-key"' not in again


def test_disable_needs_a_reason(lead, account):
    lead.post(reverse("account_disable", args=[account.pk]), {"reason": ""})
    account.refresh_from_db()
    assert account.enabled
    assert AccountEvent.objects.count() == 0


def test_delete_asks_first_then_removes_the_account(lead, account):
    confirm = lead.get(reverse("account_delete", args=[account.pk]))
    assert "Delete for good" in confirm.content.decode()
    assert Account.objects.filter(pk=account.pk).exists()
    lead.post(reverse("account_delete", args=[account.pk]))
    assert not Account.objects.filter(pk=account.pk).exists()


def test_an_expired_invite_cannot_be_used(member, pool, alice):
    invite, token = invite_create(pool=pool, user=alice)
    PoolInvite.objects.filter(pk=invite.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = member.get(reverse("invite", args=[token]))
    assert response.status_code == 410
    assert "expired" in response.content.decode()


def test_an_invite_is_404_for_someone_outside_the_team(client, pool, alice):
    _, token = invite_create(pool=pool, user=alice)
    outsider = User.objects.create_user("charlie", password="charlie-password-1")
    client.force_login(outsider)
    assert client.get(reverse("invite", args=[token])).status_code == 404


def _fill(pool, count):
    now = timezone.now()
    for n in range(count):
        account = make_account(
            pool,
            label=f"acct {n:03}",
            quota_checked_at=now,
            refresh_token=f"sk-ant-ort01-fill-{pool.pk}-{n}",
        )
        account.quota_windows.create(
            key="five_hour",
            label="5-hour",
            utilization=n % 100,
            resets_at=now + timedelta(hours=2),
            checked_at=now,
        )
        account.quota_windows.create(
            key="seven_day",
            label="7-day",
            utilization=10,
            resets_at=now + timedelta(days=2),
            checked_at=now,
        )


def _queries(client, url):
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    "url",
    [
        reverse("pool", args=["claude"]),
        reverse("pool_rows", args=["claude"]),
        reverse("team", args=["acme"]),
        reverse("admin:accounts_pool_account_changelist"),
    ],
)
def test_pages_run_the_same_queries_for_10_and_500_accounts(admin_client, alice, team, url):
    big = Pool.objects.create(team=team, name="Claude", slug="claude")
    admin_user = User.objects.get(username="admin")
    Membership.objects.create(team=team, user=admin_user, role="lead")
    _fill(big, 10)
    small = _queries(admin_client, url)
    _fill(Pool.objects.create(team=team, name="Other", slug="other"), 490)
    Account.objects.filter(pool__slug="other").update(pool=big)
    assert Account.objects.filter(pool=big).count() == 500
    assert _queries(admin_client, url) == small


def test_the_pool_page_spends_under_a_kilobyte_per_account(lead, pool):
    _fill(pool, 500)
    Account.objects.filter(label__endswith="7").update(
        cooldown_until=timezone.now() + timedelta(hours=1)
    )
    page = lead.get(reverse("pool", args=["claude"])).content
    rows = lead.get(reverse("pool_rows", args=["claude"])).content
    assert page.count(b'class="row ') == 500
    print(f"pool page: {len(page) / 500:.0f} bytes per account")
    assert len(page) / 500 < 1024
    assert len(rows) < len(page)


def test_the_refresh_answers_304_when_nothing_changed(lead, pool):
    _fill(pool, 3)
    url = reverse("pool_rows", args=["claude"]) + "?status=usable&sort=-account"
    first = lead.get(url)
    assert first.status_code == 200
    assert first.content.count(b'class="row ') == 3
    again = lead.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert again.content == b""
    Account.objects.filter(label="acct 001").update(
        cooldown_until=timezone.now() + timedelta(hours=1)
    )
    changed = lead.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200
    assert changed.content.count(b'class="row ') == 2  # the filter held: only usable ones


def test_a_reason_badge_filters_the_table_and_keeps_the_state_in_links(lead, pool):
    _fill(pool, 4)
    Account.objects.filter(label="acct 002").update(
        cooldown_until=timezone.now() + timedelta(hours=1)
    )
    body = lead.get(
        reverse("pool", args=["claude"]), {"reason": "cooldown", "q": "acct"}
    ).content.decode()
    assert body.count('class="row ') == 1
    assert 'data-account="' in body
    assert "?reason=cooldown&amp;q=acct&amp;sort=account" in body  # a sort keeps the filters
    assert "rate-limited" in body


def test_no_page_shows_a_token_or_a_key(lead, pool, alice):
    now = timezone.now()
    account = make_account(pool, label="secret holder", quota_checked_at=now)
    _, key = consumer_key_create(pool=pool, name="laptop", created_by=alice)
    _, token = invite_create(pool=pool, user=alice)
    AccountEvent.objects.create(account=account, at=now, operation="admin", outcome="x")
    pages = [
        reverse("home"),
        reverse("team", args=["acme"]),
        reverse("pool", args=["claude"]),
        reverse("pool_rows", args=["claude"]),
        reverse("account", args=[account.pk]),
        reverse("add_account", args=["claude"]),
        reverse("consumer_keys", args=["claude"]),
        reverse("account_delete", args=[account.pk]),
        reverse("invite", args=[token]),
    ]
    for url in pages:
        response = lead.get(url, follow=True)
        assert response.status_code == 200, url
        body = response.content.decode()
        secrets = [ACCESS, REFRESH, key]
        if "/invite/" not in url:  # the invite page's own address carries its token
            secrets.append(token)
        for secret in secrets:
            assert secret not in body, (url, secret[:12])


def test_an_action_always_returns_to_its_account_whatever_next_says(lead, account):
    action = reverse("account_action", args=[account.pk, "clear-backoff"])
    response = lead.post(action, {"next": "https://evil.example/"})
    assert response.status_code == 302
    assert response["Location"] == reverse("account", args=[account.pk])


@pytest.mark.parametrize("chosen", ["abc", "²", "other pool"])  # "²".isdigit() is True
def test_a_re_login_of_an_account_outside_the_pool_is_not_found(lead, pool, team, chosen):
    other = Pool.objects.create(team=team, name="Other", slug="other")
    elsewhere = make_account(other, label="elsewhere")
    account_id = str(elsewhere.pk) if chosen == "other pool" else chosen
    response = lead.post(reverse("login_start", args=["claude"]), {"account_id": account_id})
    assert response.status_code == 404


def _credentials(access="sk-ant-oat01-file", refresh="sk-ant-ort01-file"):
    expires = int((timezone.now() + timedelta(hours=5)).timestamp() * 1000)
    document = {
        "claudeAiOauth": {"accessToken": access, "refreshToken": refresh, "expiresAt": expires}
    }
    return SimpleUploadedFile("c.json", json.dumps(document).encode(), "application/json")


def test_an_imported_live_token_is_checked_and_fills_in_who_it_is(lead, pool, provider):
    provider.usage.respond(200, json=usage_answer())
    identity = {"uuid": "u-7", "email_address": "kim@acme.test"}
    org = {"uuid": "o-1", "name": "Acme Org"}
    provider.profile.respond(200, json={"account": identity, "organization": org})
    response = lead.post(
        reverse("add_by_file", args=["claude"]), {"file": _credentials()}, follow=True
    )
    account = Account.objects.get()
    assert (account.email, account.organization_name) == ("kim@acme.test", "Acme Org")
    assert account.quota_checked_at is not None
    assert "1 checked with the provider" in response.content.decode()
    assert provider.token.call_count == 0  # nothing rotated


def test_an_import_whose_access_token_the_provider_refuses_saves_nothing(lead, pool, provider):
    provider.usage.respond(
        401,
        json={
            "type": "error",
            "error": {"type": "authentication_error", "message": "Invalid bearer token"},
        },
    )
    response = lead.post(reverse("add_by_file", args=["claude"]), {"file": _credentials()})
    page = response.content.decode()
    assert response.status_code == 400
    assert "Entry 0: the provider refused the access token" in page
    assert "1 account" not in page
    assert Account.objects.count() == 0
