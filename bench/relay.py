"""The relay's cost: the relay, the simulated Messages API called directly, and a minimal ASGI
pass-through (bench/relay_floor.py, the floor) side by side in one run.

The simulator (`--accounts` accounts, 4 text deltas per stream) runs in a child process; the
database is a throwaway one with those accounts usable in one pool and a consumer key. The relay
runs as the Procfile runs it (uvicorn, config.asgi, uvloop, httptools) but with one worker, so
one process's memory is measured; the floor runs under the same server. This process drives load
with httpx (asyncio) at each concurrency, JSON and streaming, taking turns between the targets
(`--rounds` slices each) so that drift in a shared machine's speed weighs on all. It prints
throughput, latency (a stream's: until its last byte; TTFB too), the relay's and the floor's
added latency over direct, the relay's throughput as a share of the floor's, CPU per request of
the server process, then the memory of one relay process holding `--streams` open streams.
`--server granian` (or `both`) measures granian too; granian is not a dependency: install it
apart (`pip install --target /tmp/granian-pkgs granian`) and pass `--granian-path`.

Targets: added p50 <= 3 ms and p99 <= 15 ms at 16 concurrent JSON requests; throughput >= 50%
of the floor's; under 100 KiB per open stream with 500 open on one relay process.

    .venv/bin/python bench/relay.py [--levels 1,16,200] [--duration 6] [--rounds 2]
                                    [--streams 500] [--server uvicorn|granian|both]
                                    [--upstream-ms 0]

With the simulator answering at once (the default), every target at 16 concurrent requests
saturates the 2 cores, so added latency there is queueing (the floor's too). `--upstream-ms`
makes the simulator wait before each answer, as the Messages API does (hundreds of ms to a first
byte), so that the added latency is the relay's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

import _common
import httpx
from _common import REPO, header, percentile, verdict

ADDED_P50_TARGET_MS = 3.0
ADDED_P99_TARGET_MS = 15.0
SHARE_TARGET = 0.50
KIB_PER_STREAM_TARGET = 100.0
PREFIX = "/relay/anthropic"
BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "How much does a relay cost?"}],
}


# --- the simulator, in a child process ---------------------------------------------------------


def _serve_simulator(conn: Connection, accounts: int) -> None:
    from simulator import SimulatedAnthropic

    sim = SimulatedAnthropic(stream_chunks=4).start()
    seeded = sim.seed(accounts, prefix="bench")
    conn.send((sim.env(), [(a.access_token, a.refresh_token) for a in seeded]))
    while True:
        command, *args = conn.recv()
        if command == "chunk_delay":
            sim.chunk_delay = float(args[0])
            conn.send(None)
        elif command == "latency":
            sim.latency = float(args[0])
            conn.send(None)
        elif command == "stats":
            conn.send(dict(sim.stats()))
        else:
            break
    sim.stop()


@contextlib.contextmanager
def simulator(accounts: int) -> Iterator[tuple[Connection, dict[str, str], list[tuple[str, str]]]]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_serve_simulator, args=(child, accounts), daemon=True
    )
    process.start()
    try:
        env, tokens = parent.recv()
        yield parent, env, tokens
    finally:
        with contextlib.suppress(OSError):
            parent.send(("stop",))
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def ask(conn: Connection, *command: Any) -> Any:
    conn.send(command)
    return conn.recv()


# --- the servers -------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    base: str
    process: Any
    log: str


def _command(server: str, app: str, port: int, app_dir: str, workers: int) -> list[str]:
    if server == "granian":
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--working-dir",
            app_dir,
            app,
        ]
    # The Procfile's relay line (`--workers`: its RELAY_CONCURRENCY, 2 there) on a loopback port.
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        app_dir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "5",
    ]


@contextlib.contextmanager
def serve(
    name: str, server: str, app: str, env: dict[str, str], app_dir: str, workers: int = 1
) -> Iterator[Server]:
    port = _common.free_port()
    process, log = _common.start_logged(_command(server, app, port, app_dir, workers), env, name)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                with open(log) as handle:
                    raise RuntimeError(f"{name} exited: {handle.read()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{base}{PREFIX}/nothing", timeout=2)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.2)
        yield Server(name, base, process, log)
    finally:
        _common.stop_logged(process, log, what=name)


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and its descendants (granian runs its worker apart)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending.extend(int(c) for c in children.read().split())
    return total


# --- load --------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    headers: list[dict[str, str]]  # taken in turn, one per request
    pid: int | None = None  # the server process whose CPU is counted


@dataclass
class Figures:
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    cpu: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def ms(self, fraction: float, which: str = "latencies") -> float:
        return percentile(sorted(getattr(self, which)), fraction) * 1000


async def _load(
    target: Target,
    concurrency: int,
    seconds: float,
    stream: bool,
    into: Figures | None,
    sessions: bool = False,
) -> None:
    body = json.dumps(BODY | {"stream": True} if stream else BODY).encode()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    counter = iter(range(10**9))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            # As Claude Code does: each client its own session, sent with every request.
            session = {"x-claude-code-session-id": str(uuid.uuid4())} if sessions else {}
            while time.perf_counter() < stop_at:
                headers = target.headers[next(counter) % len(target.headers)] | session
                started = time.perf_counter()
                first = 0.0
                try:
                    async with client.stream(
                        "POST", target.url, content=body, headers=headers
                    ) as answer:
                        async for _chunk in answer.aiter_raw():
                            first = first or time.perf_counter()
                        ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if into is None:
                    continue
                if not ok:
                    into.errors += 1
                    continue
                into.latencies.append(time.perf_counter() - started)
                into.ttfb.append(first - started)

        started = time.perf_counter()
        cpu = _common.process_tree_seconds(target.pid) if target.pid else 0.0
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if into is not None:
            into.seconds += time.perf_counter() - started
            if target.pid:
                into.cpu += _common.process_tree_seconds(target.pid) - cpu


def measure(
    targets: list[Target],
    concurrency: int,
    stream: bool,
    seconds: float,
    rounds: int,
    sessions: bool = False,
) -> dict[str, Figures]:
    figures = {target.name: Figures() for target in targets}
    for target in targets:  # warm connections, caches and the database's plans
        asyncio.run(_load(target, concurrency, 1.0, stream, None, sessions))
    for _ in range(rounds):
        for target in targets:
            share = seconds / rounds
            asyncio.run(_load(target, concurrency, share, stream, figures[target.name], sessions))
    return figures


def report(case: str, figures: dict[str, Figures], stream: bool) -> None:
    direct = figures["direct"]
    print(
        f"{case:<18} {'target':<15} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'+p50':>6} {'+p99':>6} {'TTFB50':>7} {'CPU ms/req':>10} {'errors':>6}"
    )
    for name, f in figures.items():
        added = name != "direct"
        cpu = f"{f.cpu * 1000 / max(1, len(f.latencies)):.2f}" if f.cpu else "-"
        print(
            f"{'':<18} {name:<15} {f.rate:>7.0f} {f.ms(0.5):>7.2f} {f.ms(0.99):>7.2f} "
            f"{(f.ms(0.5) - direct.ms(0.5)) if added else 0:>6.2f} "
            f"{(f.ms(0.99) - direct.ms(0.99)) if added else 0:>6.2f} "
            f"{f.ms(0.5, 'ttfb') if stream else 0:>7.2f} {cpu:>10} {f.errors:>6}"
        )


# --- open streams ------------------------------------------------------------------------------


async def _hold_streams(url: str, headers: dict[str, str], count: int, hold: float) -> int:
    """Open `count` streams, wait until each has its first bytes, hold them `hold` seconds;
    returns how many were open at once."""
    body = json.dumps(BODY | {"stream": True}).encode()
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    opened = 0
    all_open = asyncio.Event()
    release = asyncio.Event()
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one() -> None:
            nonlocal opened
            async with client.stream("POST", url, content=body, headers=headers) as answer:
                async for _chunk in answer.aiter_raw():
                    break
                opened += 1
                if opened == count:
                    all_open.set()
                await release.wait()

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_open.wait(), 90)
        await asyncio.sleep(hold)
        release.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return opened


def open_streams(conn: Connection, relay: Server, secret: str, count: int) -> tuple[float, int]:
    """KiB of the relay process's resident memory per open stream, and how many were open."""
    ask(conn, "chunk_delay", 60.0)  # every stream waits a minute before its first text delta
    before = tree_rss_kib(relay.process.pid)
    peak = [before]

    async def run() -> int:
        holder = asyncio.create_task(
            _hold_streams(
                f"{relay.base}{PREFIX}/v1/messages", {"authorization": f"Bearer {secret}"}, count, 3
            )
        )
        while not holder.done():
            peak.append(tree_rss_kib(relay.process.pid))
            await asyncio.sleep(0.2)
        return holder.result()

    try:
        opened = asyncio.run(run())
    finally:
        ask(conn, "chunk_delay", 0.0)
    return (max(peak) - before) / max(1, opened), opened


