"""A 401 report is about the credential its checkout handed out: a loop of checkout + report 401
cannot force more than one provider refresh per credential version, a late report about a
replaced credential changes nothing, and a retried report records once.

The provider's token endpoint is respx (in process); the refresh task runs in this process
(Celery's eager mode) right after the report commits, as a worker would take it."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone

from accounts_pool import state
from accounts_pool.models import AccountEvent, CheckoutReport
from accounts_pool.services.keys import consumer_key_create
from accounts_pool.services.refresh import account_refresh
from config.celery import app

from .api import Api
from .conftest import token_answer, usable_account


@pytest.fixture
def tool(pool, alice):
    return Api(consumer_key_create(pool=pool, name="looper", created_by=alice)[1])


@pytest.fixture
def eager_worker() -> Iterator[None]:
    """Queued tasks run at once in this process, as a worker would run them."""
    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = before


class RotatingTokens:
    """A token endpoint that rotates like the real one and remembers every refresh token sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = json.loads(request.content)["refresh_token"]
        self.sent.append(token)
        n = len(self.sent)
        if self.sent.count(token) > 1:
            body = {"error": "invalid_grant", "error_description": "refresh_token_reused"}
            return httpx.Response(400, json=body)
        answer = token_answer(f"sk-ant-oat01-loop-access-{n}", f"sk-ant-ort01-loop-refresh-{n}")
        return httpx.Response(200, json=answer)


def _checkout(tool: Api) -> dict[str, Any] | None:
    response = tool.post("/pools/claude/checkout", {})
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.content
    return dict(response.json())


def _report(tool: Api, checkout_id: str, **body: Any) -> dict[str, Any]:
    response = tool.post(f"/checkouts/{checkout_id}/report", body)
    assert response.status_code == 200, response.content
    return dict(response.json())


def test_a_checkout_keeps_the_credential_version_it_handed_out(tool, pool):
    account = usable_account(pool, "main", credential_version=7)
    checkout = _checkout(tool)
    assert checkout is not None
    row = account.checkouts.get(pk=checkout["checkout_id"])
    assert row.credential_version == 7


@pytest.mark.django_db(transaction=True)  # each report commits: its task runs right then
def test_a_401_report_loop_makes_at_most_one_provider_refresh_per_credential_version(
    tool, pool, provider, eager_worker
):
    account = usable_account(pool, "main")
    rotating = RotatingTokens()
    provider.token.mock(side_effect=rotating)
    handed: list[dict[str, Any]] = []
    for _ in range(30):
        checkout = _checkout(tool)
        if checkout is None:  # the account backs off: nothing left to force
            break
        handed.append(checkout)
        _report(tool, checkout["checkout_id"], status=401)
        for old in handed[:-1]:  # and every late 401 again, about replaced credentials
            _report(tool, old["checkout_id"], status=401, message="late")
    account.refresh_from_db()
    versions = Counter(
        account.checkouts.values_list("credential_version", flat=True).order_by("at")
    )
    # Every token went out once (no version refreshed twice), one refresh per version gone.
    assert len(rotating.sent) == len(set(rotating.sent)) == account.credential_version - 1
    assert len(rotating.sent) <= len(versions) <= 2
    # The token a 401's refresh issued was reported dead too: the refresh backs off instead.
    assert account.refresh_error_kind == state.FailureKind.ACCESS_REJECTED
    assert account.refresh_backoff_until is not None
    assert account.refresh_backoff_until > timezone.now() + timedelta(minutes=4)
    assert _checkout(tool) is None


