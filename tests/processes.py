"""Helpers for tests that start real processes against the test database and broker."""

from __future__ import annotations

import importlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection
from kombu.exceptions import ChannelError

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """A DATABASE_URL that reaches the database this test run created."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    user = quote(db.get("USER") or "")
    password = quote(db.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def beat_entries() -> None:
    """The beat entries the migrations create, for a beat a test starts: a transactional test's
    flush may have removed them. Idempotent: entries that are there stay as they are."""
    from django.apps import apps

    for module, create in (
        ("0002_beat_schedule", "create_entries"),  # the dispatchers, the history's pruning
        ("0011_notifications", "create_entries"),  # the notification tick, the digest
        ("0013_credential_unreadable", "create_entry"),  # the daily secrets check
    ):
        migration = importlib.import_module(f"accounts_pool.migrations.{module}")
        getattr(migration, create)(apps, None)


# Beat's interval in the tests' processes: a tick every few seconds instead of every minute.
BEAT_SECONDS = "2"


def child_env(*, queue: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a process of this test: its database, the broker, a beat that ticks in
    seconds, and `queue`, the test's own (own_queue), for the tasks it sends and the ones its
    workers take. A process that uses the broker must be given one."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.test_settings",
        DATABASE_URL=test_database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        ACCOUNTS_POOL_BEAT_SECONDS=BEAT_SECONDS,
        PYTHONUNBUFFERED="1",
    )
    if queue is not None:
        env["CELERY_TASK_DEFAULT_QUEUE"] = queue
    env.update(extra)
    return env


@contextmanager
def own_queue() -> Iterator[str]:
    """A queue no other test and no later run uses, emptied afterwards. A worker killed with a
    message in hand leaves it unacknowledged (Redis hands it out again after an hour): only a
    worker of this queue could take it, and none ever will."""
    name = f"tests-{secrets.token_hex(6)}"
    try:
        yield name
    finally:
        queue_drop(name)


@contextmanager
def _channel() -> Iterator[Any]:
    from config.celery import app

    with app.connection_for_write() as conn:
        yield conn.default_channel


def queue_size(name: str) -> int:
    """Messages waiting in the broker's queue `name`, without declaring it."""
    with _channel() as channel:
        try:
            found = channel.queue_declare(queue=name, passive=True)
        except ChannelError:  # no such queue: nothing waits in it
            return 0
        return int(found.message_count)


def unacked_on(name: str) -> int:
    """Redis only: messages a worker took from queue `name` and never acknowledged."""
    return len(_unacked(name))


def queue_drop(name: str) -> None:
    """Empty and delete queue `name`, and the bindings of its exchange (Celery names the exchange
    after the default queue); on Redis also its unacknowledged messages."""
    with _channel() as channel:
        channel.queue_purge(name)
        channel.queue_delete(name)
    if settings.CELERY_BROKER_URL.startswith("redis"):
        client = _redis()
        for tag in _unacked(name):
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
        client.delete(f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")
    control = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get("control_folder")
    if control:  # the file broker keeps each exchange's bindings in a file
        (Path(control) / f"{name}.exchange").unlink(missing_ok=True)


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def _unacked(name: str) -> list[bytes]:
    """Delivery tags of Redis's unacknowledged messages routed to `name` (kombu keeps each as
    [message, exchange, routing key] in the hash "unacked"); none on other brokers."""
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        return []
    held = _redis().hgetall("unacked")
    return [tag for tag, raw in held.items() if json.loads(raw)[2] == name]


def celery_worker(*options: str) -> list[str]:
    """The command of a Celery worker of this project (no gossip or mingle: tests start and
    stop workers quickly), with `options` such as --concurrency or --purge."""
    return [
        str(VENV_BIN / "celery"),
        "-A",
        "config",
        "worker",
        "--loglevel",
        "INFO",
        *options,
        "--without-gossip",
        "--without-mingle",
    ]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def wait_for(
    check: Callable[[], object], timeout: float, what: str, log: Path | None = None
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
