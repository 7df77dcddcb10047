"""Notifications: does the evaluation that beat runs every minute stay cheap for a big team?

One team with a channel, `--pools` pools of `--per-pool` OAuth accounts with usable windows.
Runs `services.notifications.notifications_evaluate` (what `notify_tick` runs) three ways:
the first evaluation after 1% of the accounts turned needs_relogin (it creates a subject row
and a delivery for each), then steady evaluations where nothing changed (median of `--runs`),
and prints the wall time, the queries per evaluation, and the deliveries made (expected: one
per changed account, then none). Target: a steady evaluation of 10,000 accounts well under the
one-minute tick (<= 5 s) with a number of queries that does not grow with the accounts.

    .venv/bin/python bench/notify.py [--pools 10] [--per-pool 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
from datetime import datetime, timedelta

import _common
from _common import header, verdict

STEADY_TARGET_SECONDS = 5.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument("--per-pool", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest calls")
    args = parser.parse_args()
    with _common.bench_database("notify", {"ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS": "true"}):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext
        from django.utils import timezone

        from accounts_pool.models import Account, Delivery, QuotaWindow
        from accounts_pool.services.channels import channel_create
        from accounts_pool.services.notifications import notifications_evaluate

        now = timezone.now()
        team, lead = _common.make_team()
        channel_create(
            team=team,
            name="bench",
            channel_type="webhook",
            target="http://127.0.0.1:9/",
            kinds=["needs_relogin", "pool_dry", "pool_low"],
            created_by=lead,
        )
        total = args.pools * args.per_pool
        rows = []
        for pool in _common.make_pools(team, args.pools):
            rows += [
                _common.oauth_account(
                    pool,
                    f"a{n}",
                    expires_at=now + timedelta(hours=7),
                    quota_checked_at=now,
                    policy_checked_at=now,
                )
                for n in range(args.per_pool)
            ]
        accounts = _common.bulk_insert(Account, rows, what="accounts")
        _common.bulk_insert(QuotaWindow, _common.usable_windows(accounts, now), what="windows")
        changed = accounts[::100]
        for account in changed:
            Account.objects.filter(pk=account.pk).update(
                relogin_required_for=account.refresh_token_fingerprint
            )
        _common.analyze("accounts_pool_account", "accounts_pool_quotawindow")

        def evaluate(at: datetime) -> tuple[float, int, int]:
            with CaptureQueriesContext(connection) as queries:
                seconds, made = _common.timed(lambda: notifications_evaluate(now=at))
            return seconds, made, len(queries)

        header(f"notification evaluation, {total:,} accounts in {args.pools} pools")
        first = evaluate(now)
        print(f"  first (1% changed): {first[0]:.2f} s, {first[2]} queries, {first[1]} messages")
        steady = [evaluate(now + timedelta(minutes=n + 1)) for n in range(args.runs)]
        median = statistics.median(s for s, _, _ in steady)
        queries = max(q for _, _, q in steady)
        made = sum(m for _, m, _ in steady)
        print(f"  steady: median {median:.2f} s, {queries} queries, {made} messages")
        print(f"  per account: {median / total * 1e6:.0f} µs")
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(notifications_evaluate, now=now + timedelta(hours=1))
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
        ok = first[1] == len(changed) and made == 0 and median <= STEADY_TARGET_SECONDS
        print(
            f"  {verdict(ok)}: one message per change, none when steady, "
            f"steady <= {STEADY_TARGET_SECONDS} s"
        )
        assert Delivery.objects.count() == len(changed)
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
