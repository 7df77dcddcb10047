"""Real tools through the real relay process: the relay runs as the Procfile runs it (uvicorn,
config.asgi) against the test database, the simulated Messages API answers on a local port, and
the official `anthropic` SDK and the Claude Code CLI are the clients. What the relay decides, in
detail and in process, is in test_relay.py."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anthropic
import httpx
import pytest
from django.utils import timezone

from accounts_pool.models import Account, AccountEvent
from accounts_pool.services.keys import consumer_key_create
from simulator import Fault, SimAccount, SimulatedAnthropic, reply_text

from . import processes
from .conftest import usable_account

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLAUDE = processes.ROOT / "tests/clients/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
METRICS_TOKEN = "relay-test-metrics-token"
PROMPT = "Please say hello, relay-test-prompt-7f3a"
BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": PROMPT}],
}


def ask(client: anthropic.Anthropic, model: str = "claude-sonnet-4-5") -> str:
    """messages.create through `client`: the answer's text."""
    answer = client.messages.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": PROMPT}]
    )
    block = answer.content[0]
    assert block.type == "text"
    return block.text


def ask_streaming(client: anthropic.Anthropic) -> list[str]:
    """messages.stream through `client`: the text as it arrived."""
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        return list(stream.text_stream)


def _procfile_relay() -> str:
    lines = (processes.ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())["relay"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedAnthropic]:
    with SimulatedAnthropic() as sim:
        yield sim


@pytest.fixture(scope="module")
def relay_process(sim, django_db_setup, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The Procfile's relay command (one worker) against the test database and the simulator:
    its base URL and the file its stdout and stderr go to."""
    port = processes.free_port()
    log = tmp_path_factory.mktemp("relay") / "relay.log"
    env = processes.child_env(
        **sim.env(),
        PATH=f"{processes.VENV_BIN}:{os.environ.get('PATH', '')}",
        RELAY_PORT=str(port),
        RELAY_CONCURRENCY="1",
        METRICS_TOKEN=METRICS_TOKEN,
    )
    process = processes.start(["bash", "-c", f"exec {_procfile_relay()}"], env, log)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.post(f"{base}/relay/anthropic/v1/messages", timeout=2).status_code == 401
        except httpx.TransportError:
            return False

    try:
        processes.wait_for(answers, 60, "the relay process", log)
        yield base, log
    finally:
        processes.stop(process)


@pytest.fixture
def relay_url(relay_process) -> str:
    return relay_process[0] + "/relay/anthropic"


@pytest.fixture
def sim_clean(sim) -> Iterator[SimulatedAnthropic]:
    sim.clear_faults()
    sim.reset_stats()
    yield sim
    sim.clear_faults()


@pytest.fixture
def secret(pool, alice) -> str:
    return consumer_key_create(pool=pool, name="laptop", created_by=alice)[1]


def pooled(pool, sim: SimulatedAnthropic, label: str, **fields) -> tuple[Account, SimAccount]:
    """An account of the pool that is the simulator's account `label`, usable now."""
    remote = sim.add_account(email=f"{label}-{uuid.uuid4().hex[:6]}@sim.test")
    account = usable_account(
        pool,
        label,
        access_token=remote.access_token,
        refresh_token=remote.refresh_token,
        access_expires_at=timezone.now() + timedelta(hours=7),
        **fields,
    )
    return account, remote


def served_by(sim: SimulatedAnthropic) -> list[SimAccount | None]:
    return [request.account for request in sim.messages_requests(settle=5)]


def test_the_sdk_creates_and_streams_through_the_relay_with_the_accounts_oauth_token(
    pool, secret, sim_clean, relay_url
):
    _, ana = pooled(pool, sim_clean, "ana")
    client = anthropic.Anthropic(base_url=relay_url, auth_token=secret, api_key=None)
    assert ask(client) == reply_text(ana)
    pieces = ask_streaming(client)
    assert "".join(pieces) == reply_text(ana)
    assert len(pieces) == sim_clean.stream_chunks
    by_key_header = anthropic.Anthropic(base_url=relay_url, api_key=secret, auth_token=None)
    assert ask(by_key_header) == reply_text(ana)

    seen = sim_clean.messages_requests(settle=5)
    assert [(r.account, r.status, r.stream) for r in seen] == [
        (ana, 200, False),
        (ana, 200, True),
        (ana, 200, False),
    ]
    for request in seen:
        assert request.headers["authorization"] == f"Bearer {ana.access_token}"
        assert "oauth-2025-04-20" in request.headers["anthropic-beta"].split(",")
        assert secret not in json.dumps(request.headers) + request.body.decode()
        assert "x-api-key" not in request.headers


def test_a_full_opus_only_window_skips_the_account_for_opus_and_not_for_sonnet(
    pool, secret, sim_clean, relay_url
):
    ana, ana_remote = pooled(pool, sim_clean, "ana", priority=1)
    _, bea_remote = pooled(pool, sim_clean, "bea", priority=2)
    ana.quota_windows.create(
        key="model:opus",
        label="Opus-only weekly",
        utilization=100,
        model_name="Opus",
        resets_at=timezone.now() + timedelta(days=2),
        checked_at=timezone.now(),
    )
    client = anthropic.Anthropic(base_url=relay_url, auth_token=secret, api_key=None, max_retries=0)
    assert ask(client, "claude-opus-4-8") == reply_text(bea_remote)
    assert ask(client, "claude-sonnet-4-5") == reply_text(ana_remote)
    bea = Account.objects.get(label="bea")
    bea.enabled = False
    bea.save(update_fields=["enabled"])
    with pytest.raises(anthropic.RateLimitError) as refused:
        ask(client, "claude-opus-4-8")
    said = refused.value.body["error"]["message"]  # type: ignore[index]
    assert said.startswith("accounts-pool: no account for claude-opus-4-8 in pool 'claude'")
    assert "1 at a quota limit until" in said


# --- streaming under the real server ---------------------------------------------------------


def test_a_30_second_stream_reaches_the_tool_chunk_by_chunk(pool, secret, sim_clean, relay_url):
    _, ana = pooled(pool, sim_clean, "ana")
    ana.stream_chunks, ana.chunk_delay = 10, 3.0  # ten text deltas, 3 s apart: 30 s upstream
    started = time.monotonic()
    arrivals: list[float] = []
    with httpx.stream(
        "POST",
        f"{relay_url}/v1/messages",
        json=BODY | {"stream": True},
        headers={"authorization": f"Bearer {secret}"},
        timeout=60,
    ) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("event: content_block_delta"):
                arrivals.append(time.monotonic() - started)
    took = time.monotonic() - started
    assert took >= 29
    assert len(arrivals) == 10
    assert arrivals[0] < 5  # the first delta came 27 s before the upstream finished
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) > 2  # each delta when the upstream sent it, none held back and batched


