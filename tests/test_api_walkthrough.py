"""A whole team through the API, as a new user would, and not one secret in what it answers
except the checkout's credential and a new key's one showing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import httpx
from django.contrib.auth.models import User
from django.utils import timezone

from accounts_pool.services.cycle import cycle_run
from accounts_pool.services.keys import api_token_create

from .api import Api
from .conftest import token_answer, usage_answer

ONBOARD_REFRESH = "sk-ant-ort01-walkthrough-onboard-by-tokens"
IMPORTED_REFRESH = "sk-ant-ort01-walkthrough-imported-from-claude-code"
IMPORTED_ACCESS = "sk-ant-oat01-walkthrough-imported-access"


def _token_answers():
    """Each token call rotates to new, distinct tokens and names a distinct account."""
    serial = iter(range(1, 100))

    def answer(request: httpx.Request) -> httpx.Response:
        n = next(serial)
        body = token_answer(access=f"sk-ant-oat01-walk-{n}", refresh=f"sk-ant-ort01-walk-{n}")
        body["account"] = {"uuid": f"acct-{n}", "email_address": f"person{n}@acme.test"}
        return httpx.Response(200, json=body)

    return answer


def test_a_team_onboards_three_accounts_checks_out_and_a_429_moves_checkout(db, provider):
    root = User.objects.create_superuser("root", password="root-password-1")
    for name in ("alice", "bob"):
        User.objects.create_user(name, password=f"{name}-password-1")
    seen: list[str] = []
    admin = Api(api_token_create(user=root, name="setup")[1], seen=seen)
    assert admin.post("/teams", {"name": "Acme", "slug": "acme"}).status_code == 201
    assert (
        admin.post("/teams/acme/members", {"username": "alice", "role": "lead"}).status_code == 201
    )
    assert (
        admin.post("/teams/acme/members", {"username": "bob", "role": "member"}).status_code == 201
    )
    lead = Api(api_token_create(user=User.objects.get(username="alice"), name="cli")[1], seen=seen)
    assert lead.post("/teams/acme/pools", {"name": "Claude", "slug": "claude"}).status_code == 201
    provider.token.side_effect = _token_answers()
    provider.usage.respond(200, json=usage_answer())

    # 1. tokens: checked by a refresh, the rotated tokens are what is stored
    by_tokens = lead.post(
        "/pools/claude/accounts",
        {"label": "by tokens", "kind": "oauth", "refresh_token": ONBOARD_REFRESH},
    )
    assert by_tokens.status_code == 201, by_tokens.content
    assert by_tokens.json()["outcome"] == "verified"
    # 2. PKCE login: open the URL, paste CODE#STATE
    started = lead.post("/pools/claude/oauth/start", {}).json()
    state = httpx.URL(started["authorize_url"]).params["state"]
    by_login = lead.post(
        "/pools/claude/oauth/complete",
        {"session": started["session"], "code": f"the-code#{state}", "label": "by login"},
    )
    assert by_login.status_code == 201, by_login.content
    # 3. import a Claude Code credentials file
    expires_ms = int((timezone.now() + timedelta(hours=6)).timestamp() * 1000)
    credentials = {
        "claudeAiOauth": {
            "accessToken": IMPORTED_ACCESS,
            "refreshToken": IMPORTED_REFRESH,
            "expiresAt": expires_ms,
            "scopes": ["user:inference"],
        }
    }
    imported = lead.post("/pools/claude/accounts/import?label=imported", credentials)
    assert imported.status_code == 201, imported.content
    assert imported.json()["imported"] == 1

    list(cycle_run())  # the cycle polls quota for all three
    pool = lead.get("/pools/claude").json()
    assert pool["counts"] == {"usable": 3, "degraded": 0, "excluded": 0}, pool

    key = lead.post("/pools/claude/consumer-keys", {"name": "laptop"}).json()
    tool = Api(key["key"], seen=seen)
    first = tool.post("/pools/claude/checkout", {"session": "s-1"}).json()
    reported_at = timezone.now()
    report = tool.post(
        f"/checkouts/{first['checkout_id']}/report",
        {"status": 429, "retry_after": "120", "message": "rate_limit_error"},
    )
    assert report.status_code == 200, report.content

    detail = lead.get(f"/accounts/{first['account']['id']}").json()
    assert detail["status"] == "excluded"
    cooldown = detail["reasons"][0]
    assert cooldown["code"] == "cooldown"
    until = datetime.fromisoformat(cooldown["until"])
    assert reported_at + timedelta(seconds=119) <= until <= timezone.now() + timedelta(seconds=121)
    assert detail["cooldown"]["reason"] == "429 reported by laptop"
    second = tool.post("/pools/claude/checkout", {"session": "s-1"}).json()
    assert second["account"]["id"] != first["account"]["id"]

    _no_secret_in(seen, allowed=[first, second, key, started])


def _no_secret_in(bodies: list[str], allowed: list[dict]) -> None:
    """Every token the walk-through used is absent from every body, except the checkout's
    credential, the new key's one showing, and the login session start hands out."""
    secrets = [ONBOARD_REFRESH, IMPORTED_REFRESH, IMPORTED_ACCESS]
    secrets += [f"sk-ant-oat01-walk-{n}" for n in range(1, 10)]
    secrets += [f"sk-ant-ort01-walk-{n}" for n in range(1, 10)]
    shown_once = [a["credential"]["access_token"] for a in allowed if "credential" in a]
    shown_once += [a["key"] for a in allowed if "key" in a]
    shown_once += [a["session"] for a in allowed if "session" in a]
    for body in bodies:
        for secret in secrets:
            if secret in body:
                assert secret in shown_once, f"{secret} leaked in {body[:200]}"
                assert json.loads(body).get("credential") or json.loads(body).get("key"), body
