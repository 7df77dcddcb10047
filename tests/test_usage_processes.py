"""Usage and limits across real relay processes: uvicorn workers on PostgreSQL, the limit
counters in Redis (Django's cache), the Messages API simulated."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from accounts_pool.models import Account, KeyLimitEvent, UsageHour
from accounts_pool.services.keys import consumer_key_create
from accounts_pool.services.limits import consumer_key_set_limits
from accounts_pool.state import KeyLimits
from simulator import SimulatedAnthropic, input_tokens, reply_text
from simulator.messages import output_tokens

from .conftest import make_account
from .processes import VENV_BIN, child_env, free_port, start, stop, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5")
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


@pytest.fixture
def cache_url() -> str:
    """The tests' Redis (the broker's), as the relay processes' shared cache."""
    broker = settings.CELERY_BROKER_URL
    if not broker.startswith("redis://"):
        if os.environ.get("ACCOUNTS_POOL_REQUIRE_SERVICES") == "1":
            pytest.fail("needs Redis: set CELERY_BROKER_URL=redis://… (CI does)")
        pytest.skip("needs Redis: set CELERY_BROKER_URL=redis://…")
    return broker


@pytest.fixture
def sim() -> Iterator[SimulatedAnthropic]:
    with SimulatedAnthropic(stream_chunks=3) as server:
        yield server


def sim_accounts(pool, sim, n):
    accounts = {}
    now = timezone.now()
    for i in range(n):
        sim_account = sim.add_account(email=f"acct{i}@sim.test")
        account = make_account(
            pool,
            label=f"acct{i}",
            access_token=sim_account.access_token,
            access_expires_at=now + timedelta(hours=7),
            quota_checked_at=now,
            refresh_token=f"refresh-{i}",
        )
        account.quota_windows.create(key="five_hour", label="5-hour", utilization=5, checked_at=now)
        accounts[sim_account.email] = account
    return accounts


