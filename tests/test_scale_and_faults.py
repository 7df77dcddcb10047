"""A deployment under load, faults and crashes, against the simulated provider: several worker
processes on the configured broker, single-use rotating refresh tokens, injected faults, and a
worker killed in the middle of a refresh."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts_pool.crypto import fingerprint
from accounts_pool.models import Account, AccountEvent, QuotaWindow
from accounts_pool.services.checkout import checkout_create
from accounts_pool.services.cycle import cycle_run
from accounts_pool.services.keys import consumer_key_create
from accounts_pool.tasks import dispatch_token_refresh_task, refresh_account
from simulator import Fault, SimAccount, SimulatedAnthropic

from . import processes

ACCOUNTS = 1000
WORKERS = 4
DEFAULT_QUEUE = "celery"  # Celery's, which any worker started without a queue of its own takes


def _point_at(settings, sim: SimulatedAnthropic, timeout: float = 5.0) -> None:
    for name, value in sim.env().items():
        setattr(settings, name, value)
    settings.ANTHROPIC_HTTP_TIMEOUT = timeout


def _accounts_from(pool, sim_accounts, *, expires_in: timedelta) -> dict[int, SimAccount]:
    now = timezone.now()
    rows = Account.objects.bulk_create(
        Account(
            pool=pool,
            label=f"sim {n}",
            access_token=s.access_token,
            access_expires_at=now + expires_in,
            refresh_token=s.refresh_token,
            refresh_token_fingerprint=fingerprint(s.refresh_token),
            provider_account_uuid=s.uuid,
            credential_version=1,
            quota_checked_at=now,
        )
        for n, s in enumerate(sim_accounts)
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
    by_uuid = {s.uuid: s for s in sim_accounts}
    return {a.pk: by_uuid[a.provider_account_uuid] for a in rows}


def _workers(sim, tmp_path, count: int, queue: str, **env: str) -> list:
    started = []
    for n in range(count):
        log = tmp_path / f"worker-{n}.log"
        args = processes.celery_worker("--concurrency", "4", "--hostname", f"w{n}@%h")
        child = processes.child_env(queue=queue, **sim.env(), **env)
        started.append((processes.start(args, child, log), log))
    for _, log in started:
        processes.wait_for(_ready(log), 60, "a worker", log)
    return started


def _ready(log):
    return lambda: "ready." in log.read_text()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_workers_and_repeated_dispatches_refresh_every_account_exactly_once(
    pool, alice, tmp_path, settings
):
    with SimulatedAnthropic(latency=0.02) as sim, processes.own_queue() as queue:
        _point_at(settings, sim)
        by_id = _accounts_from(pool, sim.seed(ACCOUNTS), expires_in=timedelta(minutes=3))
        key, _ = consumer_key_create(pool=pool, name="load", created_by=alice)
        checkouts: list[tuple[int, str]] = []

        def check_out_while_the_workers_run() -> None:
            try:
                for _ in range(150):
                    result = checkout_create(key_hash=key.key_hash)
                    checkouts.append((result.account.pk, result.account.access_token))
            finally:
                connection.close()

        workers = _workers(sim, tmp_path, WORKERS, queue)
        try:
            tool = threading.Thread(target=check_out_while_the_workers_run)
            tool.start()
            for _ in range(5):  # beat ticking, and a second beat by mistake
                dispatch_token_refresh_task.apply_async(queue=queue)
                time.sleep(0.3)
            processes.wait_for(
                lambda: not Account.objects.filter(credential_version=1).exists(),
                120,
                "every account refreshed",
                workers[0][1],
            )
            tool.join(timeout=120)
            time.sleep(1)  # duplicates still queued find nothing due
        finally:
            for process, _ in workers:
                processes.stop(process)
        stats = sim.stats()
    assert len(stats["refreshes"]) == ACCOUNTS
    assert set(stats["refreshes"].values()) == {1}  # exactly once per due period
    assert (stats["invalid_grant"], stats["reused"]) == (0, 0)
    for account in Account.objects.all():  # zero lost rotations
        assert account.refresh_token == by_id[account.pk].refresh_token
        assert account.access_token == by_id[account.pk].access_token
        assert account.refresh_claimed_until is None
    assert len(checkouts) == 150
    for account_id, token in checkouts:  # never a burned token
        assert token == by_id[account_id].access_token
    assert not AccountEvent.objects.exists()  # no failure anywhere


FAULTS = {
    "timeout": (Fault.timeout(8), "network_error", timedelta(minutes=5)),
    "reset": (Fault.reset(), "network_error", timedelta(minutes=5)),
    "slow body": (Fault.slow_body(8), "network_error", timedelta(minutes=5)),
    "503": (Fault.status(503), "server_error", timedelta(minutes=5)),
    "429": (
        Fault.status(429, headers={"Retry-After": "120"}),
        "rate_limited",
        timedelta(seconds=120),
    ),
    "html 403": (Fault.html(403), "rejected", timedelta(minutes=30)),
    "malformed": (Fault.malformed_json(200), "malformed", timedelta(minutes=5)),
}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_each_injected_fault_is_classified_and_never_stalls_the_cycle(pool, settings):
    with SimulatedAnthropic() as sim:
        _point_at(settings, sim, timeout=1.0)
        names = [*FAULTS, "healthy 1", "healthy 2"]
        sim_accounts = [sim.add_account(email=f"{n}@sim.test") for n in range(len(names))]
        by_id = _accounts_from(pool, sim_accounts, expires_in=timedelta(minutes=10))
        label = {pk: names[n] for n, pk in enumerate(sorted(by_id))}
        for pk, name in label.items():
            Account.objects.filter(pk=pk).update(label=name)
            if name in FAULTS:
                sim.inject("token", FAULTS[name][0], account=by_id[pk])
        started = time.monotonic()
        results = list(cycle_run())  # must not raise
        elapsed = time.monotonic() - started
    hanging = 3  # timeout, slow body: cut at 1 s each; reset answers at once
    assert elapsed < hanging * 1.0 + 6, "a hanging answer held the cycle beyond its timeout"
    assert len(results) >= len(names)
    for account in Account.objects.all():
        name = account.label
        if name.startswith("healthy"):
            assert account.credential_version == 2, name
            continue
        _, kind, backoff = FAULTS[name]
        assert account.refresh_error_kind == kind, name
        assert account.refresh_backoff_until is not None, name
        assert account.refresh_error_at is not None, name
        assert abs(account.refresh_backoff_until - account.refresh_error_at - backoff) < timedelta(
            seconds=2
        ), name
        assert account.policy_status == "ok", name  # a token-endpoint answer is never policy
        event = AccountEvent.objects.get(account=account)
        assert (event.operation, event.outcome) == ("token_refresh", kind), name


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_refresh_leaves_no_claim_beyond_its_timeout(pool, tmp_path, settings):
    claim_seconds = 4
    shared_before = processes.queue_size(DEFAULT_QUEUE)
    with SimulatedAnthropic() as sim, processes.own_queue() as queue:
        _point_at(settings, sim)
        sim_account = sim.add_account()
        by_id = _accounts_from(pool, [sim_account], expires_in=timedelta(minutes=10))
        account_id = next(iter(by_id))
        sim.inject("token", Fault.timeout(60), account=sim_account)  # holds, never rotates
        workers = _workers(sim, tmp_path, 1, queue, ACCOUNTS_POOL_CLAIM_SECONDS=str(claim_seconds))
        process, log = workers[0]
        try:
            refresh_account.apply_async([account_id], queue=queue)
            processes.wait_for(lambda: sim.stats()["token"] >= 1, 30, "the refresh in flight", log)
            claimed = Account.objects.get(pk=account_id).refresh_claimed_until
            os.killpg(process.pid, 9)  # SIGKILL the worker and its pool, mid-request
            process.wait(timeout=10)
        finally:
            processes.stop(process)
        assert claimed is not None
        assert claimed <= timezone.now() + timedelta(seconds=claim_seconds)
        # The message the dead worker held is redelivered only on this test's queue (Redis keeps
        # it unacknowledged; the file broker dropped it), which own_queue empties.
        assert processes.unacked_on(queue) == (
            1 if settings.CELERY_BROKER_URL.startswith("redis") else 0
        )
        time.sleep(max(0.0, (claimed - timezone.now()).total_seconds()) + 0.2)
        sim.clear_faults()
        recovered = list(cycle_run())  # the next cycle takes the account over
        stats = sim.stats()
    assert [r.outcome for r in recovered][:1] == ["refreshed"]
    account = Account.objects.get(pk=account_id)
    assert account.refresh_token == sim_account.refresh_token
    assert account.refresh_claimed_until is None
    assert (stats["reused"], stats["invalid_grant"]) == (0, 0)
    # Nothing reached the queue other runs' workers take, and nothing is left for them.
    assert processes.queue_size(DEFAULT_QUEUE) == shared_before
    assert (processes.queue_size(queue), processes.unacked_on(queue)) == (0, 0)
