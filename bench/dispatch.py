"""Dispatch: does selecting the due accounts stay cheap as the table grows?

Times one dispatcher run (`services.cycle.dispatch_token_refresh`, and `dispatch_quota_checks`,
asked for one chunk, ACCOUNTS_POOL_DISPATCH_CHUNK, as beat's tick task asks) with 1,000 and with
100,000 accounts, 1% of them due (refresh: access token expiring within the pool's refresh lead;
quota: a different 1%, last checked 10 minutes ago), enqueueing into a no-op that only collects
the ids. Each run is rolled back (a transaction ended with set_rollback) so that every run sees
the same due accounts even when dispatch marks what it queued (then VACUUM, untimed, removes
the dead row versions the rollback left); 20 runs per size (after 2 warm-ups), the median
counts. Target: median at 100k / median at 1k < 3.

Also prints, per size: each query's median time (where the time goes); a whole tick (the chained
runs until nothing more is due or the tick's budget, ACCOUNTS_POOL_DISPATCH_BATCH, is spent) and
its cost per queued id, which grows with the number due by nature; both sizes with the same
small limit (`--same-batch`: the same number of ids at both sizes, so the ratio shows the
table's size alone); and the EXPLAIN ANALYZE of the due queries at 100k so a reader sees which
index serves them.

    .venv/bin/python bench/dispatch.py [--small 1000] [--large 100000] [--runs 20]
                                       [--same-batch 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import _common
from _common import header, verdict

RATIO_TARGET = 3.0
DUE_FRACTION = 0.01


@dataclass(frozen=True)
class Timing:
    median: float
    low: float
    high: float
    dispatched: int


def load(start: int, stop: int, *, per_pool: int, team: Any, now: datetime) -> None:
    """Accounts start..stop-1 (pools of `per_pool`); every 100th is due for refresh, every 100th
    (offset by 50) due for a quota check, the rest fresh on both counts."""
    from accounts_pool.models import Account, Pool

    first_pool, last_pool = start // per_pool, (stop - 1) // per_pool
    existing = {p.slug: p for p in Pool.objects.filter(team=team)}
    missing = [
        Pool(team=team, name=f"pool {i:05d}", slug=f"pool-{i:05d}")
        for i in range(first_pool, last_pool + 1)
        if f"pool-{i:05d}" not in existing
    ]
    for pool in Pool.objects.bulk_create(missing, batch_size=1000):
        existing[pool.slug] = pool
    step = round(1 / DUE_FRACTION)
    started = time.perf_counter()
    chunk = 10_000
    for offset in range(start, stop, chunk):
        rows = []
        for index in range(offset, min(offset + chunk, stop)):
            refresh_due = index % step == 0
            quota_due = index % step == step // 2
            rows.append(
                _common.oauth_account(
                    existing[f"pool-{index // per_pool:05d}"],
                    f"acct-{index:06d}",
                    expires_at=now + (timedelta(hours=1) if refresh_due else timedelta(hours=7)),
                    quota_checked_at=now - (timedelta(minutes=10) if quota_due else timedelta(0)),
                    policy_checked_at=now,
                )
            )
        Account.objects.bulk_create(rows, batch_size=2000)
    elapsed = time.perf_counter() - started
    print(f"  loaded accounts {start:,}..{stop - 1:,} in {elapsed:.1f} s")
    t_analyze, _ = _common.timed(
        lambda: _common.analyze("accounts_pool_account", "accounts_pool_pool")
    )
    print(f"  ANALYZE in {t_analyze:.2f} s")


def one_run(dispatch: Callable[..., int], limit: int | None = None) -> Callable[..., int]:
    """A dispatcher run as beat's tick task makes it (one chunk; the chained run it would queue
    is not made); with `limit`, one run asking for that many."""
    from accounts_pool.services.cycle import dispatch_tick_run

    def run(*, enqueue: Callable[[int], object], now: datetime) -> int:
        if limit is not None:
            return dispatch(enqueue=enqueue, now=now, limit=limit)
        return dispatch_tick_run(dispatch, enqueue=enqueue, continue_with=_ignore, now=now)

    return run


def _ignore(_: int) -> None:
    return None


def whole_tick(dispatch: Callable[..., int]) -> Callable[..., int]:
    """Every run of one tick, each chained run made here in turn instead of on a worker."""
    from accounts_pool.services.cycle import dispatch_tick_run

    def run(*, enqueue: Callable[[int], object], now: datetime) -> int:
        pending: list[int | None] = [None]
        total = 0
        while pending:
            total += dispatch_tick_run(
                dispatch,
                enqueue=enqueue,
                continue_with=pending.append,
                budget=pending.pop(),
                now=now,
            )
        return total

    return run


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (INDEX_CLEANUP ON) accounts_pool_account")


def time_dispatch(function: Callable[..., int], runs: int, warmups: int = 2) -> Timing:
    from django.db import transaction
    from django.utils import timezone

    collected: list[int] = []
    samples = []
    for index in range(warmups + runs):
        collected.clear()
        with transaction.atomic():
            started = time.perf_counter()
            function(enqueue=collected.append, now=timezone.now())
            elapsed = time.perf_counter() - started
            transaction.set_rollback(True)  # undo any mark the dispatcher wrote
        vacuum()  # and drop the dead row versions the rollback left, outside the timing
        if index >= warmups:
            samples.append(elapsed)
    return Timing(statistics.median(samples), min(samples), max(samples), len(collected))


def breakdown(function: Callable[..., int], runs: int = 7) -> list[tuple[str, float]]:
    """Median time of each statement of a dispatch, client-side (execute to result), in ms."""
    from django.db import connection, transaction
    from django.utils import timezone

    per_query: list[list[float]] = []
    names: list[str] = []
    for _ in range(runs):
        timings: list[tuple[str, float]] = []

        def timer(
            execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
        ) -> Any:
            started = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                timings.append((sql, (time.perf_counter() - started) * 1000))  # noqa: B023

        with transaction.atomic():
            with connection.execute_wrapper(timer):
                function(enqueue=lambda _id: None, now=timezone.now())
            transaction.set_rollback(True)
        vacuum()
        if not per_query:
            per_query = [[] for _ in timings]
            names = [_describe(sql) for sql, _ in timings]
        for index, (_, ms) in enumerate(timings[: len(per_query)]):
            per_query[index].append(ms)
    return [(name, statistics.median(times)) for name, times in zip(names, per_query, strict=True)]


def _describe(sql: str) -> str:
    words = sql.split()
    if words[0] == "UPDATE":
        return f"UPDATE {words[1]} SET {words[3]} ... WHERE id IN (...)"
    if "ORDER BY" in sql:
        return "SELECT due ids (the due query)"
    return " ".join(words[:3])[:60]


def explain(function: Callable[..., int], label: str, index_name: str) -> None:
    """EXPLAIN ANALYZE the due query the dispatcher ran (the one ordering accounts)."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    with transaction.atomic():
        with CaptureQueriesContext(connection) as captured:
            function(enqueue=lambda _id: None, now=timezone.now())
        transaction.set_rollback(True)
    queries = [q["sql"] for q in captured.captured_queries]
    due_sql = next(sql for sql in queries if "ORDER BY" in sql and "accounts_pool_account" in sql)
    header(f"EXPLAIN ANALYZE: {label} due query")
    print(f"queries per dispatch: {len(queries)}")
    for sql in queries:
        print(f"  {sql[:110]}{' ...' if len(sql) > 110 else ''}")
    print()
    print(due_sql if len(due_sql) < 1500 else due_sql[:1500] + " ...")
    print()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + due_sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    print(plan)
    print(f"-> uses {index_name}: {'yes' if index_name in plan else 'NO'}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Dispatch time (token refresh and quota) at two table sizes, 1% due.",
    )
    parser.add_argument("--small", type=int, default=1_000, help="accounts, small size")
    parser.add_argument("--large", type=int, default=100_000, help="accounts, large size")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per size (median)")
    parser.add_argument("--per-pool", type=int, default=50, help="accounts per pool")
    parser.add_argument(
        "--same-batch",
        type=int,
        default=10,
        metavar="N",
        help="also time both sizes with a run's limit lowered to N (default 10, what 1%% "
        "of 1,000 accounts dispatch), so the ratio shows the table's size alone",
    )
    args = parser.parse_args()
    if not 0 < args.small < args.large <= 1_000_000 or not 0 < args.runs <= 1000:
        parser.error("need 0 < --small < --large <= 1000000 and 0 < --runs <= 1000")
    if args.same_batch < 1:
        parser.error("need --same-batch >= 1")

    print(f"bench/dispatch.py on {_common.machine()}")
    with _common.bench_database("dispatch"):
        from django.conf import settings
        from django.utils import timezone

        from accounts_pool.services.cycle import (
            dispatch_chunk,
            dispatch_quota_checks,
            dispatch_token_refresh,
        )

        team, _ = _common.make_team()
        batch, chunk = settings.ACCOUNTS_POOL_DISPATCH_BATCH, dispatch_chunk()
        print(f"one dispatcher run queues up to {chunk} (ACCOUNTS_POOL_DISPATCH_CHUNK); a tick up")
        print(f"to {batch} (ACCOUNTS_POOL_DISPATCH_BATCH), in chained runs")
        dispatchers = {
            "token refresh": dispatch_token_refresh,
            "quota checks": dispatch_quota_checks,
        }

        results: dict[int, dict[str, Timing]] = {}
        ticks: dict[int, dict[str, Timing]] = {}
        same: dict[int, dict[str, Timing]] = {}
        loaded = 0
        for size in (args.small, args.large):
            header(f"{size:,} accounts")
            load(loaded, size, per_pool=args.per_pool, team=team, now=timezone.now())
            loaded = size
            idle = _common.background_load()
            print(f"  machine {idle * 100:.0f}% busy just before (other work on this machine)")
            results[size] = {
                n: time_dispatch(one_run(f), args.runs) for n, f in dispatchers.items()
            }
            ticks[size] = {
                n: time_dispatch(whole_tick(f), args.runs) for n, f in dispatchers.items()
            }
            # The same small limit at both sizes: only the table's size differs between them.
            same[size] = {
                n: time_dispatch(one_run(f, args.same_batch), args.runs)
                for n, f in dispatchers.items()
            }
            for label, timings in (
                ("one run", results[size]),
                ("whole tick", ticks[size]),
                (f"limit {args.same_batch}", same[size]),
            ):
                for name, timing in timings.items():
                    per_id = timing.median / max(timing.dispatched, 1) * 1e6
                    print(
                        f"  {label:<10} {name:<14} median {timing.median * 1000:7.2f} ms  "
                        f"(min {timing.low * 1000:.2f}, max {timing.high * 1000:.2f}; "
                        f"{timing.dispatched} ids, {per_id:.0f} µs per id)"
                    )
            for name, function in dispatchers.items():
                print(f"  {name}: median time per query of one run")
                for query, ms in breakdown(one_run(function)):
                    print(f"    {ms:7.2f} ms  {query}")
        explain(one_run(dispatch_token_refresh), "token refresh", "account_refresh_due_idx")
        explain(one_run(dispatch_quota_checks), "quota", "account_quota_due_idx")

        header(f"summary: median of {args.runs} runs, 1% due")
        sizes = f"{args.small:>10,} {args.large:>10,}"
        print(f"{'one run':<14} {sizes}   ratio   target < {RATIO_TARGET:g}")
        for name in dispatchers:
            small, large = results[args.small][name], results[args.large][name]
            ratio = large.median / small.median
            print(
                f"{name:<14} {small.median * 1000:8.2f}ms {large.median * 1000:8.2f}ms   "
                f"{ratio:5.2f}   {verdict(ratio < RATIO_TARGET)}"
            )
        for title, table in (
            ("(information: a whole tick, every chained run; it queues 1% of the table)", ticks),
            (f"(information: limit {args.same_batch} at both sizes: the table's size alone)", same),
        ):
            print(title)
            for name in dispatchers:
                small, large = table[args.small][name], table[args.large][name]
                print(
                    f"{name:<14} {small.median * 1000:8.2f}ms {large.median * 1000:8.2f}ms   "
                    f"{large.median / small.median:5.2f}   "
                    f"({small.dispatched} and {large.dispatched} ids; "
                    f"{small.median / max(small.dispatched, 1) * 1e6:.0f} and "
                    f"{large.median / max(large.dispatched, 1) * 1e6:.0f} µs per id)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
