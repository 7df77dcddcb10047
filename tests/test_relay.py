"""The relay in process: the ASGI app the relay process serves (config.asgi) driven by httpx,
the Messages API mocked at the HTTP boundary (respx). What a real tool sees through a real
server is in test_relay_clients.py."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import httpx
import pytest
import respx
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.test import AsyncClient, Client
from django.utils import timezone

from accounts_pool import selectors
from accounts_pool.models import Account, AccountEvent, QuotaWindow
from accounts_pool.services import relay as relay_service
from accounts_pool.services.keys import consumer_key_create, consumer_key_revoke
from accounts_pool.services.limits import consumer_key_set_limits
from accounts_pool.state import KeyLimits, PolicyStatus, ReasonCode, Status
from config.asgi import application  # at import: its django.setup() redoes the logging config

from .conftest import (
    POLICY_MESSAGE,
    REFRESH,
    policy_403,
    token_answer,
    usable_account,
)

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = f"{settings.ANTHROPIC_API_URL}/v1/messages"
BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


def reply(text: str = "hello", **headers: str) -> httpx.Response:
    content = [{"type": "text", "text": text}]
    return httpx.Response(200, json={"type": "message", "content": content}, headers=headers)


def error(status: int, kind: str, message: str = "no") -> httpx.Response:
    return httpx.Response(
        status, json={"type": "error", "error": {"type": kind, "message": message}}
    )


def stream(*events: tuple[str, dict]) -> httpx.Response:
    text = "".join(f"event: {kind}\ndata: {json.dumps(data)}\n\n" for kind, data in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text)


def usable(pool, label, **fields):
    return usable_account(pool, label, access_token=f"sk-ant-oat01-{label}", **fields)


@pytest.fixture(autouse=True)
def _no_harvest_wait():
    """Each test starts with no account's header harvest throttled (ids repeat across tests)."""
    relay_service._last_harvest.clear()


@pytest.fixture
def secret(pool, alice):
    return consumer_key_create(pool=pool, name="laptop", created_by=alice)[1]


@pytest.fixture
def upstream():
    with respx.mock(assert_all_called=False) as router:
        yield router


def relay(secret, body=BODY, path="/v1/messages?beta=true", method="post", **headers):
    """One request through the relay process's ASGI app: (status, headers, body bytes)."""

    async def send():
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as client:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
            sent.update(headers)
            answer = await client.request(
                method.upper(), f"/relay/anthropic{path}", content=raw, headers=sent
            )
            return answer.status_code, answer.headers, answer.content

    return async_to_sync(send)()


def runserver_relay(secret, body=BODY, path="/v1/messages?beta=true", **headers):
    """One request through the URLconf's relay view (what `manage.py runserver` serves)."""

    async def send():
        answer = await AsyncClient().post(
            f"/relay/anthropic{path}",
            json.dumps(body).encode(),
            content_type="application/json",
            headers={"authorization": f"Bearer {secret}", **headers},
        )
        content = (
            b"".join([c async for c in answer.streaming_content])  # type: ignore[attr-defined]
            if answer.streaming
            else answer.content
        )
        return answer.status_code, answer.headers, content

    return async_to_sync(send)()


def test_runserver_serves_the_same_exchange(pool, secret, upstream):
    """The URLconf's view is the other front end of the same exchange: an answer passes
    through, a bad key and an unknown path get the Messages API's error shape."""
    usable(pool, "ana")
    route = upstream.post(MESSAGES).mock(return_value=reply("via runserver"))
    status, _, body = runserver_relay(secret, **{"anthropic-beta": "claude-code-20250219"})
    assert (status, json.loads(body)["content"][0]["text"]) == (200, "via runserver")
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-ant-oat01-ana"
    assert sent.headers["anthropic-beta"] == "claude-code-20250219,oauth-2025-04-20"
    assert sent.url.query == b"beta=true"
    status, _, body = runserver_relay("apk_not-a-key")
    assert (status, json.loads(body)["error"]["type"]) == (401, "authentication_error")
    status, _, body = runserver_relay(secret, path="/v1/models")
    assert (status, json.loads(body)["error"]["type"]) == (404, "not_found_error")
    assert route.call_count == 1


