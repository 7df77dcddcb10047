"""The pool page at 500 accounts: server time, queries and HTML bytes per account.

500 OAuth accounts with two quota windows each, a tenth of them in a cooldown and a tenth with
an expired token (so reasons, untils and filters have work to do). Requests go through Django's
test client in-process (middleware, session, template rendering: what the server does for a
request, minus the network), as the pool's lead, 5 warm-up requests then 30 timed, for the full
page, the 30-second refresh fragment, and a filtered, searched, sorted view.

Targets (issue 13): under 400 ms server time (median), HTML under 1 KiB per account, and the
same number of queries at 10 accounts as at 500.

    .venv/bin/python bench/pool_page.py [--accounts 500] [--requests 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta
from typing import Any

import _common
from _common import header, verdict

SERVER_MS_TARGET = 400.0
BYTES_PER_ACCOUNT_TARGET = 1024


def _fill(pool: Any, count: int, now: Any) -> None:
    from accounts_pool.models import Account, QuotaWindow

    rows = [
        _common.oauth_account(
            pool,
            f"account {n:04d}",
            email=f"person{n:04d}@example.test",
            expires_at=now + (timedelta(minutes=-5) if n % 10 == 3 else timedelta(hours=6)),
            quota_checked_at=now,
            policy_checked_at=now,
            cooldown_until=now + timedelta(minutes=20) if n % 10 == 7 else None,
        )
        for n in range(count)
    ]
    accounts = _common.bulk_insert(Account, rows)
    _common.bulk_insert(QuotaWindow, _common.usable_windows(accounts, now))


def _measure(client: Any, url: str, requests: int) -> tuple[float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(5):
        client.get(url)
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    with CaptureQueriesContext(connection) as captured:
        size = len(client.get(url).content)
    return statistics.median(times), size, len(captured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="cProfile one full page")
    args = parser.parse_args()
    with _common.bench_database("pool_page"):
        from django.test import Client
        from django.utils import timezone

        from accounts_pool.models import Account

        now = timezone.now()
        team, lead = _common.make_team()
        small, big = _common.make_pools(team, 2)
        _fill(small, 10, now)
        _fill(big, args.accounts, now)
        _common.analyze("accounts_pool_account", "accounts_pool_quotawindow")
        from django.conf import settings
        from django.test import override_settings

        # Production settings: the allowed host, over HTTPS (no redirect to it); static URLs
        # without the collectstatic manifest (a bench database has no collected files).
        storages = {**settings.STORAGES}
        storages["staticfiles"] = {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        }
        override_settings(STORAGES=storages).enable()
        client = Client(HTTP_HOST="127.0.0.1")
        client.defaults["wsgi.url_scheme"] = "https"
        client.force_login(lead)
        header(f"pool page, {args.accounts} accounts ({_common.machine()})")
        views = {
            "full page": f"/pools/{big.slug}/",
            "refresh fragment": f"/pools/{big.slug}/rows/",
            "filtered view": f"/pools/{big.slug}/?status=usable&q=account&sort=-quota",
        }
        ok = True
        if args.profile:
            import cProfile
            import pstats

            client.get(views["full page"])  # imports and caches first: profile the steady state
            profiler = cProfile.Profile()
            profiler.runcall(client.get, views["full page"])
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        _, _, small_queries = _measure(client, f"/pools/{small.slug}/", 3)
        for name, url in views.items():
            median_ms, size, queries = _measure(client, url, args.requests)
            per_account = size / Account.objects.filter(pool=big).count()
            print(
                f"{name:<18} median {median_ms:6.1f} ms   {size / 1024:7.1f} KiB "
                f"({per_account:5.0f} B/account)   {queries} queries"
            )
            if name == "full page":
                ok &= median_ms < SERVER_MS_TARGET and per_account < BYTES_PER_ACCOUNT_TARGET
                ok &= queries == small_queries
                targets = f"< {SERVER_MS_TARGET:.0f} ms, < {BYTES_PER_ACCOUNT_TARGET} B/account"
                print(f"  targets: {targets}, as many queries as at 10 ({small_queries}): ", end="")
                print(verdict(ok))


if __name__ == "__main__":
    main()
