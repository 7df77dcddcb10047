"""Redis killed ten times under a refresh load: 4 workers and beat (run by accounts_pool.supervise,
as scripts/run runs them) on PostgreSQL, 200 accounts whose tokens are due every few seconds,
against the simulated provider (a real HTTP server the workers call; it knows every refresh
token it ever issued).

After each return of the broker refreshes resume within one beat tick plus 30 s; in the end no
rotation is lost (every account holds the provider's current refresh token), no refresh token
was sent twice, no credential version was refreshed twice, and every worker answers a ping.
Each return's delay and the workers' restarts are printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from random import Random

import pytest
import redis
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from accounts_pool.crypto import fingerprint
from accounts_pool.models import Account, QuotaWindow
from accounts_pool.services.checkout import NoUsableAccount, checkout_create
from accounts_pool.services.keys import consumer_key_create
from accounts_pool.services.refresh import account_refresh
from accounts_pool.services.reports import report_record
from simulator import SimulatedAnthropic

from . import processes
from .test_scale_and_faults import _point_at

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ACCOUNTS = 200
WORKERS = 4
KILLS = 10
DOWN_SECONDS = 2.0
BEAT_SECONDS = 2
LEAD = 60  # the pool's refresh lead (s)
DUE_EVERY = 25  # a fresh token is due again this many seconds after its refresh
RESUME_LIMIT = BEAT_SECONDS + 30
RESUMED = 5  # refreshes stored after the broker's return that count as resumed


class RedisServer:
    """Our own redis-server (never the shared one), killed and started again on one port."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.process = processes.start([*args, "--appendonly", "no"], dict(os.environ), self.log)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        processes.wait_for(self._pings(client), 10, "redis-server", self.log)

    @staticmethod
    def _pings(client: redis.Redis) -> object:
        def check() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        return check

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            processes.stop(self.process)