def test_it_sends_the_accounts_oauth_token_and_never_the_consumer_key(pool, secret, upstream):
    usable(pool, "ana")
    route = upstream.post(MESSAGES).mock(return_value=reply("from ana"))
    status, _, body = relay(secret, **{"anthropic-beta": "claude-code-20250219"})
    assert (status, json.loads(body)["content"][0]["text"]) == (200, "from ana")
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-ant-oat01-ana"
    assert sent.headers["anthropic-beta"] == "claude-code-20250219,oauth-2025-04-20"
    assert sent.url.query == b"beta=true"
    assert sent.content == json.dumps(BODY).encode()  # byte for byte
    assert secret not in str(sent.headers)


def test_a_key_in_x_api_key_works_too(pool, secret, upstream):
    usable(pool, "ana")
    route = upstream.post(MESSAGES).mock(return_value=reply())
    assert relay("", **{"authorization": "", "x-api-key": secret})[0] == 200
    assert "x-api-key" not in route.calls.last.request.headers


def test_a_bad_or_revoked_key_is_refused_and_nothing_is_sent(pool, alice, secret, upstream):
    usable(pool, "ana")
    route = upstream.post(MESSAGES).mock(return_value=reply())
    status, _, body = relay("apk_not-a-key")
    assert (status, json.loads(body)["error"]["type"]) == (401, "authentication_error")
    key = pool.consumer_keys.get()
    consumer_key_revoke(key=key)
    assert relay(secret)[0] == 401
    assert route.call_count == 0


def test_a_429_cools_the_account_down_and_the_next_one_answers(pool, secret, upstream):
    ana, bea = usable(pool, "ana", priority=1), usable(pool, "bea", priority=2)
    route = upstream.post(MESSAGES)
    route.side_effect = [error(429, "rate_limit_error"), reply("from bea")]
    status, _, body = relay(secret)
    assert (status, json.loads(body)["content"][0]["text"]) == (200, "from bea")
    ana.refresh_from_db()
    assert ana.cooldown_until is not None
    event = AccountEvent.objects.get(account=ana)
    assert (event.outcome, event.actor) == ("rate_limited", pool.consumer_keys.get().actor)
    assert not AccountEvent.objects.filter(account=bea).exists()


def test_a_401_refreshes_once_and_the_same_account_answers(pool, secret, upstream):
    ana = usable(pool, "ana")
    token = upstream.post(settings.ANTHROPIC_TOKEN_URL).respond(200, json=token_answer())
    route = upstream.post(MESSAGES)
    route.side_effect = [error(401, "authentication_error"), reply("again ana")]
    status, _, body = relay(secret)
    assert (status, json.loads(body)["content"][0]["text"]) == (200, "again ana")
    assert token.call_count == 1
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-ant-oat01-new-access"
    ana.refresh_from_db()
    assert ana.access_from_401


def test_an_account_deleted_while_the_relay_refreshes_it_leaves_the_next_one_to_answer(
    pool, secret, upstream
):
    ana = usable(pool, "ana", priority=1, access_expires_at=timezone.now() + timedelta(minutes=4))
    usable(pool, "bea", priority=2)

    def deleted_meanwhile(request: httpx.Request) -> httpx.Response:
        Account.objects.filter(pk=ana.pk).delete()  # a lead, in another request
        return httpx.Response(200, json=token_answer())

    token = upstream.post(settings.ANTHROPIC_TOKEN_URL).mock(side_effect=deleted_meanwhile)
    route = upstream.post(MESSAGES).mock(return_value=reply("from bea"))
    status, _, body = relay(secret)
    assert (status, json.loads(body)["content"][0]["text"]) == (200, "from bea")
    assert token.call_count == 1
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-ant-oat01-bea"


