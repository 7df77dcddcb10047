"""Who may call what: every endpoint of the JSON API against every kind of caller.

A caller without credentials gets 401; a person sees another team's objects as 404 (never 403,
so existence does not leak); a member may read, only a lead may write; a consumer key may read
its own pool, check out and report, and nothing else. A refused call changes nothing and its
error body names nothing it was refused."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from accounts_pool.models import (
    Account,
    AccountEvent,
    Channel,
    Checkout,
    ConsumerKey,
    Delivery,
    Membership,
    OAuthLogin,
    Pool,
    Team,
)
from accounts_pool.services.channels import channel_create
from accounts_pool.services.checkout import checkout_create
from accounts_pool.services.keys import api_token_create, consumer_key_create
from accounts_pool.services.onboarding import account_create_api_key, oauth_login_start

from .conftest import make_account, token_answer, usage_answer

CALLERS = ("nobody", "outsider", "member", "lead", "other_lead", "other_key", "own_key")
STRANGERS = ("nobody", "outsider", "other_lead", "other_key")

CLAUDE_CODE_FILE = {
    "claudeAiOauth": {
        "accessToken": "sk-ant-oat01-imported-access",
        "refreshToken": "sk-ant-ort01-imported-refresh",
        "expiresAt": 4102444800000,
    }
}

# fmt: off
MATRIX: list[tuple[str, str, dict[str, Any] | None, tuple[int, ...]]] = [
    # (method, path, body, statuses for: nobody outsider member lead other_lead other_key own_key)
    ("GET", "/teams", None,                                (401, 200, 200, 200, 200, 403, 403)),
    ("POST", "/teams", {"name": "Newco", "slug": "newco"}, (401, 403, 403, 403, 403, 403, 403)),
    ("POST", "/teams/{team}/members", {"username": "carol", "role": "member"},
                                                           (401, 404, 403, 201, 404, 403, 403)),
    ("GET", "/teams/{team}/pools", None,                   (401, 404, 200, 200, 404, 403, 403)),
    ("POST", "/teams/{team}/pools", {"name": "Second", "slug": "second"},
                                                           (401, 404, 403, 201, 404, 403, 403)),
    ("GET", "/pools/{pool}", None,                         (401, 404, 200, 200, 404, 404, 200)),
    ("PATCH", "/pools/{pool}", {"routing": "balanced"},    (401, 404, 403, 200, 404, 404, 403)),
    ("POST", "/pools/{pool}/accounts",
     {"label": "Onboarded seat", "kind": "oauth", "refresh_token": "sk-ant-ort01-onboarded"},
                                                           (401, 404, 403, 201, 404, 404, 403)),
    ("POST", "/pools/{pool}/accounts/import", CLAUDE_CODE_FILE,
                                                           (401, 404, 403, 201, 404, 404, 403)),
    ("POST", "/pools/{pool}/oauth/start", {},              (401, 404, 403, 201, 404, 404, 403)),
    ("POST", "/pools/{pool}/oauth/complete",
     {"session": "{session}", "code": "the-code#{state}", "label": "Logged-in seat"},
                                                           (401, 404, 403, 201, 404, 404, 403)),
    ("GET", "/accounts/{account}", None,                   (401, 404, 200, 200, 404, 403, 403)),
    ("PATCH", "/accounts/{account}", {"priority": 5},      (401, 404, 403, 200, 404, 403, 403)),
    ("DELETE", "/accounts/{account}", None,                (401, 404, 403, 204, 404, 403, 403)),
    ("GET", "/accounts/{account}/events", None,            (401, 404, 200, 200, 404, 403, 403)),
    ("POST", "/accounts/{account}/actions/refresh", None,  (401, 404, 403, 200, 404, 403, 403)),
    ("POST", "/accounts/{account}/actions/check-quota", None,
                                                           (401, 404, 403, 200, 404, 403, 403)),
    ("POST", "/accounts/{account}/actions/clear-backoff", None,
                                                           (401, 404, 403, 200, 404, 403, 403)),
    ("GET", "/pools/{pool}/consumer-keys", None,           (401, 404, 403, 200, 404, 404, 403)),
    ("POST", "/pools/{pool}/consumer-keys", {"name": "New tool"},
                                                           (401, 404, 403, 201, 404, 404, 403)),
    ("DELETE", "/pools/{pool}/consumer-keys/{doomed_key}", None,
                                                           (401, 404, 403, 204, 404, 404, 403)),
    ("PATCH", "/pools/{pool}/consumer-keys/{doomed_key}", {"limits": {"requests_per_minute": 9}},
                                                           (401, 404, 403, 200, 404, 404, 403)),
    ("GET", "/pools/{pool}/usage", None,                   (401, 404, 200, 200, 404, 404, 403)),
    ("GET", "/accounts/{account}/quota-history", None,     (401, 404, 200, 200, 404, 403, 403)),
    ("POST", "/pools/{pool}/checkout", {},                 (401, 404, 403, 403, 404, 404, 200)),
    ("POST", "/checkouts/{checkout}/report", {"status": 200},
                                                           (401, 403, 403, 403, 403, 404, 200)),
    ("GET", "/teams/{team}/channels", None,                (401, 404, 403, 200, 404, 403, 403)),
    ("POST", "/teams/{team}/channels",
     {"name": "Mail", "type": "email", "target": "ops@acme.test", "kinds": ["pool_dry"]},
                                                           (401, 404, 403, 201, 404, 403, 403)),
    ("PATCH", "/teams/{team}/channels/{channel}", {"kinds": ["pool_low"]},
                                                           (401, 404, 403, 200, 404, 403, 403)),
    ("DELETE", "/teams/{team}/channels/{doomed_channel}", None,
                                                           (401, 404, 403, 204, 404, 403, 403)),
    ("GET", "/teams/{team}/channels/{channel}/deliveries", None,
                                                           (401, 404, 403, 200, 404, 403, 403)),
    ("POST", "/teams/{team}/channels/{channel}/test", None,
                                                           (401, 404, 403, 200, 404, 403, 403)),
    # A person's own API tokens: anyone signed in with a token, never a consumer key; another
    # person's token is not found.
    ("GET", "/me/tokens", None,                            (401, 200, 200, 200, 200, 403, 403)),
    ("POST", "/me/tokens", {"name": "Another"},            (401, 201, 201, 201, 201, 403, 403)),
    ("DELETE", "/me/tokens/{lead_token}", None,            (401, 404, 404, 204, 404, 403, 403)),
]
# fmt: on

CASES = [
    pytest.param(method, path, body, caller, expected, id=f"{method} {path} as {caller}")
    for method, path, body, statuses in MATRIX
    for caller, expected in zip(CALLERS, statuses, strict=True)
]


@pytest.fixture
def world(team, alice, bob, pool, provider):
    """Team acme (alice leads, bob is a member) with a pool, two accounts, keys, a checkout and
    a login in progress; team other (olga leads) with its own pool and key; oscar in no team."""
    now = timezone.now()
    provider.token.respond(200, json=token_answer())
    provider.usage.respond(200, json=usage_answer())
    provider.profile.respond(200, json=token_answer())
    other = Team.objects.create(name="Otherside", slug="otherside")
    olga = User.objects.create_user("olga")
    Membership.objects.create(team=other, user=olga, role=Membership.Role.LEAD)
    other_pool = Pool.objects.create(team=other, name="Their pool", slug="their-pool")
    oscar = User.objects.create_user("oscar")
    User.objects.create_user("carol")
    account = make_account(
        pool,
        label="Primary seat",
        access_expires_at=now + timedelta(hours=7),
        quota_checked_at=now,
        refresh_backoff_until=now + timedelta(minutes=30),
    )
    api_account = account_create_api_key(
        pool=pool, label="Spare key seat", api_key="sk-ant-api03-spare", actor="test"
    )
    own_key, own_secret = consumer_key_create(pool=pool, name="Build runner", created_by=alice)
    doomed, _ = consumer_key_create(pool=pool, name="Old laptop", created_by=alice)
    _, other_secret = consumer_key_create(pool=other_pool, name="Their tool", created_by=olga)
    checkout = checkout_create(key_hash=own_key.key_hash).checkout
    login = oauth_login_start(pool=pool, user=alice)
    channel, _ = channel_create(
        team=team,
        name="Ops mail",
        channel_type="email",
        target="ops@acme.test",
        kinds=["pool_dry"],
        created_by=alice,
    )
    doomed_channel, _ = channel_create(
        team=team,
        name="Old mail",
        channel_type="email",
        target="old@acme.test",
        kinds=["pool_dry"],
        created_by=alice,
    )
    lead_token, lead_secret = api_token_create(user=alice, name="t")
    secrets = {
        "nobody": None,
        "outsider": api_token_create(user=oscar, name="t")[1],
        "member": api_token_create(user=bob, name="t")[1],
        "lead": lead_secret,
        "other_lead": api_token_create(user=olga, name="t")[1],
        "other_key": other_secret,
        "own_key": own_secret,
    }
    return SimpleNamespace(
        secrets=secrets,
        ids={
            "team": team.slug,
            "pool": pool.slug,
            "account": account.pk,
            "own_key": own_key.pk,
            "doomed_key": doomed.pk,
            "lead_token": lead_token.pk,
            "checkout": checkout.pk,
            "channel": channel.pk,
            "doomed_channel": doomed_channel.pk,
            "session": login.session,
            "state": parse_qs(urlsplit(login.authorize_url).query)["state"][0],
        },
        names=[
            team.name,
            team.slug,
            pool.name,
            pool.slug,
            account.label,
            api_account.label,
            own_key.name,
            doomed.name,
            channel.name,
            "alice",
            "bob",
        ],
    )


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def call(world, method, path, body=None, caller="lead"):
    secret = world.secrets[caller]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
    data = "" if body is None else json.dumps(_fill(body, world.ids))
    return Client().generic(
        method,
        "/api/v1" + path.format(**world.ids),
        data,
        content_type="application/json",
        **headers,
    )


def row_counts() -> dict[str, int]:
    models = (
        Team,
        Membership,
        Pool,
        Account,
        ConsumerKey,
        Checkout,
        AccountEvent,
        OAuthLogin,
        Channel,
        Delivery,
    )
    counts = {model.__name__: model.objects.count() for model in models}
    counts["live keys"] = ConsumerKey.objects.filter(revoked_at__isnull=True).count()
    counts["completed logins"] = OAuthLogin.objects.filter(completed_at__isnull=False).count()
    return counts


@pytest.mark.parametrize(("method", "path", "body", "caller", "expected"), CASES)
def test_each_caller_gets_what_its_role_allows(world, method, path, body, caller, expected):
    before = row_counts()

    response = call(world, method, path, body, caller)

    assert response.status_code == expected, response.content
    if expected >= 400:
        error = response.json()["error"]
        assert error["code"], error
        assert error["message"], error
        assert row_counts() == before
    if caller in STRANGERS:
        text = response.content.decode().lower()
        assert not [name for name in world.names if name.lower() in text], text


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", re.sub(r"/actions/[a-z-]+$", "/actions/{action}", path))


def test_the_matrix_covers_every_operation_the_api_serves(client):
    document = client.get("/api/v1/openapi.json").json()
    served = {
        (method.upper(), _shape(path.removeprefix("/api/v1")))
        for path, operations in document["paths"].items()
        for method in operations
    }

    assert served == {(method, _shape(path)) for method, path, _, _ in MATRIX}


def test_a_stranger_cannot_tell_a_pool_of_another_team_from_a_missing_one(world):
    there = call(world, "GET", "/pools/{pool}", caller="outsider")
    missing = call(world, "GET", "/pools/no-such-pool", caller="outsider")

    assert (there.status_code, there.json()) == (missing.status_code, missing.json())


def test_a_stranger_cannot_tell_an_account_of_another_team_from_a_missing_one(world):
    there = call(world, "GET", "/accounts/{account}", caller="other_lead")
    missing = call(world, "GET", "/accounts/999999", caller="other_lead")

    assert (there.status_code, there.json()) == (missing.status_code, missing.json())


def test_only_a_superuser_creates_teams(world):
    User.objects.create_superuser("root")
    world.secrets["root"] = api_token_create(user=User.objects.get(username="root"), name="t")[1]

    response = call(world, "POST", "/teams", {"name": "Newco", "slug": "newco"}, caller="root")

    assert response.status_code == 201, response.content
    assert Team.objects.filter(slug="newco").exists()


def test_a_revoked_consumer_key_is_no_credential(world):
    revoked = call(world, "DELETE", "/pools/{pool}/consumer-keys/{own_key}")

    response = call(world, "POST", "/pools/{pool}/checkout", {}, caller="own_key")

    assert revoked.status_code == 204
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    "header",
    [
        "Token {secret}",  # another scheme
        "Bearer",  # no token
        "{secret}",  # no scheme
        "Bearer sk-pool-not-a-real-key",
    ],
)
def test_a_malformed_or_unknown_authorization_is_401_and_never_logged(
    world, header, settings, caplog
):
    settings.DEBUG = True  # ninja's own bearer check logs a malformed header under DEBUG
    secret = world.secrets["own_key"]
    client = Client()
    with caplog.at_level("DEBUG"):
        response = client.post(
            f"/api/v1/pools/{world.ids['pool']}/checkout",
            "{}",
            content_type="application/json",
            HTTP_AUTHORIZATION=header.format(secret=secret),
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert secret not in caplog.text


def test_the_bearer_scheme_is_case_insensitive(world):
    client = Client()
    response = client.post(
        f"/api/v1/pools/{world.ids['pool']}/checkout",
        "{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"bearer {world.secrets['own_key']}",
    )
    assert response.status_code == 200