def test_a_stale_401_changes_nothing_and_says_so(
    tool, pool, provider, django_capture_on_commit_callbacks
):
    account = usable_account(pool, "main")
    provider.token.respond(json=token_answer("sk-ant-oat01-fresh", "sk-ant-ort01-fresh"))
    late = _checkout(tool)
    assert late is not None
    assert account_refresh(account_id=account.pk, force=True).outcome == "refreshed"
    account.refresh_from_db()
    before = (account.credential_version, account.access_expires_at, account.refresh_failures)
    with django_capture_on_commit_callbacks() as queued:
        body = _report(tool, late["checkout_id"], status=401)
    assert (body["outcome"], body["queued"], queued) == ("stale", [], [])
    assert "already replaced" in body["note"]
    account.refresh_from_db()
    assert (account.credential_version, account.access_expires_at, account.refresh_failures) == (
        before
    )
    assert account.verdict(timezone.now()).status == state.Status.USABLE
    assert provider.token.call_count == 1
    fresh = _checkout(tool)
    assert fresh is not None
    assert fresh["credential"]["access_token"] == "sk-ant-oat01-fresh"


def test_a_queued_refresh_for_a_replaced_version_does_not_call_the_provider(pool, provider):
    account = usable_account(pool, "main", access_expires_at=timezone.now() - timedelta(minutes=1))
    result = account_refresh(account_id=account.pk, only_version=0, asked_by_401=True)
    assert result.outcome == "refreshed_elsewhere"
    assert provider.token.call_count == 0


def test_a_retried_report_records_once(tool, pool, django_capture_on_commit_callbacks):
    account = usable_account(pool, "main")
    checkout = _checkout(tool)
    assert checkout is not None
    with django_capture_on_commit_callbacks() as queued:
        first = _report(tool, checkout["checkout_id"], status=401)
        again = _report(tool, checkout["checkout_id"], status=401)
    assert (first["outcome"], first["duplicate"], first["queued"]) == (
        "access_rejected",
        False,
        ["refresh"],
    )
    assert (again["outcome"], again["duplicate"], again["queued"]) == ("access_rejected", True, [])
    assert "already recorded" in again["note"]
    assert len(queued) == 1
    assert AccountEvent.objects.filter(account=account, operation="report").count() == 1


def test_an_idempotency_key_tells_a_retry_from_a_new_report(tool, pool):
    account = usable_account(pool, "main")
    checkout = _checkout(tool)
    assert checkout is not None
    url = f"/checkouts/{checkout['checkout_id']}/report"

    def send(key: str) -> dict[str, Any]:
        response = tool.client.post(
            "/api/v1" + url,
            json.dumps({"status": 429, "retry_after": 60}),
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=key,
            **tool.headers,
        )
        assert response.status_code == 200, response.content
        return dict(response.json())

    first, retried, other = send("tool-req-1"), send("tool-req-1"), send("tool-req-2")
    assert [r["duplicate"] for r in (first, retried, other)] == [False, True, False]
    assert retried["cooldown_until"] == first["cooldown_until"]
    assert AccountEvent.objects.filter(account=account, operation="report").count() == 2
    # The key is the tool's: only its hash is kept.
    assert not CheckoutReport.objects.filter(key__contains="tool-req").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_report_sent_at_once_from_many_threads_records_once(pool, alice):
    """A tool that retries before the first attempt answered: the receipt's unique row makes
    the later ones wait for the first and answer as duplicates."""
    import threading

    from django.db import connection

    from accounts_pool.services.checkout import checkout_create
    from accounts_pool.services.reports import report_record

    account = usable_account(pool, "main")
    key, _ = consumer_key_create(pool=pool, name="retrier", created_by=alice)
    handed = checkout_create(key_hash=key.key_hash)
    barrier = threading.Barrier(6)
    outcomes: list[tuple[str, bool]] = []

    def report() -> None:
        try:
            barrier.wait()
            done = report_record(checkout=handed.checkout, key=key, status=429, retry_after="60")
            outcomes.append((done.outcome, done.duplicate))
        finally:
            connection.close()

    threads = [threading.Thread(target=report) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == [("rate_limited", False)] + [("rate_limited", True)] * 5
    assert AccountEvent.objects.filter(account=account, operation="report").count() == 1