def test_a_tool_that_hangs_up_closes_the_upstream_connection(pool, secret, sim_clean, relay_url):
    _, ana = pooled(pool, sim_clean, "ana")
    ana.stream_chunks, ana.chunk_delay = 20, 0.5
    with httpx.stream(
        "POST",
        f"{relay_url}/v1/messages",
        json=BODY | {"stream": True},
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    ) as answer:
        first = next(answer.iter_raw())
        assert b"message_start" in first
    # The tool is gone: the upstream's next write fails, long before its 10 s answer would end.
    processes.wait_for(lambda: sim_clean.stats()["disconnects"] == 1, 8, "the upstream hang-up")
    (request,) = sim_clean.messages_requests(settle=5)
    assert request.disconnected
    assert request.events_sent < 20


def test_a_body_over_the_cap_is_413_whether_declared_or_streamed(
    pool, secret, sim_clean, relay_url
):
    pooled(pool, sim_clean, "ana")
    cap = 32 * 1024 * 1024
    headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    declared = httpx.post(f"{relay_url}/v1/messages", content=b" " * (cap + 1), headers=headers)

    def chunked() -> Iterator[bytes]:
        for _ in range(33):
            yield b" " * (1024 * 1024)

    streamed = httpx.post(
        f"{relay_url}/v1/messages", content=chunked(), headers=headers, timeout=60
    )
    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert answer.json()["error"]["type"] == "request_too_large"
    assert sim_clean.stats()["messages"] == 0


# --- nothing secret leaves -------------------------------------------------------------------


