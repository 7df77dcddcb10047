"""Shared set-up for the benchmarks: a throwaway PostgreSQL database, Django in-process, fast rows.

Every benchmark uses its own database `accounts_pool_bench_<name>` on 127.0.0.1:5432, created
here, migrated with `manage.py migrate` and dropped at the end (also on Ctrl-C or SIGTERM), so
dev and test data are never touched. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
REDIS_URL = os.environ.get("BENCH_BROKER_URL") or "redis://127.0.0.1:6379/14"
T = TypeVar("T")


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    )


def _drop(dbname: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_database(
    name: str, extra_env: dict[str, str] | None = None, conn_max_age: int | None = None
) -> Iterator[dict[str, str]]:
    """Create `accounts_pool_bench_<name>`, point Django at it, migrate it, set Django up; drop
    the database and the temporary var dir afterwards. `extra_env` (e.g. the simulator's
    ANTHROPIC_* URLs) is set too; `conn_max_age` sets DB_CONN_MAX_AGE (seconds a database
    connection is kept; None keeps the settings' default, 60; 0 closes it after each request
    or task). BENCH_DATABASE names another database to use (and drop) instead, so that two
    people running the same benchmark on one server do not drop each other's. Yields the
    environment it set (for subprocesses such as gunicorn)."""
    dbname = os.environ.get("BENCH_DATABASE") or f"accounts_pool_bench_{name}"
    if dbname in ("accounts_pool", "postgres", "template0", "template1"):
        raise SystemExit(f"BENCH_DATABASE={dbname}: refusing to drop a shared database")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    _drop(dbname)
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    var_dir = tempfile.mkdtemp(prefix=f"accounts-pool-bench-{name}-")
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ACCOUNTS_POOL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "CELERY_BROKER_URL": REDIS_URL,
        "ACCOUNTS_POOL_VAR_DIR": var_dir,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    if conn_max_age is not None:
        env["DB_CONN_MAX_AGE"] = str(conn_max_age)  # settings.py reads it, not the URL's option
    else:
        os.environ.pop("DB_CONN_MAX_AGE", None)  # the settings' default, whatever the shell says
    os.environ.update(env)
    try:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=REPO,
            env={**os.environ, **env},
            check=True,
        )
        import django

        django.setup()
        print(f"database {dbname} created and migrated in {time.perf_counter() - started:.1f} s")
        yield env
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        try:
            _drop(dbname)
            print(f"database {dbname} dropped")
        except Exception as exc:  # report, never hide the benchmark's own error
            print(f"could not drop {dbname}: {exc}", file=sys.stderr)
        shutil.rmtree(var_dir, ignore_errors=True)


# --- rows --------------------------------------------------------------------------------------


def new_refresh_token() -> str:
    return "sk-ant-ort01-bench-" + secrets.token_urlsafe(24)


def new_access_token() -> str:
    return "sk-ant-oat01-bench-" + secrets.token_urlsafe(24)


def make_team(slug: str = "bench") -> tuple[Any, Any]:
    """A team and its lead (the creator of consumer keys)."""
    from django.contrib.auth.models import User

    from accounts_pool.models import Membership, Team

    team = Team.objects.create(name=slug.title(), slug=slug)
    user = User.objects.create_user("bench-lead", password=secrets.token_urlsafe(16))
    Membership.objects.create(team=team, user=user, role=Membership.Role.LEAD)
    return team, user


def make_pools(team: Any, count: int, prefix: str = "pool") -> list[Any]:
    from accounts_pool.models import Pool

    pools = [
        Pool(team=team, name=f"{prefix} {i:05d}", slug=f"{prefix}-{i:05d}") for i in range(count)
    ]
    return Pool.objects.bulk_create(pools, batch_size=1000)


def oauth_account(
    pool: Any,
    label: str,
    *,
    expires_at: datetime,
    refresh_token: str | None = None,
    access_token: str | None = None,
    **fields: Any,
) -> Any:
    """An unsaved OAuth account (for bulk_create: the encrypted fields encrypt on insert)."""
    from accounts_pool.crypto import fingerprint
    from accounts_pool.models import Account

    refresh = refresh_token or new_refresh_token()
    return Account(
        pool=pool,
        label=label,
        kind=Account.Kind.OAUTH,
        access_token=access_token or new_access_token(),
        access_expires_at=expires_at,
        refresh_token=refresh,
        refresh_token_fingerprint=fingerprint(refresh),
        credential_version=1,
        **fields,
    )


def bulk_insert(model: Any, rows: Sequence[Any], *, chunk: int = 5000, what: str = "") -> list[Any]:
    """bulk_create in chunks, printing progress for big loads."""
    saved: list[Any] = []
    started = time.perf_counter()
    for offset in range(0, len(rows), chunk):
        saved.extend(model.objects.bulk_create(rows[offset : offset + chunk], batch_size=chunk))
    if what:
        print(f"  {len(rows):>7,} {what} in {time.perf_counter() - started:.1f} s")
    return saved


def usable_windows(accounts: Sequence[Any], now: datetime, seed: int = 7) -> list[Any]:
    """A five_hour and a seven_day window per account, both well below 100%."""
    import random

    from accounts_pool.models import QuotaWindow

    rng = random.Random(seed)
    windows = []
    for account in accounts:
        windows.append(
            QuotaWindow(
                account=account,
                key="five_hour",
                label="5-hour",
                utilization=round(rng.uniform(5, 60), 1),
                resets_at=now + timedelta(minutes=rng.randint(30, 290)),
                checked_at=now,
            )
        )
        windows.append(
            QuotaWindow(
                account=account,
                key="seven_day",
                label="7-day",
                utilization=round(rng.uniform(10, 70), 1),
                resets_at=now + timedelta(hours=rng.randint(12, 160)),
                checked_at=now,
            )
        )
    return windows


def analyze(*tables: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {table}")


# --- figures -----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def timed(function: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def background_load(seconds: float = 1.0) -> float:
    """Share of the machine's CPUs busy while the benchmark does nothing (other people's work:
    figures taken on a busy machine are slower)."""
    busy, total = machine_ticks()
    time.sleep(seconds)
    busy2, total2 = machine_ticks()
    return (busy2 - busy) / max(total2 - total, 1)


def _stat(pid: int) -> tuple[str, list[str]]:
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    return text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()


def postmaster_pid() -> int | None:
    """The PostgreSQL server's main process on this machine (a `postgres` whose parent is not)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            comm, parts = _stat(int(entry))
            if comm == "postgres" and _stat(int(parts[1]))[0] != "postgres":
                return int(entry)
    return None


