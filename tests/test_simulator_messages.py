"""The simulator's Messages API: what the relay forwards to, answered offline and observed."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime

import httpx
import pytest

from simulator import POLICY_MESSAGE, Fault, SimulatedAnthropic, input_tokens, reply_text

BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}
BETAS = "claude-code-20250219,oauth-2025-04-20"


@pytest.fixture(scope="module")
def server():
    with SimulatedAnthropic() as sim:
        yield sim


@pytest.fixture
def sim(server):
    server.clear_faults()
    server.reset_stats()
    yield server
    server.clear_faults()


@pytest.fixture
def client(sim):
    with httpx.Client(base_url=sim.base_url, timeout=5) as client:
        yield client


@pytest.fixture
def alice(sim):
    return sim.add_account(email="alice@sim.test")


def oauth(account, beta=BETAS):
    return {"authorization": f"Bearer {account.access_token}", "anthropic-beta": beta}


def ask(client, account, path="/v1/messages?beta=true", **fields):
    return client.post(path, json=BODY | fields, headers=oauth(account))


def open_stream(client, account):
    return client.stream(
        "POST", "/v1/messages", json=BODY | {"stream": True}, headers=oauth(account)
    )


def events(answer):
    """The (event, data) pairs of a server-sent event stream."""
    blocks = [block for block in answer.text.split("\n\n") if block]
    pairs = [dict(line.split(": ", 1) for line in block.split("\n")) for block in blocks]
    return [(pair["event"], json.loads(pair["data"])) for pair in pairs]


def test_it_answers_json_that_names_the_account_with_usage_from_the_request(client, alice):
    answer = ask(client, alice)
    assert answer.status_code == 200
    message = answer.json()
    assert (message["type"], message["role"], message["model"]) == (
        "message",
        "assistant",
        "claude-sonnet-4-5",
    )
    assert message["content"] == [{"type": "text", "text": reply_text(alice)}]
    assert "alice@sim.test" in reply_text(alice)
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)
    assert message["usage"] == {
        "input_tokens": len(json.dumps(BODY["messages"], separators=(",", ":"))) // 4,
        "output_tokens": len(reply_text(alice).split()),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_it_streams_the_real_event_sequence_with_cumulative_output_tokens(client, alice):
    answer = ask(client, alice, stream=True)
    assert answer.headers["content-type"].startswith("text/event-stream")
    kinds = [kind for kind, _ in events(answer)]
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = dict(events(answer))
    assert data["message_start"]["message"]["usage"]["input_tokens"] == input_tokens(BODY)
    text = "".join(d["delta"]["text"] for k, d in events(answer) if k == "content_block_delta")
    assert text == reply_text(alice)
    assert data["message_delta"]["usage"] == {"output_tokens": len(text.split())}
    assert data["message_delta"]["delta"]["stop_reason"] == "end_turn"


def test_an_account_streams_its_own_number_of_chunks_one_per_delay(client, alice):
    alice.stream_chunks, alice.chunk_delay = 3, 0.3
    started, arrivals = time.monotonic(), []
    with open_stream(client, alice) as answer:
        for line in answer.iter_lines():
            if line == "event: content_block_delta":
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 3
    assert all(arrival >= 0.3 * n for n, arrival in enumerate(arrivals, start=1))
    assert arrivals[0] < arrivals[-1] - 0.3  # the first came well before the last: not buffered


def test_count_tokens_answers_the_input_tokens_of_the_request(client, alice):
    answer = ask(client, alice, "/v1/messages/count_tokens?beta=true")
    assert answer.json() == {"input_tokens": input_tokens(BODY)}


def test_rate_limit_headers_are_the_usage_endpoints_windows_as_fractions(client, alice):
    alice.five_hour_utilization, alice.seven_day_utilization = 85.0, 40.0
    reset_5h = datetime(2026, 12, 1, 15, tzinfo=UTC).timestamp()
    alice.five_hour_resets_at = reset_5h
    headers = ask(client, alice).headers
    usage = client.get("/api/oauth/usage", headers=oauth(alice)).json()
    assert usage["five_hour"] == {"utilization": 85.0, "resets_at": "2026-12-01T15:00:00+00:00"}
    assert headers["anthropic-ratelimit-unified-5h-utilization"] == "0.85"
    assert headers["anthropic-ratelimit-unified-5h-reset"] == str(int(reset_5h))
    assert headers["anthropic-ratelimit-unified-7d-utilization"] == "0.4"
    reset_7d = datetime.fromisoformat(usage["seven_day"]["resets_at"]).timestamp()
    assert headers["anthropic-ratelimit-unified-7d-reset"] == str(int(reset_7d))
    assert headers["anthropic-ratelimit-unified-status"] == "allowed_warning"
    alice.ratelimit_status = "rejected"
    assert ask(client, alice).headers["anthropic-ratelimit-unified-status"] == "rejected"


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer sk-ant-oat01-never-issued", "anthropic-beta": BETAS},
        {"x-api-key": "sk-ant-api03-key", "anthropic-beta": BETAS},
        {"anthropic-beta": BETAS},
    ],
    ids=["unknown bearer", "api key", "no credential"],
)
def test_a_credential_the_simulator_did_not_issue_is_401(client, headers):
    answer = client.post("/v1/messages", json=BODY, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == "authentication_error"


def test_an_expired_token_or_a_missing_oauth_beta_is_401_with_the_accounts_headers(sim, client):
    expired = sim.add_account(access_lifetime=0)
    live = sim.add_account()
    for answer in (
        ask(client, expired),
        client.post("/v1/messages", json=BODY, headers=oauth(live, "claude-code-20250219")),
    ):
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "authentication_error"
        assert answer.headers["anthropic-ratelimit-unified-status"] == "allowed"


def test_an_invalid_body_is_400_invalid_request_error(client, alice):
    answer = client.post("/v1/messages", json={"model": "m"}, headers=oauth(alice))
    assert (answer.status_code, answer.json()["error"]["type"]) == (400, "invalid_request_error")


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (429, "rate_limit_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (529, "overloaded_error"),
        (500, "api_error"),
    ],
)
def test_an_injected_error_answers_its_type_once_with_the_accounts_headers(
    sim, client, alice, code, error_type
):
    sim.inject("messages", Fault.api_error(code), account=alice, times=1)
    failed = ask(client, alice)
    assert (failed.status_code, failed.json()["error"]["type"]) == (code, error_type)
    assert failed.headers["anthropic-ratelimit-unified-5h-utilization"] == "0.1"
    assert ask(client, alice).status_code == 200


def test_a_rate_limit_carries_retry_after_and_a_policy_block_the_exact_message(sim, client, alice):
    sim.inject("messages", Fault.api_error(429, retry_after=30), times=1)
    sim.inject("messages", Fault.api_error(403), times=1)
    assert ask(client, alice).headers["retry-after"] == "30"
    assert ask(client, alice).json()["error"]["message"] == POLICY_MESSAGE


def test_a_policy_blocked_account_is_403_on_messages_too(client, alice):
    alice.policy_blocked = True
    answer = ask(client, alice)
    assert (answer.status_code, answer.json()["error"]["message"]) == (403, POLICY_MESSAGE)


def test_a_stream_error_is_a_200_stream_whose_first_event_is_the_error(sim, client, alice):
    sim.inject("messages", Fault.stream_error("rate_limit_error"), times=1)
    answer = ask(client, alice, stream=True)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    (kind, data), *rest = events(answer)
    assert (kind, data["type"], data["error"]["type"]) == ("error", "error", "rate_limit_error")
    assert rest == []


def test_a_cut_stream_closes_the_connection_after_n_events(sim, client, alice):
    sim.inject("messages", Fault.stream_cut(after_events=3), times=1)
    seen: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), open_stream(client, alice) as answer:
        seen.extend(line for line in answer.iter_lines() if line.startswith("event:"))
    assert seen == ["event: message_start", "event: content_block_start", "event: ping"]
    assert sim.messages_requests(settle=5)[-1].events_sent == 3


def test_latency_before_the_answer_holds_it_for_the_seconds(sim, client, alice):
    sim.inject("messages", Fault.delay(0.3), account=alice, times=1)
    started = time.monotonic()
    assert ask(client, alice).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_every_request_is_recorded_with_its_headers_body_and_serving_account(sim, client, alice):
    ask(client, alice, stream=True)
    client.post("/v1/messages/count_tokens", json=BODY, headers={"x-api-key": "k"})
    served, refused = sim.messages_requests(settle=5)
    assert (served.path, served.query, served.account, served.status) == (
        "/v1/messages",
        "beta=true",
        alice,
        200,
    )
    assert served.headers["anthropic-beta"] == BETAS  # names lower-cased
    assert served.json() == BODY | {"stream": True}
    assert served.body_sha256 == hashlib.sha256(served.body).hexdigest()
    assert (served.stream, served.events_sent, served.finished, served.disconnected) == (
        True,
        10,
        True,
        False,
    )
    assert (refused.path, refused.account, refused.status) == (
        "/v1/messages/count_tokens",
        None,
        401,
    )
    stats = sim.stats()
    assert (stats["messages"], stats["count_tokens"], stats["disconnects"]) == (1, 1, 0)


def test_a_client_that_hangs_up_mid_stream_is_counted_as_a_disconnect(sim, alice):
    alice.stream_chunks, alice.chunk_delay = 30, 1.0  # a 30 s answer
    with (
        httpx.Client(base_url=sim.base_url, timeout=5) as client,
        open_stream(client, alice) as ans,
    ):
        next(line for line in ans.iter_lines() if "content_block_delta" in line)
    deadline = time.monotonic() + 3
    while sim.stats()["disconnects"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["disconnects"] == 1
    (request,) = sim.messages_requests(settle=5)
    assert (request.disconnected, request.finished, request.events_sent) == (True, True, 4)


def test_a_client_that_gives_up_during_the_latency_is_counted_as_a_disconnect(sim, client, alice):
    sim.inject("messages", Fault.delay(3), times=1)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/messages", json=BODY, headers=oauth(alice), timeout=0.3)
    deadline = time.monotonic() + 2
    while sim.stats()["disconnects"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    (request,) = sim.messages_requests(settle=5)
    assert (request.disconnected, request.status) == (True, 0)


def test_a_cut_json_answer_ends_after_half_its_body(sim, client, alice):
    sim.inject("messages", Fault.stream_cut(after_events=0), times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        ask(client, alice)
    assert ask(client, alice).status_code == 200


def test_a_refreshed_access_token_serves_and_the_one_it_replaced_is_401(client, alice):
    stale = alice.access_token
    body = {"grant_type": "refresh_token", "refresh_token": alice.refresh_token}
    fresh = client.post("/v1/oauth/token", json=body).json()["access_token"]
    headers = {"anthropic-beta": BETAS}
    old = client.post(
        "/v1/messages", json=BODY, headers=headers | {"authorization": f"Bearer {stale}"}
    )
    new = client.post(
        "/v1/messages", json=BODY, headers=headers | {"authorization": f"Bearer {fresh}"}
    )
    assert (old.status_code, new.status_code) == (401, 200)
    assert new.json()["content"][0]["text"] == reply_text(alice)
