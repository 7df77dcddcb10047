"""The Celery round trip: beat and a real worker run the cycle against the local provider
server; the account's refresh token is rejected, and the next notification tick delivers a
signed webhook to a real local receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from accounts_pool.crypto import fingerprint
from accounts_pool.models import Account, AccountEvent, DeliveryAttempt
from accounts_pool.services.channels import channel_create

from . import processes, receivers
from .conftest import REFRESH, make_account
from .fake_provider import fake_anthropic

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
TICKED = (
    "accounts_pool.dispatch_token_refresh",
    "accounts_pool.dispatch_quota_checks",
    "accounts_pool.notify_tick",
)


def _beat_entries() -> None:
    """The migrations' beat entries (a transactional test's flush removed them)."""
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    for task in TICKED:
        PeriodicTask.objects.update_or_create(name=task, defaults={"task": task, "interval": every})


@contextmanager
def _cycle(tmp_path, queue: str, **env: str) -> Iterator[list[Path]]:
    """A worker and beat (ticking every BEAT_SECONDS) on the test's own queue."""
    logs = [tmp_path / "worker.log", tmp_path / "beat.log"]
    child = processes.child_env(queue=queue, **env)
    beat = [str(processes.VENV_BIN / "celery"), "-A", "config", "beat", "--loglevel", "INFO"]
    beat += ["--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--pidfile="]
    started = [
        processes.start(processes.celery_worker("--concurrency", "2"), child, logs[0]),
        processes.start(beat, child, logs[1]),
    ]
    try:
        yield logs
    finally:
        for process in started:
            processes.stop(process)


def test_a_rejected_refresh_token_reaches_the_webhook_within_one_cycle(team, alice, pool, tmp_path):
    account = make_account(pool, access_expires_at=timezone.now() + timedelta(minutes=5))
    _beat_entries()
    verify = receivers.readme_verify()
    with (
        fake_anthropic(set()) as fake,  # no refresh token is valid: invalid_grant
        receivers.receiver(200) as hook,
        processes.own_queue() as queue,
    ):
        _, secret = channel_create(
            team=team,
            name="hook",
            channel_type="webhook",
            target=hook.url,
            kinds=["needs_relogin"],
            created_by=alice,
        )
        with _cycle(tmp_path, queue, **fake.env()) as logs:
            processes.wait_for(hook.accepted, 90, "the webhook", logs[0])
            received_at = time.time()
            # The worker records the attempt after the receiver has answered: wait for the
            # record, or stopping the worker's process group may cut the task in between.
            processes.wait_for(DeliveryAttempt.objects.exists, 30, "the attempt", logs[0])
    rejected = AccountEvent.objects.get(account=account, outcome="invalid_grant")
    latency = received_at - rejected.at.timestamp()
    print(
        f"needs_relogin recorded -> webhook received: {latency:.1f} s (beat every "
        f"{processes.BEAT_SECONDS} s)"
    )
    assert Account.objects.get(pk=account.pk).needs_relogin
    assert fake.calls["token"] == 1
    got = hook.accepted()
    assert len(got) == 1
    stamp = got[0].headers["X-AccountsPool-Timestamp"]
    assert verify(secret, got[0].body, stamp, got[0].headers["X-AccountsPool-Signature"])
    message = json.loads(got[0].body)
    assert (message["kind"], message["state"]) == ("needs_relogin", "started")
    assert DeliveryAttempt.objects.get().ok


def test_a_receiver_answering_500_then_200_gets_it_once_through_the_workers_retry(
    team, alice, pool, tmp_path
):
    make_account(pool, relogin_required_for=fingerprint(REFRESH))
    _beat_entries()
    with (
        fake_anthropic(set()) as fake,  # the cycle's provider calls, if any, stay local
        receivers.receiver(500, 200) as hook,
        processes.own_queue() as queue,
    ):
        channel_create(
            team=team,
            name="hook",
            channel_type="webhook",
            target=hook.url,
            kinds=["needs_relogin"],
            created_by=alice,
        )
        env = {**fake.env(), "ACCOUNTS_POOL_NOTIFY_RETRY_BASE_SECONDS": "1"}
        with _cycle(tmp_path, queue, **env) as logs:
            processes.wait_for(hook.accepted, 90, "the retry", logs[0])
            time.sleep(3)  # more ticks: nothing more may arrive
    assert [r.answered for r in hook.got] == [500, 200]
    log = DeliveryAttempt.objects.order_by("attempt").values_list("status_code", "ok")
    assert list(log) == [(500, False), (200, True)]