def process_tree_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants, plus the children it
    already reaped (a PostgreSQL backend that served one connection and exited), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            _, parts = _stat(current)
            total += (int(parts[11]) + int(parts[12])) / ticks
            if current == pid:
                total += (int(parts[13]) + int(parts[14])) / ticks
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending.extend(int(c) for c in children.read().split())
    return total


def header(title: str) -> None:
    print()
    print(f"== {title} " + "=" * max(0, 90 - len(title)))


def machine() -> str:
    import platform

    return f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores"


def start_logged(
    command: list[str], env: dict[str, str], prefix: str, cwd: Path = REPO
) -> tuple[Any, str]:
    """Start a server process of this repo (or of another checkout of it, `cwd`) in its own
    session, its output in a temporary log; returns the process and the log's path."""
    fd, log_path = tempfile.mkstemp(prefix=f"bench-{prefix}-", suffix=".log")
    with open(fd, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log_path


def stop_logged(process: Any, log_path: str, *, what: str, grace: float = 20) -> None:
    """SIGTERM (a warm shutdown), SIGKILL to its session after `grace` seconds; keep the log
    only if it shows a traceback or an error, and say where it is."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with open(log_path, errors="replace") as log_file:
        problems = [line for line in log_file if "Traceback" in line or "ERROR" in line]
    if problems:
        print(f"  {what} log has {len(problems)} errors: {log_path}")
    else:
        os.unlink(log_path)
