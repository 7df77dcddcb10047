"""The CVE-2024-7592 request: 20 Cookie headers of 8 KB of backslashes, against real servers.

On Python 3.11.7 this one unauthenticated request held a gunicorn sync worker until its timeout
(http.cookies' _unquote is quadratic in backslashes). Here it is sent to gunicorn (the
Procfile's web process, production settings) and to uvicorn (the relay process), on the
interpreter this script runs on, with the app's Cookie-size bound on (the default) and, with
`--no-limit`, with it raised out of the way so only the interpreter's parser is timed.

Target: the 20-cookie request answers in under 100 ms (p50 and max printed per path), next to
an ordinary request to the same path.

    .venv/bin/python bench/cookies.py [--requests 20] [--no-limit]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import _common
from _common import header, verdict
from checkout import gunicorn

TARGET_MS = 100.0
ATTACK = [f"c{i}=" + "\\" * 8000 for i in range(20)]


@contextlib.contextmanager
def uvicorn(env: dict[str, str], *, port: int) -> Iterator[Any]:
    command = [
        sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
    ]  # fmt: skip
    process, log_path = _common.start_logged(command, env, "uvicorn")
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start; log: {log_path}")
            time.sleep(0.2)
        print(f"uvicorn pid {process.pid}, http://127.0.0.1:{port}")
        yield process
    finally:
        _common.stop_logged(process, log_path, what="uvicorn")


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/livez")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    return False


def one(port: int, method: str, path: str, cookies: list[str]) -> tuple[float, int]:
    """One request on a fresh connection with these Cookie headers: (ms, status)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.putrequest(method, path)
    for cookie in cookies:
        conn.putheader("Cookie", cookie)
    body = b"{}" if method == "POST" else b""
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    conn.close()
    return elapsed, response.status


def measure(port: int, method: str, path: str, cookies: list[str], count: int) -> tuple[str, float]:
    results = [one(port, method, path, cookies) for _ in range(count)]
    times = sorted(ms for ms, _ in results)
    statuses = sorted({status for _, status in results})
    return (
        f"p50 {statistics.median(times):7.1f} ms  max {times[-1]:7.1f} ms  "
        f"status {','.join(map(str, statuses))}"
    ), times[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="requests per path")
    parser.add_argument(
        "--no-limit", action="store_true", help="raise COOKIE_MAX_BYTES: time the parser alone"
    )
    args = parser.parse_args()
    extra = {"COOKIE_MAX_BYTES": str(10**7)} if args.no_limit else {}
    header(f"20 Cookie headers of 8 KB of backslashes ({_common.machine()})")
    worst = 0.0
    with _common.bench_database("cookies", extra_env=extra) as env:
        # DEBUG is off: pages need the collected static files' manifest.
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
            cwd=_common.REPO,
            env={**os.environ, **env},
            check=True,
        )
        web_port, relay_port = _common.free_port(), _common.free_port()
        with gunicorn(env, workers=1, port=web_port), uvicorn(env, port=relay_port):
            print(f"Cookie bound: {'raised (--no-limit)' if args.no_limit else 'on (8 KiB)'}")
            for server, port, method, path in [
                ("gunicorn", web_port, "GET", "/login/"),
                ("gunicorn", web_port, "POST", "/api/v1/pools/x/checkout"),
                ("uvicorn ", relay_port, "POST", "/relay/anthropic/v1/messages"),
            ]:
                plain, _ = measure(port, method, path, ["sessionid=abc; csrftoken=def"], 5)
                attack, slowest = measure(port, method, path, ATTACK, args.requests)
                worst = max(worst, slowest)
                print(f"{server} {method:4} {path:32} ordinary: {plain}")
                print(f"{server} {method:4} {path:32} 20 cookies: {attack}")
    print(f"slowest 20-cookie request {worst:.1f} ms (target < {TARGET_MS:.0f}): "
          f"{verdict(worst < TARGET_MS)}")  # fmt: skip


if __name__ == "__main__":
    main()