def test_a_second_401_backs_the_refresh_off_and_the_next_account_answers(pool, secret, upstream):
    ana, _ = usable(pool, "ana", priority=1), usable(pool, "bea", priority=2)
    token = upstream.post(settings.ANTHROPIC_TOKEN_URL).respond(200, json=token_answer())
    route = upstream.post(MESSAGES)
    route.side_effect = [error(401, "authentication_error")] * 2 + [reply("from bea")]
    status, _, body = relay(secret)
    assert (status, json.loads(body)["content"][0]["text"]) == (200, "from bea")
    assert (token.call_count, route.call_count) == (1, 3)
    ana.refresh_from_db()
    reason = ana.verdict(timezone.now()).first_reason
    assert reason.code == ReasonCode.REFRESH_BACKOFF
    assert "Messages API rejected" in reason.message


def test_a_policy_403_blocks_the_account_and_the_next_one_answers(pool, secret, upstream):
    ana, _ = usable(pool, "ana", priority=1), usable(pool, "bea", priority=2)
    route = upstream.post(MESSAGES)
    route.side_effect = [httpx.Response(403, json=policy_403()), reply("from bea")]
    assert relay(secret)[0] == 200
    ana.refresh_from_db()
    assert (ana.policy_status, ana.policy_message) == (PolicyStatus.BLOCKED, POLICY_MESSAGE)


def test_another_403_passes_through_and_changes_nothing(pool, secret, upstream):
    ana = usable(pool, "ana")
    upstream.post(MESSAGES).mock(return_value=error(403, "permission_error", "not this model"))
    status, _, body = relay(secret)
    assert (status, json.loads(body)["error"]["message"]) == (403, "not this model")
    assert Account.objects.get(pk=ana.pk).policy_status == PolicyStatus.OK


