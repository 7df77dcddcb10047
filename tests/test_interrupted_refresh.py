"""A worker stopped in the middle of a refresh, against the simulated provider (a real HTTP
server the worker processes call): SIGTERM lets it finish and store the rotation; SIGKILL
after the provider rotated leaves a record of an interrupted refresh, and the invalid_grant
that follows says the provider may have rotated the token during it."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts_pool import state
from accounts_pool.api import present
from accounts_pool.models import Account, AccountEvent
from accounts_pool.services.cycle import cycle_run
from accounts_pool.tasks import refresh_account
from simulator import Fault, SimulatedAnthropic

from . import processes
from .test_scale_and_faults import _accounts_from, _point_at

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _worker(sim, tmp_path, queue: str, pool: str, **env: str):
    log = tmp_path / f"worker-{pool}.log"
    args = processes.celery_worker("--pool", pool, "--concurrency", "2")
    child = processes.child_env(queue=queue, **sim.env(), **env)
    process = processes.start(args, child, log)
    processes.wait_for(lambda: "ready." in log.read_text(), 60, "the worker", log)
    return process, log


@pytest.mark.parametrize("pool_kind", ["prefork", "threads"])
def test_sigterm_mid_refresh_lets_the_worker_finish_and_store_the_rotation(
    pool, tmp_path, settings, pool_kind
):
    with SimulatedAnthropic() as sim, processes.own_queue() as queue:
        _point_at(settings, sim)
        sim_account = sim.add_account()
        account_id = next(iter(_accounts_from(pool, [sim_account], expires_in=timedelta(0))))
        # The provider rotates at once, then takes 3 s to send its answer.
        sim.inject("token", Fault.slow_body(3), account=sim_account, times=1)
        process, log = _worker(sim, tmp_path, queue, pool_kind, ANTHROPIC_HTTP_TIMEOUT="20")
        try:
            refresh_account.apply_async([account_id], queue=queue)
            processes.wait_for(
                lambda: sim.stats()["refreshes"].get(sim_account.uuid), 30, "the rotation", log
            )
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)  # the main process only, as systemd or
            process.wait(timeout=30)  # accounts_pool.supervise send it
            took = time.monotonic() - started
        finally:
            processes.stop(process)
        stats = sim.stats()
    account = Account.objects.get(pk=account_id)
    assert account.refresh_token == sim_account.refresh_token
    assert (account.credential_version, account.refresh_sent_at) == (2, None)
    assert account.refresh_claimed_until is None
    assert (stats["reused"], stats["invalid_grant"]) == (0, 0)
    assert process.returncode == 0
    assert 1 < took < 20, took  # it waited for the answer, not for a timeout


def test_sigkill_after_the_provider_rotated_is_recorded_as_an_interrupted_refresh(
    pool, tmp_path, settings
):
    claim_seconds = 3
    with SimulatedAnthropic() as sim, processes.own_queue() as queue:
        _point_at(settings, sim)
        sim_account = sim.add_account()
        sent_token = sim_account.refresh_token
        account_id = next(iter(_accounts_from(pool, [sim_account], expires_in=timedelta(0))))
        sim.inject("token", Fault.slow_body(30), account=sim_account, times=1)
        process, log = _worker(
            sim, tmp_path, queue, "threads", ACCOUNTS_POOL_CLAIM_SECONDS=str(claim_seconds)
        )
        try:
            refresh_account.apply_async([account_id], queue=queue)
            processes.wait_for(
                lambda: sim.stats()["refreshes"].get(sim_account.uuid), 30, "the rotation", log
            )
            os.killpg(process.pid, signal.SIGKILL)  # mid-answer: the rotation never arrives
            process.wait(timeout=10)
        finally:
            processes.stop(process)
        killed = Account.objects.get(pk=account_id)
        # The record: a request went out with the current token and no answer was stored.
        assert killed.refresh_sent_at is not None
        assert killed.refresh_token == sent_token != sim_account.refresh_token
        assert killed.refresh_claimed_until is not None
        time.sleep(max(0.0, (killed.refresh_claimed_until - timezone.now()).total_seconds()) + 0.2)
        assert state.refresh_interrupted(
            sent_at=killed.refresh_sent_at,
            claimed_until=killed.refresh_claimed_until,
            now=timezone.now(),
        )
        shown = present.account_detail_by_id(account_id)["refresh"]
        assert shown["interrupted_at"] == killed.refresh_sent_at
        settings.ACCOUNTS_POOL_CLAIM_SECONDS = claim_seconds
        outcomes = [r.outcome for r in cycle_run()]  # the next cycle takes the account over
        stats = sim.stats()
    assert outcomes[:1] == ["invalid_grant"]
    account = Account.objects.get(pk=account_id)
    assert account.needs_relogin
    assert account.refresh_error_message.startswith(state.INTERRUPTED_REFRESH_NOTE)
    assert account.refresh_sent_at is None
    assert present.account_detail_by_id(account_id)["refresh"]["interrupted_at"] is None
    events = list(
        AccountEvent.objects.filter(account_id=account_id, operation="token_refresh")
        .order_by("at", "pk")
        .values_list("outcome", "message")
    )
    assert [outcome for outcome, _ in events] == ["interrupted", "invalid_grant"]
    assert state.INTERRUPTED_REFRESH_NOTE in events[0][1]
    assert state.INTERRUPTED_REFRESH_NOTE in events[1][1]
    # The one token sent twice is the one the interrupted refresh had sent: nothing else.
    assert (stats["reused"], stats["invalid_grant"]) == (1, 1)
