"""The simulated Anthropic provider speaks the real protocol; its faults reach an httpx client."""

from __future__ import annotations

import html
import json
import re
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from simulator import POLICY_MESSAGE, Fault, SimulatedAnthropic, pkce_challenge

CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server():
    with SimulatedAnthropic() as sim:
        yield sim


@pytest.fixture
def sim(server):
    server.clear_faults()
    server.reset_stats()
    server.latency = 0.0
    yield server
    server.clear_faults()


@pytest.fixture
def client(sim):
    with httpx.Client(base_url=sim.base_url, timeout=5) as client:
        yield client


def refresh(client, token):
    body = {"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID}
    return client.post("/v1/oauth/token", json=body)


def usage(client, access, path="/api/oauth/usage"):
    return client.get(path, headers={"Authorization": f"Bearer {access}"})


def test_refresh_rotates_and_a_reused_token_is_invalid_grant_counted_as_reused(sim, client):
    account = sim.add_account(email="a@sim.test", organization="Acme")
    old = account.refresh_token
    answer = refresh(client, old)
    assert answer.status_code == 200
    body = answer.json()
    assert body["refresh_token"] == account.refresh_token != old
    assert body["access_token"] == account.access_token
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 28800)
    assert body["account"] == {"uuid": account.uuid, "email_address": "a@sim.test"}
    assert body["organization"]["name"] == "Acme"
    reused = refresh(client, old)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert sim.account_for_refresh_token(old) is account
    stats = sim.stats()
    assert (stats["token"], stats["reused"], stats["invalid_grant"]) == (2, 1, 1)
    assert stats["refreshes"] == {account.uuid: 1}


def test_unknown_and_revoked_refresh_tokens_answer_invalid_grant(sim, client):
    account = sim.add_account()
    sim.revoke(account)
    assert refresh(client, account.refresh_token).json()["error"] == "invalid_grant"
    assert refresh(client, "sk-ant-ort01-never-issued").json()["error"] == "invalid_grant"
    assert (sim.stats()["invalid_grant"], sim.stats()["reused"]) == (2, 0)


def test_stale_or_expired_access_token_is_401_and_the_current_one_works(sim, client):
    account = sim.add_account(organization="Acme")
    stale = account.access_token
    assert refresh(client, account.refresh_token).status_code == 200
    for path in ("/api/oauth/usage", "/api/oauth/profile"):
        answer = usage(client, stale, path)
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "authentication_error"
    assert usage(client, account.access_token).json()["five_hour"]["utilization"] == 10.0
    profile = usage(client, account.access_token, "/api/oauth/profile").json()
    assert profile["account"]["uuid"] == account.uuid
    assert profile["organization"]["name"] == "Acme"
    short = sim.add_account(access_lifetime=0)
    assert usage(client, short.access_token).status_code == 401


def test_policy_blocked_account_answers_the_exact_permission_error(sim, client):
    account = sim.add_account()
    account.policy_blocked = True
    expected = {"type": "error", "error": {"type": "permission_error", "message": POLICY_MESSAGE}}
    for path in ("/api/oauth/usage", "/api/oauth/profile"):
        answer = usage(client, account.access_token, path)
        assert (answer.status_code, answer.json()) == (403, expected)


