"""What usage accounting costs the relay: the same relay under uvicorn twice, one with
USAGE_ACCOUNTING=true and one with false, measured in alternating rounds in the same run.

    .venv/bin/python bench/relay_usage.py [--clients 16] [--rounds 3] [--seconds 5] [--stream]

Both relays (1 uvicorn worker each, production settings) serve one consumer key against 4
accounts of the simulated Messages API, which runs in a child process. Clients send
/v1/messages (JSON, or with --stream a 4-chunk stream) as fast as the relay answers. Prints
requests/s of each relay per round and the ratio; then the counted usage of the measured relay,
checked against the requests it answered. Target: accounting costs under 5% (ratio ≥ 0.95).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import (
    bench_database,
    free_port,
    header,
    machine,
    make_team,
    oauth_account,
    start_logged,
    stop_logged,
    verdict,
)

ACCOUNTS = 4


def _serve_simulator(conn: Connection) -> None:
    from simulator import SimulatedAnthropic

    with SimulatedAnthropic(stream_chunks=4) as sim:
        tokens = [sim.add_account().access_token for _ in range(ACCOUNTS)]
        conn.send((sim.base_url, tokens))
        conn.recv()  # until told to stop


def _prepare(tokens: list[str]) -> str:
    from django.utils import timezone

    from accounts_pool.models import Pool
    from accounts_pool.services.keys import consumer_key_create

    team, lead = make_team()
    pool = Pool.objects.create(team=team, name="Relay", slug="relay")
    now = timezone.now()
    for i, token in enumerate(tokens):
        account = oauth_account(
            pool,
            f"acct{i}",
            expires_at=now + timedelta(hours=7),
            access_token=token,
            quota_checked_at=now,
            policy_checked_at=now,
        )
        account.save()
        account.quota_windows.create(key="five_hour", label="5-hour", utilization=5, checked_at=now)
    return consumer_key_create(pool=pool, name="bench", created_by=lead)[1]


async def _round(url: str, secret: str, clients: int, seconds: float, stream: bool) -> int:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello"}],
    }
    headers = {"authorization": f"Bearer {secret}"}
    done = 0
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            answer = await http.post(
                f"{url}/relay/anthropic/v1/messages", json=body, headers=headers
            )
            if answer.status_code != 200:
                raise RuntimeError(f"relay answered {answer.status_code}: {answer.text[:200]}")
            done += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return done


def _cost_per_request(stream: bool, n: int = 5000) -> float:
    """Microseconds of CPU the accounting adds to one request in the relay process: reading
    the usage as the answer's chunks pass, and summing it in memory (no database)."""
    import json

    from django.utils import timezone

    from accounts_pool.services.usage import usage_discard, usage_record
    from accounts_pool.usage_meter import UsageMeter

    usage = {"input_tokens": 1200, "output_tokens": 300, "cache_read_input_tokens": 5000}
    if stream:
        events = [("message_start", {"type": "message_start", "message": {"usage": usage}})]
        delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "word "}}
        events += [("content_block_delta", delta)] * 40
        events += [("message_delta", {"type": "message_delta", "usage": {"output_tokens": 300}})]
        raw = "".join(f"event: {k}\ndata: {json.dumps(d)}\n\n" for k, d in events).encode()
        chunks = [raw[i : i + 512] for i in range(0, len(raw), 512)]
        kind = "text/event-stream"
    else:
        body = {"content": [{"type": "text", "text": "word " * 300}], "usage": usage}
        raw = json.dumps(body).encode()
        chunks = [raw[i : i + 4096] for i in range(0, len(raw), 4096)]
        kind = "application/json"
    now = timezone.now()
    started = time.process_time()
    for _ in range(n):
        meter = UsageMeter(kind)
        for chunk in chunks:
            meter.feed(chunk)
        usage_record(
            pool_id=1,
            key_id=1,
            account_id=1,
            model="claude-sonnet-4-5",
            tokens=meter.finish(),
            status=200,
            duration_ms=10,
            now=now,
        )
    spent = (time.process_time() - started) / n * 1e6
    usage_discard()
    return spent


def _relay(env: dict[str, str], accounting: bool) -> tuple[str, Any, str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools"]
    command += ["--no-access-log"]
    flag = {"USAGE_ACCOUNTING": "true" if accounting else "false", "USAGE_FLUSH_SECONDS": "2"}
    process, log = start_logged(command, {**env, **flag}, "relay")
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/livez", timeout=1).status_code == 200:
                return url, process, log
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the relay did not start (log: {log})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--stream", action="store_true", help="streamed answers, not JSON")
    args = parser.parse_args()

    ours, theirs = multiprocessing.Pipe()
    simulator = multiprocessing.Process(target=_serve_simulator, args=(theirs,), daemon=True)
    simulator.start()
    base_url, tokens = ours.recv()
    with bench_database("relay_usage", {"ANTHROPIC_API_URL": base_url}) as env:
        header(f"relay with and without usage accounting ({machine()})")
        secret = _prepare(tokens)
        cost = _cost_per_request(args.stream)
        print(f"accounting's CPU per request in the relay process: {cost:.1f} µs (in-process)")
        with_url, with_process, with_log = _relay(env, accounting=True)
        without_url, without_process, without_log = _relay(env, accounting=False)
        kind = "stream" if args.stream else "JSON"
        print(f"{args.clients} clients, {kind} answers, {args.rounds} rounds of {args.seconds} s")
        answered = 0
        ratios = []
        try:
            for url in (with_url, without_url):  # warm both
                asyncio.run(_round(url, secret, args.clients, 1.0, args.stream))
            from accounts_pool.models import UsageHour

            time.sleep(3)
            UsageHour.objects.all().delete()  # count only the measured requests
            for n in range(args.rounds):
                counted = asyncio.run(
                    _round(with_url, secret, args.clients, args.seconds, args.stream)
                )
                plain = asyncio.run(
                    _round(without_url, secret, args.clients, args.seconds, args.stream)
                )
                answered += counted
                ratio = counted / plain if plain else 0.0
                ratios.append(ratio)
                print(
                    f"round {n + 1}: with accounting {counted / args.seconds:7.1f} req/s, "
                    f"without {plain / args.seconds:7.1f} req/s, ratio {ratio:.3f}"
                )
        finally:
            stop_logged(with_process, with_log, what="relay (accounting)")
            stop_logged(without_process, without_log, what="relay (no accounting)")
            ours.send("stop")
        from django.db.models import Sum

        from accounts_pool.models import UsageHour

        sums = UsageHour.objects.aggregate(requests=Sum("requests"), output=Sum("output_tokens"))
        mean = sum(ratios) / len(ratios)
        print(f"mean ratio {mean:.3f} (target ≥ 0.95): {verdict(mean >= 0.95)}")
        print(
            f"counted after the relay stopped: {sums['requests']} requests of {answered} "
            f"answered, {sums['output']} output tokens: "
            f"{verdict(sums['requests'] == answered)}"
        )


if __name__ == "__main__":
    main()
