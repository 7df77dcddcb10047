"""Refresh pass: how close to latency-bound is one pass over the due accounts?

10,000 accounts, 1,000 of them due for refresh (access token expiring within the pool's refresh
lead), the other 9,000 fresh; a simulated Anthropic at 50 ms latency holds all 10,000 refresh
tokens. The pass runs the way the Celery workers do: the product's dispatcher
(`services.cycle.dispatch_token_refresh`, one chunk after another, marking what it queues)
feeds one queue, and worker processes (default: one per core) with C threads in all take ids
from it and run `services.refresh.account_refresh`, each thread keeping its database
connection, as a worker's pool thread does.

Figures: wall time from the first dispatch to the last refresh, against the bound
due x latency / C (target: ratio <= 1.5), queries per refreshed account (target: <= 4), and
correctness: exactly one refresh per due account at the simulator, no reused or rejected refresh
token, and the database holding every account's current tokens.

    .venv/bin/python bench/cycle.py [--accounts 10000] [--due 1000] [--threads 16]
                                    [--processes 2] [--latency 0.05] [--sim-process]
                                    [--profile 40]
    .venv/bin/python bench/cycle.py --celery 16     # optional: a real Celery worker instead
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import io
import multiprocessing
import os
import pstats
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

import _common
from _common import header, verdict

from simulator import SimStats, SimulatedAnthropic

RATIO_TARGET = 1.5
QUERIES_TARGET = 4.0


# --- the simulated provider, in this process or in a child process ------------------------------

Tokens = dict[str, tuple[str, str]]  # uuid -> (current refresh token, current access token)


def _tokens(sim: SimulatedAnthropic) -> Tokens:
    return {a.uuid: (a.refresh_token, a.access_token) for a in sim.accounts()}


class InProcessSim:
    """The simulator on threads of this process (it shares the GIL with the refresh threads)."""

    def __init__(self, latency: float) -> None:
        self.sim = SimulatedAnthropic(latency=latency).start()

    def seed(self, n: int) -> list[tuple[str, str, str]]:
        return [(a.uuid, a.refresh_token, a.access_token) for a in self.sim.seed(n, prefix="bench")]

    def env(self) -> dict[str, str]:
        return self.sim.env()

    def set_latency(self, seconds: float) -> None:
        self.sim.latency = seconds

    def reset_stats(self) -> None:
        self.sim.reset_stats()

    def stats(self) -> SimStats:
        return self.sim.stats()

    def tokens(self) -> Tokens:
        return _tokens(self.sim)

    def close(self) -> None:
        self.sim.stop()


def _serve_child(conn: Connection, latency: float) -> None:
    """Child process: run a simulator and answer the parent's commands until told to stop."""
    with SimulatedAnthropic(latency=latency) as sim:
        conn.send(sim.env())
        while conn.poll(None):
            command, argument = conn.recv()
            if command == "seed":
                conn.send([(a.uuid, a.refresh_token, a.access_token) for a in sim.seed(argument)])
            elif command == "latency":
                sim.latency = argument
                conn.send(None)
            elif command == "reset":
                sim.reset_stats()
                conn.send(None)
            elif command == "stats":
                conn.send(sim.stats())
            elif command == "tokens":
                conn.send(_tokens(sim))
            else:
                conn.send(None)
                return


class ChildProcessSim:
    """The simulator in a child process of its own, like a provider on another machine."""

    def __init__(self, latency: float) -> None:
        self.conn, child = multiprocessing.get_context("fork").Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=_serve_child, args=(child, latency), name="sim-anthropic", daemon=True
        )
        self.process.start()
        self._env: dict[str, str] = self._recv()

    def _recv(self) -> Any:
        if not self.conn.poll(60):
            raise RuntimeError("the simulator process did not answer within 60 s")
        return self.conn.recv()

    def _ask(self, command: str, argument: Any = None) -> Any:
        self.conn.send((command, argument))
        return self._recv()

    def seed(self, n: int) -> list[tuple[str, str, str]]:
        seeded: list[tuple[str, str, str]] = self._ask("seed", n)
        return seeded

    def env(self) -> dict[str, str]:
        return self._env

    def set_latency(self, seconds: float) -> None:
        self._ask("latency", seconds)

    def reset_stats(self) -> None:
        self._ask("reset")

    def stats(self) -> SimStats:
        stats: SimStats = self._ask("stats")
        return stats

    def tokens(self) -> Tokens:
        tokens: Tokens = self._ask("tokens")
        return tokens

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, RuntimeError):
            self._ask("stop")
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


