"""The Celery round trip with a real worker process on the configured broker (Redis in CI,
the filesystem broker on a bare machine) and a local provider server."""

from __future__ import annotations

import functools
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts_pool.models import Account
from accounts_pool.tasks import dispatch_token_refresh_task, refresh_account

from . import processes
from .conftest import REFRESH, make_account
from .fake_provider import fake_anthropic

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _worker(log, queue: str, *options: str, **env: str):
    return processes.start(
        processes.celery_worker(*(options or ("--concurrency", "2"))),
        processes.child_env(queue=queue, **env),
        log,
    )


def test_one_tick_refreshes_every_due_account_in_a_real_worker(pool, tmp_path):
    """The round trip: beat's task sent to the broker, a worker process refreshing with the
    provider. Chunks of 2, a tick's budget of 500: the tick's dispatcher runs 3 times (2 + 2 + 1)
    and each of the 5 due accounts is refreshed once."""
    tokens = [f"{REFRESH}-{n}" for n in range(5)]
    for n, token in enumerate(tokens):
        expires = timezone.now() + timedelta(minutes=5)
        make_account(pool, label=f"a{n}", refresh_token=token, access_expires_at=expires)
    log = tmp_path / "worker.log"
    with fake_anthropic(set(tokens)) as fake, processes.own_queue() as queue:
        worker = _worker(log, queue, ACCOUNTS_POOL_DISPATCH_CHUNK="2", **fake.env())
        try:
            processes.wait_for(lambda: "ready." in log.read_text(), 60, "the worker", log)
            dispatch_token_refresh_task.apply_async(queue=queue)
            processes.wait_for(
                lambda: not Account.objects.filter(credential_version=1).exists(),
                60,
                "every refresh to complete",
                log,
            )
        finally:
            processes.stop(worker)
    assert fake.calls["token"] == len(tokens)
    rotated = {(a.refresh_token, a.refresh_failures) for a in Account.objects.all()}
    assert rotated == {(f"sk-ant-ort01-fake-rotated-{n}", 0) for n in range(1, 6)}
    lines = log.read_text().splitlines()
    assert (
        len([line for line in lines if "dispatch_token_refresh[" in line and "succeeded" in line])
        == 3
    )
    assert len([line for line in lines if "refresh_account[" in line and "succeeded" in line]) == 5


def _refreshed(account_id: int) -> bool:
    return Account.objects.get(pk=account_id).credential_version > 1


def _other_backends() -> set[int]:
    """PostgreSQL backends on this test database other than this test's own connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.postgres
def test_a_worker_keeps_its_database_connection_from_task_to_task(pool, tmp_path):
    """Celery's Django fixup closes every connection after each task; the worker keeps them as
    Django keeps them across requests (config/celery.py), so tasks do not each pay for a new
    PostgreSQL backend."""
    tokens = [f"{REFRESH}-{n}" for n in range(3)]
    accounts = [
        make_account(
            pool,
            label=f"a{n}",
            refresh_token=token,
            access_expires_at=timezone.now() + timedelta(minutes=5),
        )
        for n, token in enumerate(tokens)
    ]
    log = tmp_path / "worker.log"
    with fake_anthropic(set(tokens)) as fake, processes.own_queue() as queue:
        worker = _worker(log, queue, "--pool", "threads", "--concurrency", "1", **fake.env())
        try:
            processes.wait_for(lambda: "ready." in log.read_text(), 60, "the worker", log)
            before = _other_backends()
            seen = []
            for account in accounts:
                refresh_account.apply_async([account.pk], queue=queue)
                processes.wait_for(
                    functools.partial(_refreshed, account.pk), 60, "the refresh", log
                )
                seen.append(_other_backends() - before)
        finally:
            processes.stop(worker)
    assert fake.calls["token"] == 3
    assert len(seen[0]) == 1  # the task's connection is still open after it
    assert seen[0] == seen[1] == seen[2]  # and the next tasks used the same one
