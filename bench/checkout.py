"""Checkout over HTTP: latency and throughput against the same server's trivial endpoint.

10,000 usable accounts in 200 pools (50 each: access token valid for hours, quota just checked
with a five_hour and a seven_day window well below 100%), one consumer key per pool. gunicorn
serves the production settings (DEBUG off, the Procfile's gunicorn config) on 127.0.0.1 with 2
sync workers; this process drives load with a bounded number of client threads (http.client, one
connection object per thread) for a fixed time after a warm-up. The floor `GET /livez` and
`POST /api/v1/pools/<slug>/checkout` (spread over the 200 pools) take turns, a slice each per
round, so that drift in a shared machine's speed weighs on both. Also counts the queries of one
checkout in-process.

`--against DIR` serves another commit's worktree from the same database too (its code only;
the schema is this tree's), so that two commits are measured back to back on the same machine
in the same minutes: saturation throughput of this tree within 15% of the baseline's. An
open-loop phase then sends checkouts at a fixed rate (`--rate`, 100/s) to each tree, latency
counted from each request's due time: p99 < 25 ms there.

Targets: checkout p99 < 25 ms at 100 checkouts/s (open loop); saturation throughput >= 0.85
of the commit before (e4b0cb1); the floor ratio is printed (not stable across machines).

    git worktree add /tmp/bench-e4b0cb1 e4b0cb1
    .venv/bin/python bench/checkout.py --against /tmp/bench-e4b0cb1 [--clients 16]
        [--duration 15] [--warmup 3] [--workers 2] [--rounds 3] [--rate 100] [--profile 200]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import http.client
import io
import os
import pstats
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import _common
from _common import header, percentile, verdict

P99_TARGET_MS = 25.0
SHARE_TARGET = 0.40

Request = tuple[str, str, bytes | None, dict[str, str]]


# --- CPU accounting from /proc (this machine only) -------------------------------------------


# --- the server ------------------------------------------------------------------------------


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str], *, workers: int, port: int, tree: Path = _common.REPO
) -> Iterator[subprocess.Popen[bytes]]:
    """gunicorn with the production settings on 127.0.0.1:port, serving the code in `tree`
    (this checkout, or another commit's worktree); stopped (by its pid) on exit."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--config",
        "python:config.gunicorn",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
    ]
    process, log_path = _common.start_logged(command, env, "gunicorn", cwd=tree)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}: {_tail(log_path)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/livez")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer /livez within 60 s: {_tail(log_path)}")
            time.sleep(0.2)
        print(
            f"gunicorn pid {process.pid}, {workers} sync workers, http://127.0.0.1:{port}, "
            f"serving {tree}"
        )
        yield process
    finally:
        _common.stop_logged(process, log_path, what="gunicorn")


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the load --------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    duration: float
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: int = 0
    first_error: str = ""
    server_cpu: float = 0.0
    postgres_cpu: float = 0.0
    client_cpu: float = 0.0
    machine_busy: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.duration

    def p(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000


def drive(
    name: str,
    port: int,
    request_for: Callable[[int, int], Request],
    *,
    clients: int,
    warmup: float,
    duration: float,
    server_pid: int,
) -> Phase:
    """`clients` threads send requests back to back for warmup + duration seconds; requests
    started during the measured window count (latency, status); then every thread stops."""
    phase = Phase(name, duration)
    lock = threading.Lock()
    start = time.perf_counter() + 0.2
    measure_from = start + warmup
    end = measure_from + duration
    marks: dict[str, Any] = {}
    postmaster = _common.postmaster_pid()

    def postgres_seconds() -> float:
        return _common.process_tree_seconds(postmaster) if postmaster else 0.0

    def client(index: int) -> None:
        latencies: list[float] = []
        statuses: collections.Counter[str] = collections.Counter()
        errors, first_error = 0, ""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sequence = 0
        while time.perf_counter() < start:
            time.sleep(0.001)
        while True:
            began = time.perf_counter()
            if began >= end:
                break
            method, path, body, headers = request_for(index, sequence)
            sequence += 1
            status = ""
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                status = str(response.status)
                if response.status != 200 and not first_error:
                    first_error = f"{status}: {payload[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                status = type(exc).__name__
                if not first_error:
                    first_error = f"{status}: {exc}"
            finished = time.perf_counter()
            if began >= measure_from:
                statuses[status] += 1
                if status == "200":
                    latencies.append(finished - began)
                else:
                    errors += 1
        conn.close()
        with lock:
            phase.latencies.extend(latencies)
            phase.statuses.update(statuses)
            phase.errors += errors
            phase.first_error = phase.first_error or first_error

    def sample_cpu() -> None:
        while time.perf_counter() < measure_from:
            time.sleep(0.001)
        marks["server"] = _common.process_tree_seconds(server_pid)
        marks["postgres"] = postgres_seconds()
        marks["client"] = time.process_time()
        marks["machine"] = _common.machine_ticks()
        while time.perf_counter() < end:
            time.sleep(0.001)
        marks["server"] = _common.process_tree_seconds(server_pid) - marks["server"]
        marks["postgres"] = postgres_seconds() - marks["postgres"]
        marks["client"] = time.process_time() - marks["client"]
        busy, total = _common.machine_ticks()
        marks["machine"] = (busy - marks["machine"][0]) / max(total - marks["machine"][1], 1)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    threads.append(threading.Thread(target=sample_cpu, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=warmup + duration + 60)
    phase.latencies.sort()
    phase.server_cpu = marks.get("server", 0.0)
    phase.postgres_cpu = marks.get("postgres", 0.0)
    phase.client_cpu = marks.get("client", 0.0)
    phase.machine_busy = marks.get("machine", 0.0)
    return phase


def merged(slices: list[Phase]) -> Phase:
    """One endpoint's slices as one phase: requests, time and CPU added up."""
    phase = Phase(slices[0].name, sum(p.duration for p in slices))
    for part in slices:
        phase.latencies.extend(part.latencies)
        phase.statuses.update(part.statuses)
        phase.errors += part.errors
        phase.first_error = phase.first_error or part.first_error
        phase.server_cpu += part.server_cpu
        phase.postgres_cpu += part.postgres_cpu
        phase.client_cpu += part.client_cpu
        phase.machine_busy += part.machine_busy * part.duration / phase.duration
    phase.latencies.sort()
    return phase


def open_loop(
    name: str,
    port: int,
    request_for: Callable[[int, int], Request],
    *,
    rate: float,
    warmup: float,
    duration: float,
    server_pid: int,
    senders: int = 32,
) -> Phase:
    """Requests at a fixed rate whatever the answers' speed (open loop): request i is due at
    start + i / rate, and its latency counts from then, so a slow answer that delays the next
    sends shows in their latency too (no coordinated omission). `senders` threads take the
    due requests in turn; requests due during the measured window count."""
    phase = Phase(name, duration)
    lock = threading.Lock()
    start = time.perf_counter() + 0.2
    measure_from = start + warmup
    total = int((warmup + duration) * rate)
    counter = iter(range(total))
    marks: dict[str, float] = {}

    def sender(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies: list[float] = []
        errors = 0
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            method, path, body, headers = request_for(index, i)
            ok = False
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
            if due >= measure_from:
                if ok:
                    latencies.append(time.perf_counter() - due)
                else:
                    errors += 1
        conn.close()
        with lock:
            phase.latencies.extend(latencies)
            phase.errors += errors

    def sample_cpu() -> None:
        while time.perf_counter() < measure_from:
            time.sleep(0.001)
        marks["server"] = _common.process_tree_seconds(server_pid)
        busy, all_ticks = _common.machine_ticks()
        time.sleep(max(0.0, measure_from + duration - time.perf_counter()))
        marks["server"] = _common.process_tree_seconds(server_pid) - marks["server"]
        busy2, all2 = _common.machine_ticks()
        marks["machine"] = (busy2 - busy) / max(all2 - all_ticks, 1)

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(senders)]
    threads.append(threading.Thread(target=sample_cpu, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=warmup + duration + 60)
    phase.latencies.sort()
    phase.server_cpu = marks.get("server", 0.0)
    phase.machine_busy = marks.get("machine", 0.0)
    return phase


def report(phase: Phase) -> None:
    cores = os.cpu_count() or 1
    requests = max(phase.requests, 1)
    print(
        f"{phase.name:<10} {phase.requests:>8,} {phase.errors:>7,} {phase.rps:>9.0f} "
        f"{phase.p(0.50):>8.2f} {phase.p(0.99):>8.2f}   "
        f"CPU ms/req: gunicorn {phase.server_cpu / requests * 1000:.2f}, "
        f"postgres {phase.postgres_cpu / requests * 1000:.2f}; "
        f"client {phase.client_cpu / phase.duration:.2f} cores; "
        f"machine {phase.machine_busy * 100:.0f}% of {cores} cores busy"
    )
    if phase.errors:
        print(f"           statuses {dict(phase.statuses)}; first: {phase.first_error}")


# --- set-up and in-process figures -------------------------------------------------------------


def populate(pools_count: int, per_pool: int) -> list[tuple[str, str]]:
    """Pools of usable accounts and one consumer key per pool: [(slug, key)]."""
    from django.utils import timezone

    from accounts_pool.models import Account, QuotaWindow
    from accounts_pool.services.keys import consumer_key_create

    now = timezone.now()
    team, lead = _common.make_team()
    pools = _common.make_pools(team, pools_count)
    print("loading rows")
    rows = [
        _common.oauth_account(
            pool,
            f"{pool.slug}-acct-{i:02d}",
            expires_at=now + timedelta(hours=7),
            quota_checked_at=now,
            policy_checked_at=now,
        )
        for pool in pools
        for i in range(per_pool)
    ]
    accounts = _common.bulk_insert(Account, rows, what="accounts")
    _common.bulk_insert(QuotaWindow, _common.usable_windows(accounts, now), what="quota windows")
    started = time.perf_counter()
    keys = [
        (pool.slug, consumer_key_create(pool=pool, name="bench", created_by=lead)[1])
        for pool in pools
    ]
    print(f"  {len(keys):>7,} consumer keys in {time.perf_counter() - started:.1f} s")
    _common.analyze(
        "accounts_pool_account",
        "accounts_pool_pool",
        "accounts_pool_quotawindow",
        "accounts_pool_consumerkey",
    )
    return keys


def count_queries(keys: list[tuple[str, str]], n: int) -> tuple[float, float, float, list[str]]:
    """Queries per checkout: through the service (checkout_create) and through the whole
    request (Django's test client, auth included), the key's first use (which also records
    its last use) and a later one. Returns (service, first, later, one's SQL)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts_pool.services.checkout import checkout_create
    from accounts_pool.services.keys import secret_hash

    chosen = [keys[i % len(keys)] for i in range(n)]
    with CaptureQueriesContext(connection) as service:
        for _, secret in chosen:
            checkout_create(key_hash=secret_hash(secret))
    one = [q["sql"] for q in service.captured_queries[: len(service.captured_queries) // n]]

    client = Client()
    per_request = []
    for _ in range(2):  # a key's first use reads and records it; the second pass does not
        with CaptureQueriesContext(connection) as request:
            for slug, secret in chosen:
                response = client.post(
                    f"/api/v1/pools/{slug}/checkout",
                    data="{}",
                    content_type="application/json",
                    headers={"authorization": f"Bearer {secret}"},
                    SERVER_NAME="127.0.0.1",
                )
                if response.status_code != 200:
                    raise RuntimeError(f"in-process checkout answered {response.status_code}")
        per_request.append(len(request.captured_queries) / n)
    return len(service.captured_queries) / n, per_request[0], per_request[1], one


def breakdown(keys: list[tuple[str, str]], n: int) -> None:
    """Median in-process time of a checkout and of its parts, unprofiled, one thread."""
    import statistics

    n = min(n, len(keys))  # one sample per key at most, whatever --pools is

    from django.test import Client
    from django.utils import timezone

    from accounts_pool import checkout_sql, selectors
    from accounts_pool.models import Account, ConsumerKey
    from accounts_pool.services.checkout import FIRST_ROUND, checkout_create
    from accounts_pool.services.keys import secret_hash

    client = Client()
    hashes = [secret_hash(secret) for _, secret in keys[:n]]
    key_rows = [ConsumerKey.objects.select_related("pool").get(key_hash=h) for h in hashes]

    def request(i: int) -> object:
        slug, secret = keys[i % len(keys)]
        return client.post(
            f"/api/v1/pools/{slug}/checkout",
            data="{}",
            content_type="application/json",
            headers={"authorization": f"Bearer {secret}"},
            SERVER_NAME="127.0.0.1",
        )

    def first_round(i: int) -> object:
        return checkout_sql.candidates(hashes[i % n], now=timezone.now(), limit=FIRST_ROUND)

    parts: list[tuple[str, Callable[[int], object]]] = [
        ("whole request (Django test client, no HTTP)", request),
        ("  checkout_create (the service)", lambda i: checkout_create(key_hash=hashes[i % n])),
        (
            f"    checkout_sql.candidates: the key, its pool, first {FIRST_ROUND} account(s) "
            "with their windows",
            first_round,
        ),
        (
            "  (not on the path: accounts_with_verdicts, the pool's 50 accounts)",
            lambda i: selectors.accounts_with_verdicts(
                Account.objects.filter(pool=key_rows[i % n].pool), now=timezone.now()
            ),
        ),
    ]
    header(f"where a checkout's time goes (in-process, one thread, median of {n})")
    for label, function in parts:
        samples = []
        for i in range(n):
            started = time.perf_counter()
            function(i)
            samples.append(time.perf_counter() - started)
        print(f"{statistics.median(samples) * 1000:8.2f} ms  {label}")


def profile_checkouts(keys: list[tuple[str, str]], n: int) -> None:
    """cProfile n whole-request checkouts in-process (Django's test client): where it goes."""
    from django.test import Client

    client = Client()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for i in range(n):
        slug, secret = keys[i % len(keys)]
        client.post(
            f"/api/v1/pools/{slug}/checkout",
            data="{}",
            content_type="application/json",
            headers={"authorization": f"Bearer {secret}"},
            SERVER_NAME="127.0.0.1",
        )
    profiler.disable()
    elapsed = time.perf_counter() - started
    header(f"cProfile: {n} checkouts in-process, one thread")
    print(f"{elapsed / n * 1000:.2f} ms per checkout under the profiler")
    for order, lines in (("cumulative", 40), ("tottime", 20)):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(lines)
        print(f"-- by {order}")
        print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


def _label(tree: Path) -> str:
    """The tree's commit, short, marked when it has uncommitted changes."""
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (commit or tree.name) + ("+dirty" if dirty else "")


CPU_SCRIPT = """
import json, os, sys, time
sys.path.insert(0, os.getcwd())
import django
django.setup()
from django.test import Client
keys, n = json.loads(sys.argv[1]), int(sys.argv[2])
client = Client()
def run(count):
    for i in range(count):
        slug, secret = keys[i % len(keys)]
        response = client.post(f"/api/v1/pools/{slug}/checkout", data="{}",
            content_type="application/json", headers={"authorization": f"Bearer {secret}"},
            SERVER_NAME="127.0.0.1")
        assert response.status_code == 200, response.content
run(min(n, 200))
print("ready", flush=True)
sys.stdin.readline()
started = time.process_time()
run(n)
print(time.process_time() - started, flush=True)
"""


def cpu_per_checkout(
    tree: Path, env: dict[str, str], keys: list[tuple[str, str]], n: int
) -> tuple[float, float]:
    """CPU per checkout of one tree's code, one thread, in-process (Django's test client, no
    HTTP): (Django's ms, PostgreSQL's ms). CPU time, not wall time, so a busy machine slows it
    less than it slows the HTTP figures."""
    import json

    process = subprocess.Popen(
        [sys.executable, "-c", CPU_SCRIPT, json.dumps(keys[:50]), str(n)],
        cwd=tree,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{tree}: the in-process checkouts failed")
    postmaster = _common.postmaster_pid()
    before = _common.process_tree_seconds(postmaster) if postmaster else 0.0
    process.stdin.write("go\n")
    process.stdin.flush()
    django_seconds = float(process.stdout.readline())
    after = _common.process_tree_seconds(postmaster) if postmaster else 0.0
    process.wait(timeout=60)
    return django_seconds / n * 1000, (after - before) / n * 1000


def _preflight(port: int, request: Request) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    method, path, body, headers = request
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"preflight checkout: {response.status} {payload[:300]!r}")
    print(f"preflight checkout on port {port}: {response.status}, {len(payload)} bytes")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Checkout latency and throughput over HTTP (gunicorn, production settings) "
        "against the floor GET /livez of the same server.",
    )
    parser.add_argument("--pools", type=int, default=200, help="pools (one consumer key each)")
    parser.add_argument("--per-pool", type=int, default=50, help="usable accounts per pool")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="the endpoints take turns: this many slices of duration/rounds seconds each",
    )
    parser.add_argument(
        "--queries", type=int, default=50, help="in-process checkouts whose queries are counted"
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=None,
        metavar="SECONDS",
        help="sets DB_CONN_MAX_AGE=SECONDS, how long a database connection is kept (0: a new "
        "one per request or task); default: not set, the settings' 60 s (persistent)",
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile N in-process checkouts"
    )
    parser.add_argument(
        "--against",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also serve another commit's worktree (git worktree add /tmp/bench-e4b0cb1 "
        "e4b0cb1) from the same database, and measure it and this one back to back, round "
        "after round (repeatable; the first is the baseline)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="open-loop phase: checkouts per second sent whatever the answers' speed (0: none)",
    )
    parser.add_argument(
        "--open-duration", type=float, default=10.0, help="measured seconds of the open loop"
    )
    args = parser.parse_args()
    if not (
        0 < args.clients <= 256
        and 0 < args.duration <= 120
        and 0 <= args.warmup <= 60
        and 0 < args.workers <= 16
        and 0 < args.rounds <= 20
        and 0 < args.pools * args.per_pool <= 200_000
    ):
        parser.error(
            "out of range: clients 1-256, duration <= 120 s, workers 1-16, rounds 1-20, "
            "<= 200k rows"
        )

    print(f"bench/checkout.py on {_common.machine()}")
    if args.conn_max_age is not None:
        print(f"DB_CONN_MAX_AGE={args.conn_max_age} (default: the settings' 60 s)")
    with _common.bench_database("checkout", conn_max_age=args.conn_max_age) as env:
        keys = populate(args.pools, args.per_pool)

        header(f"queries per checkout ({args.queries} in-process checkouts)")
        service_q, first_q, request_q, one = count_queries(keys, args.queries)
        print(f"service checkout_create   {service_q:.2f} queries per checkout")
        print(f"whole request (auth too)  {request_q:.2f} queries per checkout")
        print(f"  key's first use: {first_q:.2f} (records the key's last use too)")
        print("one checkout_create:")
        for sql in one:
            print(f"  {sql[:120]}{' ...' if len(sql) > 120 else ''}")
        breakdown(keys, 50)
        if args.profile:
            profile_checkouts(keys, args.profile)

        from django.db import connections

        connections.close_all()  # the server gets the database to itself
        port = _common.free_port()

        def livez(index: int, sequence: int) -> Request:
            return ("GET", "/livez", None, {})

        def checkout(index: int, sequence: int) -> Request:
            slug, secret = keys[(index + sequence * args.clients) % len(keys)]
            return (
                "POST",
                f"/api/v1/pools/{slug}/checkout",
                b"{}",
                {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            )

        trees = [(_label(tree), tree) for tree in args.against]
        trees.append((_label(_common.REPO), _common.REPO))
        header("CPU per checkout, in-process, one thread (median of 3 turns of 500)")
        cpu: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        for _ in range(3):
            for label, tree in trees:
                cpu[label].append(cpu_per_checkout(tree, env, keys, 500))
        for label, samples in cpu.items():
            django_ms = sorted(s[0] for s in samples)[1]
            postgres_ms = sorted(s[1] for s in samples)[1]
            print(
                f"{label:<14} Django {django_ms:.2f} ms + PostgreSQL {postgres_ms:.2f} ms "
                f"= {django_ms + postgres_ms:.2f} ms"
            )
        connections.close_all()
        with contextlib.ExitStack() as stack:
            servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
            for label, tree in trees:
                tree_port = port if not servers else _common.free_port()
                server = stack.enter_context(
                    gunicorn(env, workers=args.workers, port=tree_port, tree=tree)
                )
                servers[label] = (tree_port, server)
                _preflight(tree_port, checkout(0, 0))
            # Side by side: the endpoints (and the trees) take turns, `rounds` slices each, so
            # a change in the machine's speed during the run (it is shared) weighs on all.
            slices: dict[tuple[str, str], list[Phase]] = collections.defaultdict(list)
            for round_index in range(args.rounds):
                for label, (tree_port, server) in servers.items():
                    for name, request_for in (("livez", livez), ("checkout", checkout)):
                        idle = _common.background_load(0.3)
                        warmup = args.warmup if round_index == 0 else min(args.warmup, 1.0)
                        print(
                            f"round {round_index + 1}/{args.rounds}, {label} {name}: "
                            f"{args.clients} clients, {warmup:g} s warm-up + "
                            f"{args.duration / args.rounds:g} s "
                            f"(machine {idle * 100:.0f}% busy just before)"
                        )
                        slices[label, name].append(
                            drive(
                                name,
                                tree_port,
                                request_for,
                                clients=args.clients,
                                warmup=warmup,
                                duration=args.duration / args.rounds,
                                server_pid=server.pid,
                            )
                        )
            open_phases: dict[str, list[Phase]] = collections.defaultdict(list)
            if args.rate > 0:
                for _ in range(2):  # two slices each, taking turns
                    for label, (tree_port, server) in servers.items():
                        print(f"open loop, {label}: {args.rate:g} checkouts/s")
                        open_phases[label].append(
                            open_loop(
                                "checkout",
                                tree_port,
                                checkout,
                                rate=args.rate,
                                warmup=1.0,
                                duration=args.open_duration / 2,
                                server_pid=server.pid,
                            )
                        )

        summary: dict[str, tuple[Phase, Phase]] = {}
        for label in servers:
            floor, result = merged(slices[label, "livez"]), merged(slices[label, "checkout"])
            summary[label] = (floor, result)
            header(
                f"{label}: HTTP, gunicorn {args.workers} sync workers, {args.clients} clients, "
                f"{args.duration:g} s measured"
            )
            for round_index, (f, c) in enumerate(
                zip(slices[label, "livez"], slices[label, "checkout"], strict=True)
            ):
                print(
                    f"  round {round_index + 1}: livez {f.rps:.0f} req/s, checkout "
                    f"{c.rps:.0f} req/s, ratio {c.rps / f.rps if f.rps else 0:.2f}"
                )
            print(
                f"{'':<10} {'requests':>8} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
            )
            report(floor)
            report(result)

        header("summary")
        for label, (floor, result) in summary.items():
            share = result.rps / floor.rps if floor.rps else 0.0
            print(
                f"{label:<12} saturation: checkout {result.rps:.0f} req/s, floor "
                f"{floor.rps:.0f} req/s, ratio {share:.2f}; p50 {result.p(0.5):.2f} ms, "
                f"p99 {result.p(0.99):.2f} ms; errors {result.errors}"
            )
            if open_phases.get(label):
                loop = merged(open_phases[label])
                ok = loop.requests > 0 and loop.p(0.99) < P99_TARGET_MS
                print(
                    f"{'':<12} open loop at {args.rate:g}/s: {loop.requests:,} answered, "
                    f"{loop.errors} errors; p50 {loop.p(0.5):.2f} ms, p99 {loop.p(0.99):.2f} ms "
                    f"(target < {P99_TARGET_MS:g})  {verdict(ok)}; "
                    f"machine {loop.machine_busy * 100:.0f}% busy"
                )
        if len(summary) >= 2:
            (before_label, (_, before)), *others = summary.items()
            for now_label, (_, now) in others:
                change = now.rps / before.rps if before.rps else 0.0
                print(
                    f"{now_label} / {before_label} saturation throughput: {change:.2f} "
                    f"(target >= 0.85)  {verdict(change >= 0.85)}"
                )
        print(f"queries per checkout: {service_q:.2f} (service), {request_q:.2f} (whole request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
