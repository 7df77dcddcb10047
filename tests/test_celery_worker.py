"""The Celery round trip with a real worker process on the configured broker (Redis in CI,
the filesystem broker on a bare machine) and a local provider server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts_pool.models import Account
from accounts_pool.tasks import dispatch_token_refresh_task

from . import processes
from .conftest import REFRESH, make_account
from .fake_provider import fake_anthropic

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_dispatched_refresh_completes_in_a_real_worker(pool, tmp_path):
    account = make_account(pool, access_expires_at=timezone.now() + timedelta(minutes=5))
    log = tmp_path / "worker.log"
    with fake_anthropic({REFRESH}) as fake:
        worker = processes.start(
            [
                str(processes.VENV_BIN / "celery"),
                "-A",
                "config",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
                "--purge",
                "--without-gossip",
                "--without-mingle",
            ],
            processes.child_env(**fake.env()),
            log,
        )
        try:
            processes.wait_for(lambda: "ready." in log.read_text(), 60, "the worker", log)
            dispatch_token_refresh_task.delay()  # beat's task: select due, enqueue per account
            processes.wait_for(
                lambda: Account.objects.get(pk=account.pk).credential_version > 1,
                60,
                "the refresh to complete",
                log,
            )
        finally:
            processes.stop(worker)
    account.refresh_from_db()
    assert fake.calls["token"] == 1
    assert account.access_token == "sk-ant-oat01-fake-access-1"
    assert account.refresh_token == "sk-ant-ort01-fake-rotated-1"
    assert account.refresh_failures == 0
    assert "accounts_pool.refresh_account" in log.read_text()