def relay_processes(tmp_path: Path, sim, cache_url: str, workers: int, processes: int = 1):
    """`processes` uvicorn servers of `workers` workers each; their base URLs and handles."""
    env = child_env(ANTHROPIC_API_URL=sim.base_url, CACHE_URL=cache_url, USAGE_FLUSH_SECONDS="1")
    started = []
    for n in range(processes):
        port = free_port()
        args = [str(VENV_BIN / "uvicorn"), "config.asgi:application", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--workers", str(workers), "--no-access-log"]
        args += ["--loop", "uvloop", "--http", "httptools", "--timeout-graceful-shutdown", "10"]
        log = tmp_path / f"relay-{n}.log"
        started.append((f"http://127.0.0.1:{port}", start(args, env, log), log))
    for url, _, log in started:

        def ready(url: str = url) -> bool:
            try:
                return httpx.get(f"{url}/livez", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "the relay to listen", log)
    return started


def usage_of_answer(body: bytes, streamed: bool) -> dict[str, int]:
    """What the tool was told it used: the JSON `usage`, or the stream's last counts."""
    if not streamed:
        return json.loads(body)["usage"]
    counts: dict[str, int] = {}
    for block in body.decode().split("\n\n"):
        data = "".join(line[5:] for line in block.splitlines() if line.startswith("data:"))
        event = json.loads(data) if data.strip() else {}
        if event.get("type") == "message_start":
            counts = dict(event["message"]["usage"])
        elif event.get("type") == "message_delta":
            counts.update(event["usage"])
    return counts


def test_tokens_counted_across_4_workers_equal_the_simulators_usage(
    pool, alice, sim, cache_url, tmp_path
):
    accounts = sim_accounts(pool, sim, 4)
    secrets = [consumer_key_create(pool=pool, name=f"k{i}", created_by=alice) for i in range(3)]
    [(url, process, log)] = relay_processes(tmp_path, sim, cache_url, workers=4)
    told: Counter[tuple[str, str]] = Counter()

    async def one(client: httpx.AsyncClient, gate: asyncio.Semaphore, i: int) -> None:
        key, secret = secrets[i % 3]
        streamed = i % 2 == 1
        body = {
            "model": MODELS[(i // 2) % 2],
            "max_tokens": 32,
            "stream": streamed,
            "messages": [{"role": "user", "content": "hello " * (i % 17 + 1)}],
        }
        async with gate:
            answer = await client.post(
                f"{url}/relay/anthropic/v1/messages",
                json=body,
                headers={"authorization": f"Bearer {secret}"},
            )
        assert answer.status_code == 200, answer.text
        for field, value in usage_of_answer(answer.content, streamed).items():
            told[(key.name, field)] += value

    async def all_requests() -> None:
        gate = asyncio.Semaphore(24)
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(one(client, gate, i) for i in range(1000)))

    try:
        asyncio.run(all_requests())

        def counted() -> int:
            return UsageHour.objects.aggregate(n=Sum("requests"))["n"] or 0

        # Written by the workers' flush every second, not at the end.
        wait_for(lambda: counted() == 1000, 30, "1,000 requests counted", log)
    finally:
        stop(process)
    served = [r for r in sim.messages_requests(settle=5) if r.path == "/v1/messages"]
    assert len(served) == 1000
    expected: Counter[tuple[int, str, str]] = Counter()
    for request in served:
        body = request.json()
        account = accounts[request.account.email]
        expected[(account.pk, body["model"], "input_tokens")] += input_tokens(body)
        text = reply_text(request.account)
        expected[(account.pk, body["model"], "output_tokens")] += output_tokens(text)
    stored: Counter[tuple[int, str, str]] = Counter()
    by_key: Counter[tuple[str, str]] = Counter()
    for row in UsageHour.objects.select_related("consumer_key"):
        for field in TOKEN_FIELDS:
            stored[(row.account_id, row.model, field)] += getattr(row, field)
            by_key[(row.consumer_key.name, field)] += getattr(row, field)
    assert +stored == +expected  # per account and model, to the token
    assert +by_key == +told  # per key: what each tool was told it used
    assert set(Account.objects.values_list("pk", flat=True)) == {a for a, _, _ in +stored}
    assert sum(r.responses_2xx for r in UsageHour.objects.all()) == 1000


def test_limits_hold_across_two_relay_processes_on_redis(pool, alice, sim, cache_url, tmp_path):
    sim_accounts(pool, sim, 2)
    key, secret = consumer_key_create(pool=pool, name="ci", created_by=alice)
    consumer_key_set_limits(key=key, limits=KeyLimits(requests_per_minute=6))
    relays = relay_processes(tmp_path, sim, cache_url, workers=1, processes=2)
    urls = [url for url, _, _ in relays]
    body = {"model": MODELS[0], "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {secret}"}
    try:
        # Not too near a minute's end, so the six all land in one minute.
        while timezone.now().second > 40:
            time.sleep(1)
        statuses = [
            httpx.post(f"{urls[i % 2]}/relay/anthropic/v1/messages", json=body, headers=headers)
            for i in range(8)
        ]
        assert [s.status_code for s in statuses] == [200] * 6 + [429, 429]
        refused = statuses[-1]
        assert refused.json()["error"]["type"] == "rate_limit_error"
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 60
        time.sleep(wait)  # honour it: the next request passes
        again = httpx.post(f"{urls[1]}/relay/anthropic/v1/messages", json=body, headers=headers)
        assert again.status_code == 200
        assert KeyLimitEvent.objects.filter(consumer_key=key).count() == 1
    finally:
        for _, process, _ in relays:
            stop(process)


def test_concurrency_limit_holds_under_50_parallel_streams(pool, alice, cache_url, tmp_path):
    key, secret = consumer_key_create(pool=pool, name="ci", created_by=alice)
    consumer_key_set_limits(key=key, limits=KeyLimits(concurrent_requests=5))
    # Streams that take a second each, so 50 sent at once overlap.
    with SimulatedAnthropic(stream_chunks=5, chunk_delay=0.4) as sim:
        sim_accounts(pool, sim, 3)
        relays = relay_processes(tmp_path, sim, cache_url, workers=1, processes=2)
        urls = [url for url, _, _ in relays]
        body = {"model": MODELS[0], "max_tokens": 8, "stream": True}
        body["messages"] = [{"role": "user", "content": "hi"}]

        async def one(client: httpx.AsyncClient, i: int) -> int:
            answer = await client.post(
                f"{urls[i % 2]}/relay/anthropic/v1/messages",
                json=body,
                headers={"authorization": f"Bearer {secret}"},
            )
            return answer.status_code

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(one(client, i) for i in range(50)))

        try:
            statuses = asyncio.run(burst())
            most_at_once = max_overlap(sim)
            after = asyncio.run(burst())  # every slot was given back
        finally:
            for _, process, _ in relays:
                stop(process)
    assert most_at_once == 5  # the limit, held across both processes, and used
    assert statuses.count(200) + statuses.count(429) == 50
    assert after.count(200) >= 5


def max_overlap(sim: SimulatedAnthropic) -> int:
    """The most Messages requests the simulator was serving at one moment."""
    moments = []
    for request in sim.messages_requests(settle=5):
        assert request.finished
        moments.append((request.started_at, 1))
        moments.append((request.finished_at, -1))
    running = most = 0
    for _, change in sorted(moments):
        running += change
        most = max(most, running)
    return most


def test_a_relay_killed_outright_keeps_what_it_flushed(pool, alice, sim, cache_url, tmp_path):
    sim_accounts(pool, sim, 1)
    _, secret = consumer_key_create(pool=pool, name="ci", created_by=alice)
    [(url, process, _)] = relay_processes(tmp_path, sim, cache_url, workers=1)
    body = {"model": MODELS[0], "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {secret}"}
    try:
        for _ in range(20):
            answer = httpx.post(f"{url}/relay/anthropic/v1/messages", json=body, headers=headers)
            assert answer.status_code == 200
        time.sleep(3)  # past the process's flush interval (1 s here)
        os.killpg(process.pid, signal.SIGKILL)  # no exit handler runs
        process.wait()
    finally:
        stop(process)
    assert UsageHour.objects.aggregate(n=Sum("requests"))["n"] == 20


def test_tokens_and_model_limits_hold_across_two_relay_processes(
    pool, alice, sim, cache_url, tmp_path
):
    sim_accounts(pool, sim, 1)
    key, secret = consumer_key_create(pool=pool, name="ci", created_by=alice)
    limits = KeyLimits(tokens_per_5h=40, model_families=("sonnet",))
    consumer_key_set_limits(key=key, limits=limits)
    relays = relay_processes(tmp_path, sim, cache_url, workers=1, processes=2)
    urls = [url for url, _, _ in relays]
    body = {"model": MODELS[0], "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {secret}"}
    try:
        opus = {**body, "model": "claude-opus-4-5"}
        refused = httpx.post(f"{urls[0]}/relay/anthropic/v1/messages", json=opus, headers=headers)
        assert refused.status_code == 429
        used: list[int] = []  # tokens of each answer let through
        for i in range(6):  # alternating processes: each counts what the other let through
            answer = httpx.post(
                f"{urls[i % 2]}/relay/anthropic/v1/messages", json=body, headers=headers
            )
            if answer.status_code != 200:
                break
            used.append(sum(answer.json()["usage"].values()))
        assert answer.status_code == 429
        assert sum(used) >= 40 > sum(used[:-1])  # let in while under, refused once over
        assert int(answer.headers["retry-after"]) > 3600
    finally:
        for _, process, _ in relays:
            stop(process)