def test_a_stream_opening_with_a_rate_limit_error_fails_over_before_any_byte(
    pool, secret, upstream
):
    ana, _ = usable(pool, "ana", priority=1), usable(pool, "bea", priority=2)
    limited = stream(
        ("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    )
    served = stream(
        ("message_start", {"type": "message_start", "message": {"id": "m2"}}),
        ("message_stop", {"type": "message_stop"}),
    )
    upstream.post(MESSAGES).side_effect = [limited, served]
    status, headers, body = relay(secret, body={**BODY, "stream": True})
    assert (status, headers["content-type"]) == (200, "text/event-stream")
    assert b"slow down" not in body
    assert b'"m2"' in body
    assert Account.objects.get(pk=ana.pk).cooldown_until is not None


def test_a_529_passes_through_and_changes_no_account(pool, secret, upstream):
    ana = usable(pool, "ana")
    upstream.post(MESSAGES).mock(return_value=error(529, "overloaded_error"))
    assert relay(secret)[0] == 529
    ana.refresh_from_db()
    assert ana.cooldown_until is None
    assert not AccountEvent.objects.exists()


def test_nothing_routable_is_a_429_with_retry_after_naming_the_reasons(pool, secret, upstream):
    until = timezone.now() + timedelta(minutes=20)
    usable(pool, "ana", cooldown_until=until)
    usable(
        pool,
        "bea",
        refresh_token="sk-ant-ort01-bea",
        relogin_required_for="x",
        refresh_token_fingerprint="x",
    )
    route = upstream.post(MESSAGES).mock(return_value=reply())
    status, headers, body = relay(secret)
    message = json.loads(body)["error"]["message"]
    assert (status, json.loads(body)["error"]["type"]) == (429, "rate_limit_error")
    assert 1150 <= int(headers["retry-after"]) <= 1201
    assert message.startswith("accounts-pool: no account for claude-sonnet-4-5 in pool 'claude':")
    assert f"1 rate limited until {until:%H:%M} UTC" in message
    assert "1 need re-login" in message
    assert route.call_count == 0


def test_rate_limit_headers_update_the_windows_without_a_usage_call(pool, secret, upstream):
    ana = usable(pool, "ana")
    reset = int((timezone.now() + timedelta(hours=2)).timestamp())
    upstream.post(MESSAGES).mock(
        return_value=reply(
            **{
                "anthropic-ratelimit-unified-5h-utilization": "0.42",
                "anthropic-ratelimit-unified-5h-reset": str(reset),
                "anthropic-ratelimit-unified-7d-utilization": "0.9",
            }
        )
    )
    assert relay(secret)[0] == 200
    windows = {w.key: w for w in QuotaWindow.objects.filter(account=ana)}
    assert (windows["five_hour"].utilization, windows["five_hour"].source) == (42.0, "relay")
    assert int(windows["five_hour"].resets_at.timestamp()) == reset
    assert windows["seven_day"].utilization == 90.0


def test_a_harvest_writes_its_windows_in_one_statement_and_keeps_when_they_filled(pool):
    """Headers of a busy account are written every 10 s: every window goes in one upsert
    (read, pool policy, upsert, account, history points), and a window still full keeps the
    time it became full (exhausted_since), as a poll keeps it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    now = timezone.now()
    ana = usable(pool, "ana")
    reset = now + timedelta(hours=2)
    full_since = now - timedelta(minutes=30)
    ana.quota_windows.filter(key="five_hour").update(
        utilization=100, resets_at=reset, exhausted_since=full_since
    )
    headers = {
        "anthropic-ratelimit-unified-5h-utilization": "1.0",
        "anthropic-ratelimit-unified-5h-reset": str(int(reset.timestamp())),
        "anthropic-ratelimit-unified-7d-utilization": "0.5",
    }
    with CaptureQueriesContext(connection) as queries:
        written = relay_service.relay_harvest(account_id=ana.pk, headers=headers)
    assert sorted(written) == ["five_hour", "seven_day"]
    work = [q["sql"] for q in queries if q["sql"].startswith(("SELECT", "INSERT", "UPDATE"))]
    assert len(work) == 5, work
    windows = {w.key: w for w in QuotaWindow.objects.filter(account=ana)}
    assert windows["five_hour"].exhausted_since == full_since
    assert windows["five_hour"].source == "relay"
    assert windows["seven_day"].utilization == 50.0


def test_a_busy_accounts_quota_is_not_polled_while_headers_keep_it_live(pool, secret, upstream):
    ana = usable(pool, "ana", quota_checked_at=timezone.now() - timedelta(minutes=9))
    assert selectors.accounts_due_for_quota(now=timezone.now(), limit=10) == [ana.pk]
    upstream.post(MESSAGES).mock(
        return_value=reply(**{"anthropic-ratelimit-unified-5h-utilization": "0.3"})
    )
    assert relay(secret)[0] == 200
    assert selectors.accounts_due_for_quota(now=timezone.now(), limit=10) == []
    later = timezone.now() + timedelta(minutes=5, seconds=1)
    assert selectors.accounts_due_for_quota(now=later, limit=10) == [ana.pk]


def test_a_full_opus_only_window_skips_the_account_for_opus_only(pool, secret, upstream):
    now = timezone.now()
    ana, _ = usable(pool, "ana", priority=1), usable(pool, "bea", priority=2)
    ana.quota_windows.create(
        key="model:opus",
        label="Opus-only weekly",
        utilization=100,
        model_name="Opus",
        resets_at=now + timedelta(days=2),
        checked_at=now,
    )
    route = upstream.post(MESSAGES).mock(return_value=reply())
    relay(secret, body={**BODY, "model": "claude-opus-4-5"})
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-ant-oat01-bea"
    relay(secret, body={**BODY, "model": "claude-sonnet-4-5"})
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-ant-oat01-ana"


def test_a_session_stays_on_its_account(pool, secret, upstream):
    usable(pool, "ana"), usable(pool, "bea")
    route = upstream.post(MESSAGES).mock(return_value=reply())
    session = {"x-claude-code-session-id": "4f1c"}
    relay(secret, **session)
    first = route.calls.last.request.headers["authorization"]
    relay(secret)  # least recently used routing moves a request without a session on
    relay(secret, **session)
    assert route.calls.last.request.headers["authorization"] == first


def test_a_body_over_the_cap_is_413_and_nothing_is_sent(pool, secret, upstream, settings):
    settings.RELAY_MAX_BODY_BYTES = 1024
    usable(pool, "ana")
    route = upstream.post(MESSAGES).mock(return_value=reply())
    status, _, body = relay(secret, body=b"x" * 2048)
    assert (status, json.loads(body)["error"]["type"]) == (413, "request_too_large")
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/v1/complete"), ("get", "/v1/messages"), ("post", "/v1/models")],
)
def test_anything_else_under_the_prefix_is_404(secret, method, path):
    status, _, body = relay(secret, method=method, path=path)
    assert (status, json.loads(body)["error"]["type"]) == (404, "not_found_error")


def test_an_upstream_that_does_not_answer_is_a_502(pool, secret, upstream):
    usable(pool, "ana")
    upstream.post(MESSAGES).mock(side_effect=httpx.ConnectError("refused"))
    status, _, body = relay(secret)
    assert (status, json.loads(body)["error"]["type"]) == (502, "api_error")


def test_a_key_of_another_pool_never_reaches_this_pools_accounts(pool, team, alice, upstream):
    other = pool.__class__.objects.create(team=team, name="Other", slug="other")
    usable(other, "zed")
    secret = consumer_key_create(pool=pool, name="laptop", created_by=alice)[1]
    route = upstream.post(MESSAGES).mock(return_value=reply())
    assert relay(secret)[0] == 429  # this pool has no account
    assert route.call_count == 0
    assert Account.objects.get(label="zed").verdict(timezone.now()).status == Status.USABLE


def test_a_content_length_of_5000_digits_is_a_413_not_a_crash(pool, secret, upstream):
    usable(pool, "ana")
    route = upstream.post(MESSAGES).mock(return_value=reply())
    answer = Client().post(  # WSGI: the header arrives as it was sent
        "/relay/anthropic/v1/messages",
        json.dumps(BODY),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        CONTENT_LENGTH="9" * 5_000,
    )
    assert (answer.status_code, answer.json()["error"]["type"]) == (413, "request_too_large")
    assert route.call_count == 0


def test_a_body_nested_1000_deep_is_relayed_byte_for_byte(pool, secret, upstream):
    usable(pool, "ana")
    route = upstream.post(MESSAGES).mock(return_value=reply())
    deep = b'{"model": "claude-sonnet-4-5", "x": ' + b"[" * 1_000 + b"]" * 1_000 + b"}"
    assert relay(secret, body=deep)[0] == 200
    assert route.calls.last.request.content == deep


def test_an_upstream_error_nested_past_the_parsers_stack_passes_through(pool, secret, upstream):
    usable(pool, "ana")
    nested = b"[" * 100_000 + b"]" * 100_000
    upstream.post(MESSAGES).mock(return_value=httpx.Response(400, content=nested))
    status, _, body = relay(secret)
    assert (status, body) == (400, nested)


def test_no_token_key_prompt_or_completion_is_logged_through_failovers(
    pool, secret, upstream, caplog
):
    """Every logger at DEBUG while requests fail over (a 429, a 401 whose refresh fails, an
    unreachable upstream) and then succeed: no secret, prompt or answer in logs or events."""
    prompt, completion = "relay-caplog-prompt-5b1e", "relay-caplog-completion-9d2c"
    usable(pool, "ana", priority=1), usable(pool, "bea", priority=2)
    usable(pool, "cid", priority=3, refresh_token="sk-ant-ort01-cid")
    upstream.post(settings.ANTHROPIC_TOKEN_URL).respond(500, json={"error": "down"})
    upstream.post(MESSAGES).side_effect = [
        error(429, "rate_limit_error"),
        error(401, "authentication_error"),
        httpx.ConnectError("refused"),
        reply(completion),
    ]
    body = {**BODY, "messages": [{"role": "user", "content": prompt}]}
    caplog.set_level("DEBUG")
    answers = [relay(secret, body=body) for _ in range(2)]
    assert [status for status, _, _ in answers] == [502, 200]
    assert completion.encode() in answers[1][2]
    assert "the Messages API did not answer" in caplog.text  # the logs were captured
    said = caplog.text + answers[0][2].decode()
    events = str(list(AccountEvent.objects.values()))
    for word in (secret, "sk-ant-oat01-", "sk-ant-ort01-", prompt, completion):
        assert word not in said
        assert word not in events


def test_routing_a_request_reads_each_account_once_however_many_are_candidates(pool, secret):
    """The relay's choice of account costs the same few statements for 1 or 6 accounts: no
    column of a candidate or of the chosen credential is loaded later, one query at a time."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for labels in (["solo"], ["ana", "bea", "cid", "dan", "eve"]):
        for label in labels:
            usable(pool, label)
        with CaptureQueriesContext(connection) as queries:
            relay_service.relay_start(secret=secret, session="", model=None)
        counts.append(len(queries))
    # The candidates (with the key: no statement of its own); the checkout recorded: one
    # statement on PostgreSQL, a transaction of two writes on SQLite (BEGIN, INSERT, UPDATE,
    # COMMIT). A key's use is written once a minute, by the first of these.
    recorded = 1 if connection.vendor == "postgresql" else 4
    assert counts[1] <= counts[0] <= 2 + recorded, counts
    assert counts[1] == 1 + recorded, counts


def test_the_relay_app_keeps_no_more_of_a_chunked_body_than_the_cap(settings):
    """A body of no declared length is read to its end (the tool gets its 413), but only the
    cap and one byte are kept."""
    from accounts_pool.relay_asgi import read_body

    settings.RELAY_MAX_BODY_BYTES = 1000
    chunks = [{"type": "http.request", "body": b"x" * 300, "more_body": True}] * 40
    chunks.append({"type": "http.request", "body": b"", "more_body": False})
    pending = iter(chunks)

    async def receive():
        return next(pending)

    body = async_to_sync(read_body)(receive)
    assert body is not None
    assert len(body) == 1001
    assert next(pending, None) is None  # every message was taken from the server


def test_answer_headers_outside_ascii_reach_the_tool_byte_for_byte(pool, secret, upstream):
    usable(pool, "ana")
    note = "5 € left, 残り".encode()
    answer = httpx.Response(
        200, json={"type": "message", "content": []}, headers=[(b"x-note", note)]
    )
    upstream.post(MESSAGES).mock(return_value=answer)
    status, headers, _ = relay(secret)
    assert status == 200
    assert (b"x-note", note) in headers.raw


def test_a_tool_header_outside_ascii_goes_upstream_byte_for_byte(pool, secret, upstream):
    usable(pool, "ana")
    route = upstream.post(MESSAGES).mock(return_value=reply())
    status, _, _ = relay(secret, **{"x-title": b"caf\xe9"})  # latin-1 bytes, as HTTP allows
    assert status == 200
    assert (b"x-title", b"caf\xe9") in route.calls.last.request.headers.raw


@pytest.mark.parametrize("answered", [429, 401])
def test_an_account_deleted_while_its_request_is_upstream_leaves_for_the_next(
    pool, secret, upstream, answered
):
    ana, _ = usable(pool, "ana", priority=1), usable(pool, "bea", priority=2)
    upstream.post(settings.ANTHROPIC_TOKEN_URL).respond(200, json=token_answer())
    first = True

    async def answer(request):  # a lead deletes ana while its request is with the Messages API
        nonlocal first
        if not first:
            return reply("from bea")
        first = False
        await sync_to_async(Account.objects.filter(pk=ana.pk).delete)()
        return error(answered, "rate_limit_error" if answered == 429 else "authentication_error")

    upstream.post(MESSAGES).side_effect = answer
    status, _, body = relay(secret)
    assert (status, json.loads(body)["content"][0]["text"]) == (200, "from bea")
    assert not Account.objects.filter(pk=ana.pk).exists()


def test_an_account_deleted_while_its_answer_is_harvested_still_answers_the_tool(
    pool, secret, upstream
):
    ana = usable(pool, "ana")

    async def answer(request):  # a lead deletes ana while its request is with the Messages API
        await sync_to_async(Account.objects.filter(pk=ana.pk).delete)()
        return reply("from ana", **{"anthropic-ratelimit-unified-5h-utilization": "0.5"})

    upstream.post(MESSAGES).side_effect = answer
    status, _, body = relay(secret)
    assert (status, json.loads(body)["content"][0]["text"]) == (200, "from ana")
    assert not QuotaWindow.objects.exists()


def test_a_tool_that_hangs_up_while_its_account_refreshes_gives_its_slot_back(
    pool, secret, upstream
):
    consumer_key_set_limits(key=pool.consumer_keys.get(), limits=KeyLimits(concurrent_requests=1))
    usable(pool, "ana", access_expires_at=timezone.now() + timedelta(minutes=2))  # refreshed first

    def slow_token(request):
        time.sleep(1)
        return httpx.Response(200, json=token_answer())

    token = upstream.post(settings.ANTHROPIC_TOKEN_URL).mock(side_effect=slow_token)
    upstream.post(MESSAGES).mock(return_value=reply())
    headers = {"authorization": f"Bearer {secret}"}

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as client:

            async def send() -> int:
                answer = await client.post(
                    "/relay/anthropic/v1/messages", json=BODY, headers=headers
                )
                return answer.status_code

            with pytest.raises(TimeoutError):  # the tool hangs up while the token refreshes
                await asyncio.wait_for(send(), 0.3)
            statuses = [await send()]  # the refresh still holds the one slot
            deadline = time.monotonic() + 5  # the server's loop goes on, as in a relay process
            while statuses[-1] == 429 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                statuses.append(await send())
            return statuses

    statuses = async_to_sync(scenario)()
    assert statuses[0] == 429
    assert statuses[-1] == 200
    assert token.call_count == 1  # the hung-up request's refresh served the next one too


def test_a_cookie_the_upstream_sets_is_never_sent_with_a_later_request(pool, secret, upstream):
    usable(pool, "ana", priority=1), usable(pool, "bea", priority=2)
    route = upstream.post(MESSAGES)
    route.side_effect = [
        reply("from ana", **{"set-cookie": "__cf_bm=ana-session; Path=/"}),
        error(429, "rate_limit_error"),
        reply("from bea"),
    ]

    async def two_requests() -> list[int]:  # on one event loop, as in a relay process
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as client:
            headers = {"authorization": f"Bearer {secret}"}
            path = "/relay/anthropic/v1/messages"
            return [(await client.post(path, json=BODY, headers=headers)).status_code for _ in "ab"]

    assert async_to_sync(two_requests)() == [200, 200]  # ana cools down, bea answers
    assert [call.request.headers.get("cookie") for call in route.calls] == [None, None, None]


def test_many_requests_meeting_one_401_send_the_refresh_token_once(pool, secret, upstream):
    """16 tool requests at once on one account whose token the Messages API rejects: one
    refresh (the refresh token is single-use), then every request is answered with the new
    token."""
    usable(pool, "ana")
    sent_refresh_tokens: list[str] = []

    def token(request):
        sent_refresh_tokens.append(json.loads(request.content)["refresh_token"])
        time.sleep(0.3)  # the others meet the 401 while this refresh is in flight
        return httpx.Response(200, json=token_answer())

    upstream.post(settings.ANTHROPIC_TOKEN_URL).mock(side_effect=token)

    rejected = []

    def messages(request):
        if request.headers["authorization"] == "Bearer sk-ant-oat01-new-access":
            return reply("with the new token")
        rejected.append(request)
        return error(401, "authentication_error", "invalid x-api-key")

    upstream.post(MESSAGES).mock(side_effect=messages)
    headers = {"authorization": f"Bearer {secret}"}

    async def at_once() -> list[int]:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as client:
            path = "/relay/anthropic/v1/messages"
            sent = [client.post(path, json=BODY, headers=headers) for _ in range(16)]
            return [answer.status_code for answer in await asyncio.gather(*sent)]

    assert async_to_sync(at_once)() == [200] * 16
    assert len(rejected) > 1  # several met the 401 at once: each asked for the refresh
    assert sent_refresh_tokens == [REFRESH]
