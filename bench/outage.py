"""Outages: how long /healthz and checkout take, and what they answer, when the database or the
broker is refused (nothing listens) or blackholed (a socket that accepts and never answers).

gunicorn serves the production settings (2 sync workers) once per scenario, its DATABASE_URL or
CELERY_BROKER_URL pointed at the outage; one pool with a usable account and a consumer key.
Each request is timed from this process; median and max of --repeat runs.

Targets: /healthz answers within HEALTHZ_TIMEOUT (1 s) + 0.5 s in every scenario; checkout
answers 503 with Retry-After within DB_CONNECT_TIMEOUT (3 s) + 1 s when the database is down.

    .venv/bin/python bench/outage.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import socket
import statistics
import time
from collections.abc import Iterator
from datetime import timedelta

import _common
from _common import header, verdict
from checkout import gunicorn

HEALTHZ_BOUND = 1.5
CHECKOUT_BOUND = 4.0


@contextlib.contextmanager
def _blackhole() -> Iterator[int]:
    """A port whose kernel completes every handshake (the listen backlog) and nobody reads."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(128)
        yield hole.getsockname()[1]


def _request(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = b"{}" if method == "POST" else None
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    text = response.read().decode(errors="replace")
    took = time.perf_counter() - started
    retry = response.getheader("Retry-After")
    conn.close()
    summary = text.strip().replace("\n", " ")[:110]
    return took, response.status, f"{summary} (Retry-After {retry})" if retry else summary


def _setup() -> str:
    from django.utils import timezone

    from accounts_pool.models import Account, Membership, Pool, Team
    from accounts_pool.services.keys import consumer_key_create

    now = timezone.now()
    team = Team.objects.create(name="Outage", slug="outage")
    pool = Pool.objects.create(team=team, name="Outage", slug="outage")
    account = Account.objects.create(
        pool=pool,
        label="a",
        access_token=_common.new_access_token(),
        refresh_token=_common.new_refresh_token(),
        refresh_token_fingerprint="x",
        access_expires_at=now + timedelta(hours=7),
        quota_checked_at=now,
    )
    account.quota_windows.create(key="five_hour", label="5-hour", utilization=5, checked_at=now)
    from django.contrib.auth.models import User

    user = User.objects.create_user("outage")
    Membership.objects.create(team=team, user=user, role="lead")
    return consumer_key_create(pool=pool, name="bench", created_by=user)[1]


def _scenario(name: str, env: dict[str, str], key: str, repeat: int) -> list[str]:
    port = _common.free_port()
    lines = []
    with gunicorn(env, workers=2, port=port):
        for label, method, path, headers, bound in (
            ("/healthz", "GET", "/healthz", {}, HEALTHZ_BOUND),
            (
                "checkout",
                "POST",
                "/api/v1/pools/outage/checkout",
                {"Authorization": f"Bearer {key}"},
                CHECKOUT_BOUND,
            ),
        ):
            runs = [_request(port, method, path, headers) for _ in range(repeat)]
            times = [t for t, _, _ in runs]
            worst = max(times)
            lines.append(
                f"{name:<20} {label:<9} median {statistics.median(times):6.2f} s  max "
                f"{worst:6.2f} s  {verdict(worst <= bound)} (≤ {bound} s)  HTTP {runs[-1][1]}: "
                f"{runs[-1][2]}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    header("outages: /healthz and checkout with the database or the broker down")
    with _common.bench_database("outage") as env:
        key = _setup()
        refused = f"127.0.0.1:{_common.free_port()}"
        lines: list[str] = []
        with _blackhole() as hole:
            database = env["DATABASE_URL"].rsplit("/", 1)[1]
            scenarios = {
                "all up": {},
                "database refused": {"DATABASE_URL": f"postgres://postgres@{refused}/{database}"},
                "database blackholed": {
                    "DATABASE_URL": f"postgres://postgres@127.0.0.1:{hole}/{database}"
                },
                "broker refused": {"CELERY_BROKER_URL": f"redis://{refused}/0"},
                "broker blackholed": {"CELERY_BROKER_URL": f"redis://127.0.0.1:{hole}/0"},
            }
            for name, changes in scenarios.items():
                lines += _scenario(name, {**env, **changes}, key, args.repeat)
        print()
        for line in lines:
            print(line)
        print(json.dumps({"scenarios": len(scenarios), "repeat": args.repeat}))


if __name__ == "__main__":
    main()