# --- main --------------------------------------------------------------------------------------


def build(tokens: list[tuple[str, str]]) -> str:
    """The pool of the simulator's accounts, all usable; returns a consumer key's secret."""
    from django.utils import timezone

    from accounts_pool.models import Account, Pool, QuotaWindow
    from accounts_pool.services.keys import consumer_key_create

    now = timezone.now()
    team, lead = _common.make_team("bench")
    pool = Pool.objects.create(team=team, name="Claude", slug="claude")
    accounts = [
        _common.oauth_account(
            pool,
            f"sim-{i:03d}",
            expires_at=now + timedelta(hours=8),
            access_token=access,
            refresh_token=refresh,
            quota_checked_at=now,
            policy_checked_at=now,
        )
        for i, (access, refresh) in enumerate(tokens)
    ]
    saved = _common.bulk_insert(Account, accounts)
    _common.bulk_insert(QuotaWindow, _common.usable_windows(saved, now))
    return consumer_key_create(pool=pool, name="bench", created_by=lead)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,16,200", help="concurrencies, comma-separated")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per target and case")
    parser.add_argument("--rounds", type=int, default=2, help="slices per target and case")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--streams", type=int, default=500, help="open streams held at once")
    parser.add_argument("--server", choices=["uvicorn", "granian", "both"], default="uvicorn")
    parser.add_argument("--granian-path", default="", help="a folder granian is installed in")
    parser.add_argument(
        "--upstream-ms",
        type=float,
        default=0.0,
        help="the simulator's latency before each answer (0: the relay's cost at saturation)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes of the relay and of the floor alike (the Procfile runs 2)",
    )
    parser.add_argument(
        "--sessions",
        action="store_true",
        help="each client sends a session id with every request, as Claude Code does",
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    servers = ["uvicorn", "granian"] if args.server == "both" else [args.server]

    print(f"relay bench: {_common.machine()}; machine busy {_common.background_load():.0%}")
    print(f"upstream latency {args.upstream_ms:g} ms")
    with (
        simulator(args.accounts) as (conn, sim_env, tokens),
        _common.bench_database("relay", extra_env=sim_env) as env,
    ):
        ask(conn, "latency", args.upstream_ms / 1000)
        secret = build(tokens)
        sim = sim_env["ANTHROPIC_API_URL"]
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [args.granian_path, str(REPO)]))}
        floor_env = {**env, "RELAY_FLOOR_UPSTREAM": sim, "RELAY_FLOOR_TOKEN": tokens[0][0]}
        key = [{"authorization": f"Bearer {secret}"}]
        direct = Target(
            "direct",
            f"{sim}/v1/messages",
            [
                {"authorization": f"Bearer {access}", "anthropic-beta": "oauth-2025-04-20"}
                for access, _ in tokens
            ],
        )
        with contextlib.ExitStack() as stack:
            targets = [direct]
            relays: list[Server] = []
            for server in servers:
                floor = stack.enter_context(
                    serve(
                        f"floor-{server}",
                        server,
                        "relay_floor:app",
                        floor_env,
                        str(REPO / "bench"),
                        args.workers,
                    )
                )
                relay = stack.enter_context(
                    serve(
                        f"relay-{server}",
                        server,
                        "config.asgi:application",
                        env,
                        str(REPO),
                        args.workers,
                    )
                )
                relays.append(relay)
                targets.append(
                    Target(floor.name, f"{floor.base}{PREFIX}/v1/messages", key, floor.process.pid)
                )
                targets.append(
                    Target(relay.name, f"{relay.base}{PREFIX}/v1/messages", key, relay.process.pid)
                )
            summary: dict[tuple[int, bool], dict[str, Figures]] = {}
            for stream in (False, True):
                header(f"{'streaming' if stream else 'JSON'} Messages requests")
                for level in levels:
                    summary[level, stream] = measure(
                        targets, level, stream, args.duration, args.rounds, args.sessions
                    )
                    report(
                        f"{'stream' if stream else 'json'} c={level}",
                        summary[level, stream],
                        stream,
                    )
            header(f"{args.streams} open streams on one relay process")
            per_stream: dict[str, tuple[float, int]] = {}
            for relay in relays:
                per_stream[relay.name] = open_streams(conn, relay, secret, args.streams)
                kib, opened = per_stream[relay.name]
                print(f"{relay.name}: {opened} open at once, {kib:.1f} KiB of resident memory each")
            print(f"simulator: {ask(conn, 'stats')}")

        header("targets")
        for server in servers:
            name = f"relay-{server}"
            if 16 in levels:
                f = summary[16, False]
                added50 = f[name].ms(0.5) - f["direct"].ms(0.5)
                added99 = f[name].ms(0.99) - f["direct"].ms(0.99)
                print(
                    f"{name}: upstream {args.upstream_ms:g} ms: added p50 at 16 JSON "
                    f"{added50:.2f} ms (<= {ADDED_P50_TARGET_MS}) "
                    f"{verdict(added50 <= ADDED_P50_TARGET_MS)}; added p99 {added99:.2f} ms "
                    f"(<= {ADDED_P99_TARGET_MS}) {verdict(added99 <= ADDED_P99_TARGET_MS)}"
                )
            for (level, stream), f in summary.items():
                share = f[name].rate / max(f[f"floor-{server}"].rate, 1e-9)
                said = verdict(share >= SHARE_TARGET)
                print(
                    f"{name}: {'stream' if stream else 'json'} c={level} throughput "
                    f"{share:.2f} of the floor's (>= {SHARE_TARGET}) {said}"
                )
            kib, opened = per_stream[name]
            ok = kib < KIB_PER_STREAM_TARGET and opened == args.streams
            print(f"{name}: {kib:.1f} KiB per open stream, {opened} open {verdict(ok)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