@contextmanager
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(processes.free_port(), tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _accounts(pool, sim: SimulatedAnthropic) -> dict[int, str]:
    """200 accounts due over the next DUE_EVERY seconds, each due again DUE_EVERY s after its
    refresh. Returns simulator uuid by account id."""
    pool.refresh_lead = timedelta(seconds=LEAD)
    pool.save(update_fields=["refresh_lead"])
    now = timezone.now()
    spread = Random(16)
    sims = [sim.add_account(access_lifetime=LEAD + DUE_EVERY) for _ in range(ACCOUNTS)]
    rows = Account.objects.bulk_create(
        Account(
            pool=pool,
            label=f"soak {n}",
            access_token=s.access_token,
            access_expires_at=now + timedelta(seconds=LEAD + spread.uniform(0, DUE_EVERY)),
            refresh_token=s.refresh_token,
            refresh_token_fingerprint=fingerprint(s.refresh_token),
            provider_account_uuid=s.uuid,
            credential_version=1,
            quota_checked_at=now,
            policy_checked_at=now,
        )
        for n, s in enumerate(sims)
    )
    QuotaWindow.objects.bulk_create(
        QuotaWindow(
            account=a,
            key="five_hour",
            label="5-hour",
            utilization=10.0,
            resets_at=now + timedelta(hours=3),
            checked_at=now,
        )
        for a in rows
    )
    return {a.pk: a.provider_account_uuid for a in rows}


def _resumed(logs: list[Path]) -> Callable[[], bool]:
    """Whether the workers finished RESUMED refreshes from now on (their logs say; the racing
    tool's own refreshes do not count, they need no broker)."""
    offsets = [len(_read(w)) for w in logs]

    def check() -> bool:
        done = sum(_read(w)[n:].count(": 'refreshed'") for w, n in zip(logs, offsets, strict=True))
        return done >= RESUMED

    return check


def _supervised(tmp_path: Path, sim: SimulatedAnthropic, broker: RedisServer):
    worker = processes.celery_worker("--pool", "threads", "--concurrency", "4")
    beat = [
        str(processes.VENV_BIN / "celery"),
        *("-A", "config", "beat", "--loglevel", "INFO", "--pidfile="),
        *("--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
    ]
    specs = [
        f"w{n}="
        + subprocess.list2cmdline([*worker, "--hostname", f"w{n}@%h", "--logfile", str(path)])
        for n, path in enumerate(_worker_logs(tmp_path))
    ]
    specs.append("beat=" + subprocess.list2cmdline(beat))
    env = processes.child_env(
        **sim.env(),
        CELERY_BROKER_URL=broker.url,
        ACCOUNTS_POOL_BEAT_SECONDS=str(BEAT_SECONDS),
        ACCOUNTS_POOL_CLAIM_SECONDS="15",  # a task lost with the broker is queued again after it
        ANTHROPIC_HTTP_TIMEOUT="5",
    )
    command = [sys.executable, "-m", "accounts_pool.supervise", "--grace", "20", *specs]
    log = tmp_path / "supervised.log"
    return processes.start(command, env, log), log


def _worker_logs(tmp_path: Path) -> list[Path]:
    return [tmp_path / f"w{n}.log" for n in range(WORKERS)]


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _working_since(logs: list[Path], offsets: list[int]) -> bool:
    """Every worker finished a task after its log was `offsets` long (all four serve)."""
    return all(
        "succeeded in" in _read(log)[offset:] for log, offset in zip(logs, offsets, strict=True)
    )


class Tool(threading.Thread):
    """A tool in this process racing the workers for the same accounts: it checks out, reports
    a 401 on what it got (the account is then due for the cycle), and every other time
    refreshes at once as the relay does after an upstream 401 (single flight with the workers,
    pinned to the version it was handed)."""

    def __init__(self, key) -> None:
        super().__init__(daemon=True)
        self.key = key
        self.done = threading.Event()
        self.counts: Counter[str] = Counter()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                try:
                    handed = checkout_create(key_hash=self.key.key_hash)
                except NoUsableAccount:
                    self.counts["none_usable"] += 1
                    time.sleep(0.2)
                    continue
                version = handed.account.credential_version
                outcome = report_record(checkout=handed.checkout, key=self.key, status=401)
                self.counts[f"report_{outcome.outcome}"] += 1
                if self.counts["report_access_rejected"] % 2:
                    refreshed = account_refresh(
                        account_id=handed.account.pk,
                        access_rejected_version=version,
                        only_version=version,
                        asked_by_401=True,
                        wait=True,
                        actor=self.key.actor,
                    )
                    self.counts[f"refresh_{refreshed.outcome}"] += 1
                time.sleep(0.05)
        finally:
            connection.close()


def test_refreshes_resume_after_each_broker_return_and_no_rotation_is_lost(
    pool, alice, tmp_path, settings
):
    processes.beat_entries()
    with SimulatedAnthropic(latency=0.005) as sim, own_redis(tmp_path) as broker:
        _point_at(settings, sim)
        uuids = _accounts(pool, sim)
        supervisor, log = _supervised(tmp_path, sim, broker)
        resumes: list[float] = []
        tool = Tool(consumer_key_create(pool=pool, name="racing tool", created_by=alice)[0])
        try:
            logs = _worker_logs(tmp_path)
            processes.wait_for(lambda: all("ready." in _read(w) for w in logs), 90, "4", log)
            tool.start()
            processes.wait_for(_resumed(logs), 60, "load", log)
            for _ in range(KILLS):
                # Under load: refreshes flow before the first kill, and resumed after each return.
                broker.kill()
                time.sleep(DOWN_SECONDS)
                broker.start()
                back, resumed = time.monotonic(), _resumed(logs)
                processes.wait_for(resumed, RESUME_LIMIT, "refreshes after the return", log)
                resumes.append(time.monotonic() - back)
            # No worker left dead: each one (the same or restarted) serves after the last return.
            offsets = [len(_read(w)) for w in logs]
            alive = processes.wait_for(
                lambda: _working_since(logs, offsets), 60, "every worker at work", log
            )
        finally:
            tool.done.set()
            tool.join(timeout=30)
            supervisor.send_signal(signal.SIGTERM)  # graceful: refreshes in hand finish
            try:
                supervisor.wait(timeout=40)
            finally:
                processes.stop(supervisor)
        stats = sim.stats()
        current = {a.uuid: a.refresh_token for a in sim.accounts()}
    text = log.read_text()
    restarts = text.count(" exited with ")
    print(
        f"\nbroker returns: {len(resumes)}; refreshes resumed after "
        f"{', '.join(f'{r:.1f}' for r in resumes)} s (limit {RESUME_LIMIT} s); "
        f"worker/beat restarts: {restarts}; provider refreshes: {sum(stats['refreshes'].values())}"
        f"; the racing tool: {dict(tool.counts)}"
    )
    assert len(resumes) == KILLS
    assert max(resumes) <= RESUME_LIMIT
    assert alive
    rows = Account.objects.values_list("pk", "refresh_token", "credential_version")
    lost = [pk for pk, token, _ in rows if token != current[uuids[pk]]]
    doubled = [pk for pk, _, version in rows if stats["refreshes"].get(uuids[pk], 0) != version - 1]
    assert lost == []  # every rotation the provider made is stored
    assert doubled == []  # one provider refresh per credential version
    assert (stats["reused"], stats["invalid_grant"]) == (0, 0)  # no refresh token sent twice
    assert Account.objects.filter(refresh_sent_at__isnull=False).count() == 0
    latest = Account.objects.aggregate(latest=Max("last_refreshed_at"))["latest"]
    assert latest is not None
    assert sum(stats["refreshes"].values()) >= ACCOUNTS
    assert tool.counts["refresh_refreshed"] > 0  # the tool's own refreshes raced the workers


def _post(url: str, secret: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), {"raw": error.read().decode(errors="replace")}
    except OSError:  # not listening yet
        return 0, {}


def test_a_401_report_with_the_broker_down_is_recorded_once_and_answers_success(
    pool, alice, tmp_path
):
    """gunicorn on our own redis-server, killed: the report is kept and answers 200 with a note
    (it once answered 500 after recording, so a retrying tool recorded it twice)."""
    from accounts_pool.models import AccountEvent
    from accounts_pool.services.keys import consumer_key_create

    from .conftest import usable_account

    account = usable_account(pool, "main")
    _, secret = consumer_key_create(pool=pool, name="tool", created_by=alice)
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    with own_redis(tmp_path) as broker:
        env = processes.child_env(CELERY_BROKER_URL=broker.url, ALLOWED_HOSTS="127.0.0.1")
        web_log = tmp_path / "web.log"
        gunicorn = [str(processes.VENV_BIN / "gunicorn"), "config.wsgi:application"]
        web = processes.start([*gunicorn, "--bind", f"127.0.0.1:{port}"], env, web_log)
        try:
            processes.wait_for(
                lambda: _post(f"{base}/pools/claude/checkout", secret, {})[0] == 200,
                60,
                "web",
                web_log,
            )
            status, checkout = _post(f"{base}/pools/claude/checkout", secret, {})
            assert status == 200, checkout
            broker.kill()
            report = f"{base}/checkouts/{checkout['checkout_id']}/report"
            started = time.monotonic()
            first = _post(report, secret, {"status": 401})
            took = time.monotonic() - started
            retried = _post(report, secret, {"status": 401})
        finally:
            processes.stop(web)
    print(f"\na 401 report with the broker down answered in {took * 1000:.0f} ms")
    assert first[0] == 200, first
    assert (first[1]["outcome"], first[1]["queued"]) == ("access_rejected", [])
    assert "cycle will take it" in first[1]["note"]
    assert retried[0] == 200, retried
    assert retried[1]["duplicate"] is True
    assert AccountEvent.objects.filter(account=account, operation="report").count() == 1
    account.refresh_from_db()
    assert account.verdict(timezone.now()).first_reason.code == "token_expired"