def test_no_token_key_prompt_or_completion_leaks_after_traffic_with_failovers(
    pool, secret, sim_clean, relay_process, relay_url
):
    base, log = relay_process
    _ana, ana_remote = pooled(pool, sim_clean, "ana", priority=1)
    _bea, bea_remote = pooled(pool, sim_clean, "bea", priority=2)
    cid, cid_remote = pooled(pool, sim_clean, "cid", priority=3)
    sim_clean.inject("messages", Fault.api_error(429, retry_after=120), account=ana_remote)
    sim_clean.inject("messages", Fault.api_error(401), account=bea_remote, times=2)
    sim_clean.inject("token", Fault.status(500), account=bea_remote)
    client = anthropic.Anthropic(base_url=relay_url, auth_token=secret, api_key=None, max_retries=0)
    answers = [ask(client), "".join(ask_streaming(client))]
    assert answers == [reply_text(cid_remote)] * 2
    errors = [
        httpx.post(f"{relay_url}/v1/messages", json=BODY, headers={"x-api-key": "apk_wrong"}),
        httpx.post(f"{relay_url}/v1/nothing", json=BODY, headers={"x-api-key": secret}),
    ]
    cid.enabled = False
    cid.save(update_fields=["enabled"])
    errors.append(httpx.post(f"{relay_url}/v1/messages", json=BODY, headers={"x-api-key": secret}))
    assert [e.status_code for e in errors] == [401, 404, 429]
    metrics = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert metrics.status_code == 200

    events = list(AccountEvent.objects.values())
    assert {e["outcome"] for e in events} >= {"rate_limited"}
    secrets_ = [secret, ana_remote.access_token, bea_remote.access_token, cid_remote.access_token]
    secrets_ += [a.refresh_token for a in (ana_remote, bea_remote, cid_remote)]
    words = [*secrets_, PROMPT, reply_text(cid_remote), "simulated Anthropic API"]
    told = {
        "relay stdout and stderr": log.read_text(errors="replace"),
        "events": json.dumps(events, default=str),
        "metrics": metrics.text,
        "error answers": "".join(e.text for e in errors),
    }
    for where, text in told.items():
        for word in words:
            assert word not in text, f"{where} show {word[:12]}…"


# --- the Claude Code CLI ---------------------------------------------------------------------


@pytest.fixture
def claude() -> list[str]:
    """The pinned CLI's native binary (tests/clients, installed by .ci/run with npm ci)."""
    if not CLAUDE.exists():
        message = f"{CLAUDE} is missing: npm ci --prefix tests/clients --ignore-scripts installs it"
        if os.environ.get("ACCOUNTS_POOL_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return [str(CLAUDE)]


def run_claude(claude: list[str], relay_url: str, secret: str, home: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": relay_url,
        "ANTHROPIC_AUTH_TOKEN": secret,
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    done = subprocess.run(
        [*claude, *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{shlex.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def test_claude_code_prints_the_reply_and_a_session_stays_on_its_account(
    pool, secret, sim_clean, relay_url, claude, tmp_path
):
    _, ana = pooled(pool, sim_clean, "ana")
    _, bea = pooled(pool, sim_clean, "bea")
    session = str(uuid.uuid4())
    first = run_claude(claude, relay_url, secret, tmp_path, "-p", PROMPT, "--session-id", session)
    seen = sim_clean.messages_requests(settle=5)
    (served,) = {r.account for r in seen}
    assert reply_text(served) in first
    # Without a session, priority-then-least-recently-used routing moves on to the other one.
    other = anthropic.Anthropic(base_url=relay_url, auth_token=secret, api_key=None)
    moved = ask(other)
    assert moved == reply_text(bea if served is ana else ana)
    sim_clean.reset_stats()
    second = run_claude(claude, relay_url, secret, tmp_path, "-p", "again", "--resume", session)
    assert reply_text(served) in second
    seen += sim_clean.messages_requests(settle=5)
    # The CLI sends its session id (--session-id, kept by --resume) as X-Claude-Code-Session-Id.
    assert {r.headers.get("x-claude-code-session-id") for r in seen} == {session}
    assert {r.account for r in seen} == {served}
    assert served in (ana, bea)
    for request in seen:
        assert request.headers["authorization"] == f"Bearer {served.access_token}"
        assert "oauth-2025-04-20" in request.headers["anthropic-beta"]


# --- the database goes away ------------------------------------------------------------------


def test_the_relay_serves_again_after_its_database_connections_are_cut(
    pool, secret, sim_clean, relay_url
):
    """A PostgreSQL restart (or a proxy's idle cut) closes the relay's connections, which live
    in its worker threads, outside any request cycle that would close them."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("cuts PostgreSQL connections (CI runs on PostgreSQL)")
    _, ana = pooled(pool, sim_clean, "ana")
    client = anthropic.Anthropic(base_url=relay_url, auth_token=secret, api_key=None, max_retries=0)
    for _ in range(8):  # every worker thread of the relay has a connection now
        assert ask(client) == reply_text(ana)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    answers = []
    for _ in range(8):
        try:
            answers.append(ask(client))
        except anthropic.APIStatusError as exc:
            answers.append(f"HTTP {exc.status_code}")
    assert answers == [reply_text(ana)] * 8, answers  # each thread reconnected at once