def login(client, verifier, state="s" * 32):
    query = {"code": "true", "client_id": CLIENT_ID, "response_type": "code", "state": state}
    query |= {"code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    page = client.get("/oauth/authorize", params=query)
    pasted = re.search(r'<code id="code">([^<]+)</code>', page.text).group(1)
    code, _, shown_state = pasted.partition("#")
    assert shown_state == state
    return code, state


def exchange(client, code, state, verifier):
    body = {"grant_type": "authorization_code", "code": code, "state": state}
    body |= {"client_id": CLIENT_ID, "code_verifier": verifier}
    return client.post("/v1/oauth/token", json=body)


def test_pkce_login_with_the_right_verifier_creates_a_new_account(sim, client):
    verifier = secrets.token_urlsafe(32)
    code, state = login(client, verifier)
    answer = exchange(client, code, state, verifier)
    assert answer.status_code == 200
    account = sim.account_for_refresh_token(answer.json()["refresh_token"])
    assert answer.json()["account"]["uuid"] == account.uuid
    assert usage(client, answer.json()["access_token"]).status_code == 200
    again = exchange(client, code, state, verifier)
    assert again.json()["error"] == "invalid_grant"  # codes are single-use
    assert (sim.stats()["exchange"], sim.stats()["authorize"]) == (2, 1)


def test_a_revoked_account_logs_in_again_as_itself_from_the_login_pages_choice(sim, client):
    gone = sim.add_account(email="gone@demo.test")
    sim.revoke(gone)
    verifier = secrets.token_urlsafe(32)
    query = {"code": "true", "client_id": CLIENT_ID, "response_type": "code", "state": "s" * 32}
    query |= {"code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    page = client.get("/oauth/authorize", params=query)
    link = re.search(r'<a href="([^"]+)">gone@demo.test</a>', page.text).group(1)
    chosen = client.get("/oauth/authorize" + html.unescape(link))
    pasted = re.search(r'<code id="code">([^<]+)</code>', chosen.text).group(1)
    code, _, state = pasted.partition("#")
    answer = exchange(client, code, state, verifier)
    assert answer.json()["account"]["uuid"] == gone.uuid  # the same account, not a new one
    refreshed = client.post(
        "/v1/oauth/token",
        json={"grant_type": "refresh_token", "refresh_token": answer.json()["refresh_token"]},
    )
    assert refreshed.status_code == 200


def test_pkce_exchange_with_a_wrong_verifier_is_invalid_grant(client):
    code, state = login(client, secrets.token_urlsafe(32))
    answer = exchange(client, code, state, secrets.token_urlsafe(32))
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


def test_status_fault_429_carries_retry_after_and_counts_as_a_fault(sim, client):
    account = sim.add_account()
    sim.inject("usage", Fault.status(429, headers={"Retry-After": "30"}))
    answer = usage(client, account.access_token)
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "30")
    assert answer.json()["error"]["type"] == "rate_limit_error"
    sim.inject("profile", Fault.status(403, "<h1>denied</h1>", content_type="text/html"))
    denied = usage(client, account.access_token, "/api/oauth/profile")
    assert (denied.status_code, denied.text) == (403, "<h1>denied</h1>")
    assert sim.stats()["faults"] == 2


def test_timeout_fault_trips_a_shorter_client_timeout(sim, client):
    account = sim.add_account()
    sim.inject("token", Fault.timeout(3), times=1)
    with pytest.raises(httpx.TimeoutException):
        client.post(
            "/v1/oauth/token",
            json={"grant_type": "refresh_token", "refresh_token": account.refresh_token},
            timeout=0.3,
        )
    assert refresh(client, account.refresh_token).status_code == 200  # nothing was rotated


def test_reset_fault_closes_the_connection_without_an_answer(sim, client):
    account = sim.add_account()
    sim.inject("usage", Fault.reset(), times=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        usage(client, account.access_token)
    assert usage(client, account.access_token).status_code == 200


def test_html_and_malformed_json_faults(sim, client):
    account = sim.add_account()
    sim.inject("usage", Fault.html(502), times=1)
    sim.inject("usage", Fault.malformed_json(), times=1)
    page = usage(client, account.access_token)
    assert (page.status_code, page.headers["Content-Type"][:9]) == (502, "text/html")
    broken = usage(client, account.access_token)
    assert (broken.status_code, broken.headers["Content-Type"]) == (200, "application/json")
    with pytest.raises(json.JSONDecodeError):
        broken.json()


def test_slow_body_and_delay_take_at_least_their_seconds_then_answer_normally(sim, client):
    account = sim.add_account()
    sim.inject("usage", Fault.slow_body(0.5), times=1)
    sim.inject("usage", Fault.delay(0.3), times=1)
    for seconds in (0.5, 0.3):
        started = time.monotonic()
        answer = usage(client, account.access_token)
        assert time.monotonic() - started >= seconds
        assert answer.json()["seven_day"]["utilization"] == 20.0


def test_a_fault_scoped_to_one_account_spares_the_others(sim, client):
    hit, spared = sim.add_account(), sim.add_account()
    sim.inject("token", Fault.status(503), account=hit)
    assert refresh(client, spared.refresh_token).status_code == 200
    assert refresh(client, hit.refresh_token).status_code == 503
    assert refresh(client, hit.refresh_token).status_code == 503  # until cleared
    sim.clear_faults()
    assert refresh(client, hit.refresh_token).status_code == 200


def test_times_one_applies_once(sim, client):
    account = sim.add_account()
    sim.inject("usage", Fault.status(500), times=1)
    codes = [usage(client, account.access_token).status_code for _ in range(3)]
    assert codes == [500, 200, 200]
    assert (sim.stats()["faults"], sim.stats()["usage"]) == (1, 3)


def test_seeding_ten_thousand_accounts_is_fast(sim, client):
    started = time.monotonic()
    accounts = sim.seed(10_000, prefix="bench")
    assert time.monotonic() - started < 2
    assert len({a.refresh_token for a in accounts}) == 10_000
    assert refresh(client, accounts[-1].refresh_token).status_code == 200


def test_concurrent_refreshes_of_a_hundred_accounts_from_twenty_threads(sim):
    accounts = sim.seed(100)
    sim.latency = 0.01
    limits = httpx.Limits(max_connections=20)
    with (
        httpx.Client(base_url=sim.base_url, timeout=10, limits=limits) as client,
        ThreadPoolExecutor(max_workers=20) as pool,
    ):
        codes = list(pool.map(lambda a: refresh(client, a.refresh_token).status_code, accounts))
    assert codes == [200] * 100
    assert sum(sim.stats()["refreshes"].values()) == 100


def test_cli_seeds_writes_tokens_prints_env_and_exits_zero_on_sigterm(tmp_path):
    out = tmp_path / "tokens.json"
    command = [sys.executable, "-m", "simulator", "--port", "0", "--accounts", "2"]
    process = subprocess.Popen(
        [*command, "--tokens-out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        env = dict(process.stdout.readline().strip().partition("=")[::2] for _ in range(5))
        assert env["ANTHROPIC_TOKEN_URL"] == env["ANTHROPIC_API_URL"] + "/v1/oauth/token"
        rows = json.loads(out.read_text())
        assert [sorted(row) for row in rows] == [["email", "refresh_token", "uuid"]] * 2
        body = {"grant_type": "refresh_token", "refresh_token": rows[0]["refresh_token"]}
        assert httpx.post(env["ANTHROPIC_TOKEN_URL"], json=body).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
