"""The Celery round trip: beat and a real worker run the cycle against the local provider
server; the account's refresh token is rejected, and the next notification tick delivers a
signed webhook to each real local receiver, one of them only on the worker's retry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts_pool.models import Account, AccountEvent, DeliveryAttempt
from accounts_pool.services.channels import channel_create

from . import processes, receivers
from .conftest import make_account
from .fake_provider import fake_anthropic

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


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


def test_a_rejected_refresh_token_reaches_each_webhook_once_through_the_workers_retry(
    team, alice, pool, tmp_path
):
    """One cycle, two receivers: one answers at once, the other 500 and then 200. Each gets the
    signed notification exactly once, the second through the worker's retry."""
    account = make_account(pool, access_expires_at=timezone.now() + timedelta(minutes=5))
    processes.beat_entries()
    verify = receivers.readme_verify()
    with (
        fake_anthropic(set()) as fake,  # no refresh token is valid: invalid_grant
        receivers.receiver(200) as hook,
        receivers.receiver(500, 200) as flaky,
        processes.own_queue() as queue,
    ):
        channels = {}
        for name, receiver in (("hook", hook), ("flaky", flaky)):
            channel, secret = channel_create(
                team=team,
                name=name,
                channel_type="webhook",
                target=receiver.url,
                kinds=["needs_relogin"],
                created_by=alice,
            )
            channels[name] = (channel, secret)
        env = {**fake.env(), "ACCOUNTS_POOL_NOTIFY_RETRY_BASE_SECONDS": "1"}
        with _cycle(tmp_path, queue, **env) as logs:
            processes.wait_for(hook.accepted, 90, "the webhook", logs[0])
            received_at = time.time()
            processes.wait_for(flaky.accepted, 90, "the retry", logs[0])
            # The worker records an attempt after the receiver has answered: wait for the
            # records, or stopping the worker's process group may cut a task in between.
            processes.wait_for(
                lambda: DeliveryAttempt.objects.count() == 3, 30, "the attempts", logs[0]
            )
            time.sleep(3)  # more ticks: nothing more may arrive
    rejected = AccountEvent.objects.get(account=account, outcome="invalid_grant")
    latency = received_at - rejected.at.timestamp()
    print(
        f"needs_relogin recorded -> webhook received: {latency:.1f} s (beat every "
        f"{processes.BEAT_SECONDS} s)"
    )
    assert Account.objects.get(pk=account.pk).needs_relogin
    assert fake.calls["token"] == 1
    (got,) = hook.got
    _, secret = channels["hook"]
    stamp = got.headers["X-AccountsPool-Timestamp"]
    assert verify(secret, got.body, stamp, got.headers["X-AccountsPool-Signature"])
    message = json.loads(got.body)
    assert (message["kind"], message["state"]) == ("needs_relogin", "started")
    assert [r.answered for r in flaky.got] == [500, 200]
    assert flaky.got[0].body == flaky.got[1].body  # the same delivery, sent again
    for name, expected in (("hook", [(200, True)]), ("flaky", [(500, False), (200, True)])):
        channel, _ = channels[name]
        log = DeliveryAttempt.objects.filter(channel=channel).order_by("attempt")
        assert list(log.values_list("status_code", "ok")) == expected
