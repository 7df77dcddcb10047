"""Personal API tokens expire and can be listed and revoked (API and page), and a bad, expired
or revoked credential answers 401 on every API operation, writes included: never ninja's 403
"CSRF check failed", which told a tool nothing about its credential."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from accounts_pool.api.main import api
from accounts_pool.models import ApiToken, ConsumerKey, Pool
from accounts_pool.services.keys import api_token_create, consumer_key_create

from .api import Api, error_code


def _operations() -> list[tuple[str, str]]:
    schema = api.get_openapi_schema()
    found = []
    for path, methods in schema["paths"].items():
        for method in methods:
            concrete = re.sub(r"\{[^}]+\}", "1", path.removeprefix("/api/v1"))
            found.append((method.upper(), concrete))
    return found


OPERATIONS = _operations()


def _bad_credentials(alice: User, pool: Pool) -> dict[str, str]:
    expired, expired_secret = api_token_create(user=alice, name="old", days=1)
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(1))
    revoked, revoked_secret = api_token_create(user=alice, name="gone")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    key, key_secret = consumer_key_create(pool=pool, name="gone", created_by=alice)
    ConsumerKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    return {
        "unknown token": "apt_not-a-token",
        "unknown key": "apk_not-a-key",
        "expired token": expired_secret,
        "revoked token": revoked_secret,
        "revoked key": key_secret,
    }


def test_the_api_has_many_operations_to_check() -> None:
    assert len(OPERATIONS) >= 20
    assert {"POST", "PATCH", "DELETE"} <= {method for method, _ in OPERATIONS}


@pytest.mark.django_db
@pytest.mark.parametrize("session", [False, True], ids=["no session", "with a session"])
def test_a_bad_credential_is_a_401_on_every_operation_and_method(
    alice: User, pool: Pool, session: bool
) -> None:
    # CSRF is enforced as in production. A logged-in session on the same client neither turns
    # the bad Bearer credential into a CSRF refusal nor stands in for it.
    client = Client(enforce_csrf_checks=True)
    if session:
        client.force_login(alice)
    for what, secret in _bad_credentials(alice, pool).items():
        for method, path in OPERATIONS:
            response = client.generic(
                method,
                "/api/v1" + path,
                json.dumps({}),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {secret}",
            )
            assert response.status_code == 401, (what, method, path, response.content[:200])
            assert error_code(response) == "unauthenticated"
            assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.django_db
def test_a_session_write_without_its_csrf_token_is_still_refused(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(
        "/api/v1/me/tokens", json.dumps({"name": "x"}), content_type="application/json"
    )
    assert response.status_code == 403
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_tokens_are_created_with_an_expiry_listed_and_revoked_through_the_api(
    alice: User, bob: User
) -> None:
    _, secret = api_token_create(user=alice, name="cli")
    me = Api(secret)
    created = me.post("/me/tokens", {"name": "ci", "expires_in_days": 7})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["token"].startswith("apt_")
    assert body["active"] is True
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=6, hours=23) < expires - timezone.now() <= timedelta(days=7)
    never = me.post("/me/tokens", {"name": "service", "expires_in_days": None}).json()
    assert never["expires_at"] is None

    listed = me.get("/me/tokens").json()
    assert {t["name"] for t in listed} == {"cli", "ci", "service"}
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert secret not in json.dumps(listed)
    assert body["token"] not in json.dumps(listed)

    # The new token works until it is revoked, then answers 401.
    assert Api(body["token"]).get("/teams").status_code == 200
    assert me.delete(f"/me/tokens/{body['id']}").status_code == 204
    assert Api(body["token"]).get("/teams").status_code == 401
    assert me.delete(f"/me/tokens/{body['id']}").status_code == 404  # already revoked

    # Another person's token is not found, and stays live.
    bobs, bobs_secret = api_token_create(user=bob, name="bob")
    assert me.delete(f"/me/tokens/{bobs.pk}").status_code == 404
    assert Api(bobs_secret).get("/teams").status_code == 200
    assert "bob" not in json.dumps(me.get("/me/tokens").json())


@pytest.mark.django_db
def test_bad_expiries_are_refused_and_create_nothing(alice: User, pool: Pool) -> None:
    _, secret = api_token_create(user=alice, name="cli")
    me = Api(secret)
    for days in (0, -1, 367, "soon", 10**30):
        response = me.post("/me/tokens", {"name": "x", "expires_in_days": days})
        assert response.status_code == 422, (days, response.content)
    assert ApiToken.objects.count() == 1
    _, key = consumer_key_create(pool=pool, name="tool", created_by=alice)
    assert Api(key).get("/me/tokens").status_code == 403


@pytest.mark.django_db
def test_a_token_stops_working_when_it_expires(alice: User) -> None:
    token, secret = api_token_create(user=alice, name="cli", days=1)
    assert Api(secret).get("/teams").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert Api(secret).get("/teams").status_code == 401


@pytest.mark.django_db
def test_the_command_makes_expiring_tokens_unless_told(alice: User, capsys) -> None:
    call_command("create_api_token", "alice", "--days", "3")
    call_command("create_api_token", "alice", "--name", "svc", "--no-expiry")
    tokens = {t.name: t for t in ApiToken.objects.all()}
    expires = tokens["cli"].expires_at
    assert expires is not None
    assert timedelta(days=2, hours=23) < expires - timezone.now()
    assert tokens["svc"].expires_at is None
    with pytest.raises(CommandError, match="--days"):
        call_command("create_api_token", "alice", "--days", "0")
    assert ApiToken.objects.count() == 2


@pytest.mark.django_db
def test_the_tokens_page_creates_lists_and_revokes(alice: User, bob: User) -> None:
    client = Client()
    client.force_login(alice)
    page = client.post("/me/tokens/", {"name": "laptop", "expires_in_days": "30"})
    assert page.status_code == 200
    token = ApiToken.objects.get(user=alice)
    shown = re.search(r'id="new-token"[^>]*value="(apt_[^"]+)"', page.content.decode())
    assert shown is not None
    assert Api(shown.group(1)).get("/teams").status_code == 200
    assert page["Cache-Control"] == "no-store"
    listing = client.get("/me/tokens/").content.decode()
    assert "laptop" in listing
    assert token.prefix in listing
    assert shown.group(1) not in listing

    bobs, _ = api_token_create(user=bob, name="bob-cli")
    client.post(f"/me/tokens/{bobs.pk}/revoke/")
    assert ApiToken.objects.get(pk=bobs.pk).revoked_at is None
    client.post(f"/me/tokens/{token.pk}/revoke/")
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert Api(shown.group(1)).get("/teams").status_code == 401