# --- the pass ------------------------------------------------------------------------------------


class QueryCounter:
    """A connection.execute_wrapper that counts every statement its connection runs."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


@dataclass
class PassResult:
    wall: float = 0.0
    cpu: float = 0.0
    workers_cpu: float = 0.0
    machine_busy: float = 0.0  # share of all the machine's CPUs busy during the pass
    postgres_cpu: float = 0.0  # seconds, every PostgreSQL process (other people's too)
    batches: int = 0
    submitted: int = 0
    queries: int = 0
    selector_queries: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)


def _worker_process(work: Any, results: Any, threads: int) -> None:
    """A worker process of the pass, like a Celery worker with a thread pool: Django on the
    benchmark's database (inherited environment), `threads` threads taking account ids from the
    shared queue until each gets None, each keeping its database connection, as a worker
    thread does. Sends back its outcomes, query count, errors and CPU seconds."""
    import django

    django.setup()
    from django.db import connection

    from accounts_pool.services.refresh import account_refresh

    result = PassResult()
    lock = threading.Lock()

    def worker() -> None:
        counter = QueryCounter()
        outcomes: collections.Counter[str] = collections.Counter()
        errors: list[str] = []
        try:
            with connection.execute_wrapper(counter):
                while (account_id := work.get()) is not None:
                    try:
                        outcomes[account_refresh(account_id=account_id).outcome] += 1
                    except Exception as exc:
                        errors.append(f"{account_id}: {type(exc).__name__}: {exc}")
        finally:
            connection.close()
            with lock:
                result.queries += counter.count
                result.outcomes.update(outcomes)
                result.errors.extend(errors)

    pool = [threading.Thread(target=worker, name=f"refresh-{i}") for i in range(threads)]
    results.put("ready")
    cpu_started = time.process_time()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result.workers_cpu = time.process_time() - cpu_started
    results.put(result)


def refresh_pass(*, processes: int, threads: int, expected_due: int) -> PassResult:
    """The product's dispatcher (`dispatch_token_refresh`, chunk after chunk, marking what it
    queues) feeds one queue; `processes` worker processes of `threads / processes` threads each
    take ids from it and run `account_refresh`, the way Celery workers with thread pools take
    tasks from the broker. Wall: from the first dispatch until the last refresh is done."""
    from django.db import connection, connections

    from accounts_pool.services.cycle import dispatch_chunk, dispatch_token_refresh

    result = PassResult()
    selector_counter = QueryCounter()
    per_process = max(threads // processes, 1)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited sockets
    work, results = context.Queue(), context.Queue()
    connections.close_all()
    children = [
        context.Process(target=_worker_process, args=(work, results, per_process))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        for _ in children:
            if results.get(timeout=120) != "ready":
                raise RuntimeError("a worker process did not start")
        postmaster = _common.postmaster_pid()
        postgres_started = _common.process_tree_seconds(postmaster) if postmaster else 0.0
        machine_started = _common.machine_ticks()
        started, cpu_started = time.perf_counter(), time.process_time()
        with connection.execute_wrapper(selector_counter):
            for _ in range(expected_due // dispatch_chunk() + 3):  # bounded: a stuck pass ends
                dispatched = dispatch_token_refresh(enqueue=work.put, limit=dispatch_chunk())
                result.submitted += dispatched
                result.batches += dispatched > 0
                if dispatched < dispatch_chunk():
                    break
        for _ in range(processes * per_process):
            work.put(None)
        for _ in children:
            part = results.get(timeout=600)
            result.queries += part.queries
            result.outcomes.update(part.outcomes)
            result.errors.extend(part.errors)
            result.workers_cpu += part.workers_cpu
        result.wall = time.perf_counter() - started
        result.cpu = time.process_time() - cpu_started
        busy, total = _common.machine_ticks()
        result.machine_busy = (busy - machine_started[0]) / max(total - machine_started[1], 1)
        if postmaster:
            result.postgres_cpu = _common.process_tree_seconds(postmaster) - postgres_started
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.terminate()
    result.selector_queries = selector_counter.count
    result.queries += selector_counter.count
    return result


def celery_pass(
    *, concurrency: int, workers: int, pool: str, expected_due: int, env: dict[str, str]
) -> PassResult:
    """Start `workers` Celery workers (`pool` prefork or threads, `concurrency` in all), then
    run the product's dispatcher (`dispatch_token_refresh` enqueueing `refresh_account.delay`)
    until nothing is due, and wait until every due account is refreshed. Wall: first dispatch
    to last refresh."""
    import subprocess

    from django.utils import timezone

    from accounts_pool.models import Account
    from accounts_pool.services.cycle import dispatch_token_refresh
    from accounts_pool.tasks import refresh_account
    from config.celery import app

    app.control.purge()  # this benchmark's broker db only (redis db 14)
    started_workers: list[tuple[subprocess.Popen[bytes], str]] = []
    for index in range(workers):
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(max(concurrency // workers, 1)),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"bench-cycle-{os.getpid()}-{index}@%h",
        ]
        started_workers.append(_common.start_logged(command, env, "celery"))
    result = PassResult()
    try:
        deadline = time.monotonic() + 90
        while len(app.control.ping(timeout=1.0) or []) < workers:
            if any(p.poll() is not None for p, _ in started_workers) or time.monotonic() > deadline:
                raise RuntimeError(f"a Celery worker did not start; see {started_workers[0][1]}")
        print(f"  {workers} Celery worker(s) ready, pool {pool}, concurrency {concurrency} in all")
        time.sleep(2)  # let every pool process come up
        started_at = timezone.now()
        started, cpu_started = time.perf_counter(), _common.machine_ticks()
        pids = [p.pid for p, _ in started_workers]
        worker_cpu = sum(_common.process_tree_seconds(pid) for pid in pids)
        own_cpu = time.process_time()
        deadline = time.monotonic() + 180
        done = 0
        while time.monotonic() < deadline:
            dispatched = dispatch_token_refresh(enqueue=refresh_account.delay)
            result.submitted += dispatched
            result.batches += dispatched > 0
            done = Account.objects.filter(last_refreshed_at__gte=started_at).count()
            if done >= expected_due:
                break
            time.sleep(0.05)
        result.wall = time.perf_counter() - started
        busy, total = _common.machine_ticks()
        result.cpu = (busy - cpu_started[0]) / max(total - cpu_started[1], 1)  # machine share
        worker_cpu = sum(_common.process_tree_seconds(pid) for pid in pids) - worker_cpu
        own_cpu = time.process_time() - own_cpu
        print(
            f"  CPU: worker processes {worker_cpu / max(done, 1) * 1000:.1f} ms per refresh, "
            f"this process (dispatch, polling, simulator if here) "
            f"{own_cpu / max(done, 1) * 1000:.1f} ms per refresh"
        )
        result.outcomes["refreshed"] = done
    finally:
        for process, log_path in started_workers:
            _common.stop_logged(process, log_path, what="worker", grace=30)
    return result


def profile_refreshes(count: int, latency: float) -> None:
    """Make `count` refreshed accounts due again and refresh them on one thread under cProfile:
    where does one refresh spend its time?"""
    from django.utils import timezone

    from accounts_pool import selectors
    from accounts_pool.models import Account
    from accounts_pool.services.refresh import account_refresh

    ids = list(
        Account.objects.filter(last_refreshed_at__isnull=False)
        .order_by("pk")
        .values_list("pk", flat=True)[:count]
    )
    # Due again, and no longer marked as queued by the pass's dispatcher.
    Account.objects.filter(pk__in=ids).update(
        access_expires_at=timezone.now() + timedelta(hours=1), refresh_dispatched_until=None
    )
    due = selectors.accounts_due_for_refresh(now=timezone.now(), limit=count)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for account_id in due:
        account_refresh(account_id=account_id)
    profiler.disable()
    elapsed = time.perf_counter() - started
    header(f"cProfile: {len(due)} refreshes on one thread, latency {latency * 1000:.0f} ms")
    print(
        f"{elapsed:.2f} s, {elapsed / max(len(due), 1) * 1000:.1f} ms per refresh "
        f"(of which {latency * 1000:.0f} ms is the simulated provider's latency)"
    )
    for order, lines in (("cumulative", 28), ("tottime", 14)):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(lines)
        text = out.getvalue()
        print(f"-- by {order}")
        print("\n".join(line for line in text.splitlines()[4:] if line.strip()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Refresh pass over the due accounts: wall time vs latency bound, queries per "
        "refreshed account, correctness against the simulated provider.",
    )
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts in total")
    parser.add_argument("--due", type=int, default=1_000, help="accounts due for refresh")
    parser.add_argument(
        "--threads", "-C", type=int, default=16, help="refresh threads in all (C, the concurrency)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes sharing the C threads (default: one per core, as Celery workers "
        "on this machine would be)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.05, help="simulated provider latency, seconds"
    )
    parser.add_argument("--per-pool", type=int, default=50, help="accounts per pool")
    parser.add_argument(
        "--sim-process",
        action="store_true",
        help="run the simulator in a child process (default: threads of this process, sharing "
        "its GIL with the refresh threads)",
    )
    parser.add_argument(
        "--celery",
        type=int,
        default=0,
        metavar="N",
        help="instead of worker processes of this script: real Celery workers (concurrency N in "
        "all, broker redis db 14) fed by the product's dispatcher (0: not, the default)",
    )
    parser.add_argument(
        "--celery-pool",
        choices=("prefork", "threads"),
        default="prefork",
        help="with --celery: the workers' pool (default prefork)",
    )
    parser.add_argument(
        "--celery-workers",
        type=int,
        default=1,
        help="with --celery: worker processes sharing the concurrency (default 1)",
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
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="afterwards, cProfile N refreshes on one thread (0: skip)",
    )
    args = parser.parse_args()
    if not 0 < args.due <= args.accounts:
        parser.error("need 0 < --due <= --accounts")
    if args.threads < 1 or args.accounts > 200_000:
        parser.error("need --threads >= 1 and --accounts <= 200000")

    print(f"bench/cycle.py on {_common.machine()}")
    where = "a child process" if args.sim_process else "this process"
    print(f"simulator in {where}; latency {args.latency * 1000:.0f} ms during the pass")
    sim: InProcessSim | ChildProcessSim = (
        ChildProcessSim(0.0) if args.sim_process else InProcessSim(0.0)
    )
    try:
        seeded = sim.seed(args.accounts)
        if args.conn_max_age is not None:
            print(f"DB_CONN_MAX_AGE={args.conn_max_age} (default: the settings' 60 s)")
        with _common.bench_database("cycle", extra_env=sim.env(), conn_max_age=args.conn_max_age):
            run(args, sim, seeded)
    finally:
        sim.close()
    return 0


def run(
    args: argparse.Namespace,
    sim: InProcessSim | ChildProcessSim,
    seeded: list[tuple[str, str, str]],
) -> None:
    from django.utils import timezone

    from accounts_pool import selectors
    from accounts_pool.models import Account

    now = timezone.now()
    team, _ = _common.make_team()
    pools = _common.make_pools(team, -(-args.accounts // args.per_pool))
    rows = []
    step, marked = args.accounts // args.due, 0
    for index, (uuid, refresh, access) in enumerate(seeded):
        due = index % step == 0 and marked < args.due
        marked += due
        rows.append(
            _common.oauth_account(
                pools[index // args.per_pool],
                f"acct-{index:06d}",
                # the pools' refresh lead is 4 h: 1 h left is due, 7 h left is fresh
                expires_at=now + (timedelta(hours=1) if due else timedelta(hours=7)),
                refresh_token=refresh,
                access_token=access,
                provider_account_uuid=uuid,
                quota_checked_at=now,
            )
        )
    print("loading rows")
    saved = _common.bulk_insert(Account, rows, what="accounts")
    _common.analyze("accounts_pool_account", "accounts_pool_pool")
    uuid_by_pk = {a.pk: uuid for a, (uuid, _, _) in zip(saved, seeded, strict=True)}
    due_now = len(selectors.accounts_due_for_refresh(now=timezone.now(), limit=10**9))
    print(f"  {due_now:,} due for refresh, {args.accounts - due_now:,} fresh")

    idle = _common.background_load()
    print(f"  machine {idle * 100:.0f}% busy just before the pass (other work on this machine)")
    sim.set_latency(args.latency)
    sim.reset_stats()
    if args.celery:
        result = celery_pass(
            concurrency=args.celery,
            workers=args.celery_workers,
            pool=args.celery_pool,
            expected_due=due_now,
            env=dict(os.environ),
        )
        concurrency = args.celery
        how = (
            f"{args.celery_workers} Celery worker(s), pool {args.celery_pool}, "
            f"concurrency {args.celery} in all"
        )
    else:
        result = refresh_pass(processes=args.processes, threads=args.threads, expected_due=due_now)
        concurrency = args.threads
        how = f"{args.processes} worker processes, C={args.threads} threads in all"
    stats = sim.stats()

    bound = due_now * args.latency / concurrency
    ratio = result.wall / bound if bound else float("inf")
    refreshed = result.outcomes.get("refreshed", 0)
    per_account = result.queries / refreshed if refreshed else float("inf")

    header(
        f"refresh pass: {due_now:,} due of {args.accounts:,}, {how}, "
        f"latency {args.latency * 1000:.0f} ms"
    )
    print(f"dispatcher runs     {result.batches}")
    print(f"submitted           {result.submitted:,}")
    print(f"outcomes            {dict(result.outcomes)}")
    print(f"errors              {len(result.errors)}")
    for error in result.errors[:5]:
        print(f"    {error}")
    print(f"wall                {result.wall:.2f} s")
    print(f"bound               {bound:.2f} s   (due x latency / {concurrency})")
    print(
        f"ratio               {ratio:.2f}   target <= {RATIO_TARGET}   "
        f"{verdict(ratio <= RATIO_TARGET)}"
    )
    print(f"refreshes/s         {refreshed / result.wall if result.wall else 0:.0f}")
    if args.celery:
        print(f"machine CPU busy    {result.cpu * 100:.0f}% of {os.cpu_count()} cores")
        print("queries/refreshed   not counted in this variant (other processes)")
    else:
        cores = result.workers_cpu / result.wall
        per_refresh = result.workers_cpu / max(refreshed, 1) * 1000
        here = "selector" if args.sim_process else "selector, simulator"
        print(
            f"CPU of the workers  {result.workers_cpu:.2f} s ({cores:.2f} cores; "
            f"{per_refresh:.1f} ms per refresh); this process ({here}) {result.cpu:.2f} s"
        )
        print(
            f"PostgreSQL CPU      {result.postgres_cpu:.2f} s "
            f"({result.postgres_cpu / max(refreshed, 1) * 1000:.1f} ms per refresh; every "
            f"backend on the server); machine {result.machine_busy * 100:.0f}% busy during the pass"
        )
        print(f"queries             {result.queries:,} ({result.selector_queries} by the selector)")
        print(
            f"queries/refreshed   {per_account:.2f}   target <= {QUERIES_TARGET:.0f}   "
            f"{verdict(per_account <= QUERIES_TARGET)}"
        )

    header("correctness")
    sim_refreshes = sum(stats["refreshes"].values())
    once = sum(1 for n in stats["refreshes"].values() if n == 1)
    print(f"simulator refreshes {sim_refreshes:,} (accounts refreshed exactly once: {once:,})")
    print(f"reused              {stats['reused']}")
    print(f"invalid_grant       {stats['invalid_grant']}")
    current = sim.tokens()
    refresh_match = access_match = 0
    for account in Account.objects.only("pk", "refresh_token", "access_token").iterator(
        chunk_size=2000
    ):
        sim_refresh, sim_access = current[uuid_by_pk[account.pk]]
        refresh_match += account.refresh_token == sim_refresh
        access_match += account.access_token == sim_access
    print(f"DB refresh token == simulator's current: {refresh_match:,} of {len(saved):,}")
    print(f"DB access token  == simulator's current: {access_match:,} of {len(saved):,}")
    left = len(selectors.accounts_due_for_refresh(now=timezone.now(), limit=10**9))
    print(f"still due after the pass: {left}")
    correct = (
        sim_refreshes == due_now
        and once == due_now
        and stats["reused"] == 0
        and stats["invalid_grant"] == 0
        and refresh_match == len(saved)
        and access_match == len(saved)
        and left == 0
        and not result.errors
        and (args.celery > 0 or result.submitted == due_now)
    )
    print(f"correctness         {verdict(correct)}")

    if args.profile:
        profile_refreshes(args.profile, args.latency)

    header("summary")
    queries = (
        "queries not counted"
        if args.celery
        else f"queries/refreshed {per_account:.2f} {verdict(per_account <= QUERIES_TARGET)}"
    )
    print(
        f"cycle ({how}): wall {result.wall:.2f} s, bound {bound:.2f} s, ratio {ratio:.2f} "
        f"{verdict(ratio <= RATIO_TARGET)}; {queries}; correctness {verdict(correct)}"
    )


if __name__ == "__main__":
    sys.exit(main())
