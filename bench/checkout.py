"""Checkout over HTTP: latency and throughput against the same server's trivial endpoint.

10,000 usable accounts in 200 pools (50 each: access token valid for hours, quota just checked
with a five_hour and a seven_day window well below 100%), one consumer key per pool. gunicorn
serves the production settings (DEBUG off, the Procfile's gunicorn config) on 127.0.0.1 with 2
sync workers; this process drives load with a bounded number of client threads (http.client, one
connection object per thread) for a fixed time after a warm-up. The floor `GET /livez` and
`POST /api/v1/pools/<slug>/checkout` (spread over the 200 pools) take turns, a slice each per
round, so that drift in a shared machine's speed weighs on both. Also counts the queries of one
checkout in-process.

Targets: checkout p99 < 25 ms and checkout throughput >= 40% of the floor's.

    .venv/bin/python bench/checkout.py [--clients 16] [--duration 15] [--warmup 3]
                                       [--workers 2] [--rounds 3] [--profile 200]
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
def gunicorn(env: dict[str, str], *, workers: int, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """gunicorn with the production settings on 127.0.0.1:port; stopped (by its pid) on exit."""
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
    process, log_path = _common.start_logged(command, env, "gunicorn")
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
        print(f"gunicorn pid {process.pid}, {workers} sync workers, http://127.0.0.1:{port}")
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
    request (Django's test client, auth included), the key's first use (which reads the key
    and records its last use) and a later one, which checkout serves from the key this
    process read lately. Returns (service, first, later, one's SQL)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts_pool.models import ConsumerKey
    from accounts_pool.services.checkout import checkout_create
    from accounts_pool.services.keys import secret_hash

    chosen = [keys[i % len(keys)] for i in range(n)]
    key_rows = {
        k.key_hash: k
        for k in ConsumerKey.objects.select_related("pool", "pool__team").filter(
            key_hash__in=[secret_hash(secret) for _, secret in chosen]
        )
    }
    with CaptureQueriesContext(connection) as service:
        for _, secret in chosen:
            checkout_create(key=key_rows[secret_hash(secret)])
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

    from accounts_pool import selectors
    from accounts_pool.models import Account, ConsumerKey
    from accounts_pool.services.checkout import FIRST_ROUND, checkout_create
    from accounts_pool.services.keys import consumer_key_authenticate as authenticate
    from accounts_pool.services.keys import secret_hash

    client = Client()
    key_rows = [
        ConsumerKey.objects.select_related("pool", "pool__team").get(key_hash=secret_hash(secret))
        for _, secret in keys[:n]
    ]

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
        pool = key_rows[i % n].pool
        return selectors.checkout_candidates(pool, now=timezone.now(), limit=FIRST_ROUND)

    parts: list[tuple[str, Callable[[int], object]]] = [
        ("whole request (Django test client, no HTTP)", request),
        ("  consumer_key_authenticate (key and pool)", lambda i: authenticate(keys[i % n][1])),
        ("  checkout_create (the service)", lambda i: checkout_create(key=key_rows[i % n])),
        (
            f"    checkout_candidates: first {FIRST_ROUND} account(s) with their windows",
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
        print(f"whole request (auth too)  {request_q:.2f} queries per checkout (key read lately)")
        print(f"  key's first use: {first_q:.2f} (reads the key, records its last use)")
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

        with gunicorn(env, workers=args.workers, port=port) as server:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            method, path, body, headers = checkout(0, 0)
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            conn.close()
            if response.status != 200:
                raise RuntimeError(f"preflight checkout: {response.status} {payload[:300]!r}")
            print(f"preflight checkout: {response.status}, {len(payload)} bytes")
            # Side by side: the two endpoints take turns, `rounds` slices each, so a change in
            # the machine's speed during the run (this one is shared and noisy) weighs on both.
            slices: dict[str, list[Phase]] = {"livez": [], "checkout": []}
            for round_index in range(args.rounds):
                for name, request_for in (("livez", livez), ("checkout", checkout)):
                    idle = _common.background_load(0.3)
                    warmup = args.warmup if round_index == 0 else min(args.warmup, 1.0)
                    print(
                        f"round {round_index + 1}/{args.rounds}, {name}: {args.clients} clients, "
                        f"{warmup:g} s warm-up + {args.duration / args.rounds:g} s "
                        f"(machine {idle * 100:.0f}% busy just before)"
                    )
                    slices[name].append(
                        drive(
                            name,
                            port,
                            request_for,
                            clients=args.clients,
                            warmup=warmup,
                            duration=args.duration / args.rounds,
                            server_pid=server.pid,
                        )
                    )
            phases = [merged(slices["livez"]), merged(slices["checkout"])]
            for round_index, (f, c) in enumerate(zip(*slices.values(), strict=True)):
                print(
                    f"  round {round_index + 1}: livez {f.rps:.0f} req/s, checkout "
                    f"{c.rps:.0f} req/s, ratio {c.rps / f.rps if f.rps else 0:.2f}"
                )

        floor, result = phases
        header(
            f"HTTP, gunicorn {args.workers} sync workers, {args.clients} clients, "
            f"{args.duration:g} s measured"
        )
        print(f"{'':<10} {'requests':>8} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        report(floor)
        report(result)
        share = result.rps / floor.rps if floor.rps else 0.0
        p99 = result.p(0.99)
        header("summary")
        print(
            f"checkout p99 {p99:.2f} ms (target < {P99_TARGET_MS:g})  "
            f"{verdict(p99 < P99_TARGET_MS and result.requests > 0)}"
        )
        print(
            f"checkout/floor throughput {share:.2f} ({result.rps:.0f} / {floor.rps:.0f} req/s, "
            f"target >= {SHARE_TARGET:.2f})  {verdict(share >= SHARE_TARGET)}"
        )
        print(f"errors: livez {floor.errors}, checkout {result.errors}")
        print(f"queries per checkout: {service_q:.2f} (service), {request_q:.2f} (whole request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
