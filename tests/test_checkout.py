"""Checkout picks a usable account by the pool's routing; reports change what it picks."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts_pool import checkout_sql, crypto
from accounts_pool.models import (
    Account,
    AccountEvent,
    Checkout,
    ConsumerKey,
    Pool,
    QuotaWindow,
)
from accounts_pool.services.keys import consumer_key_create

from .api import Api, error_code
from .conftest import make_account, token_answer


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def tool(pool, alice):
    return Api(consumer_key_create(pool=pool, name="laptop", created_by=alice)[1])


def usable(pool, now, label, five_hour=10.0, resets_in=timedelta(hours=4), **fields):
    account = make_account(pool, label=label, quota_checked_at=now, **fields)
    account.quota_windows.create(
        key="five_hour",
        label="5-hour",
        utilization=five_hour,
        resets_at=now + resets_in,
        checked_at=now,
    )
    return account


def _checkout(tool, **body):
    response = tool.post("/pools/claude/checkout", body)
    assert response.status_code == 200, response.content
    return response.json()


def test_priority_routing_takes_the_lowest_priority_then_least_recently_used(tool, pool, now):
    usable(pool, now, "backup", priority=200)
    first = usable(pool, now, "main-1", priority=10, last_used_at=now - timedelta(minutes=1))
    second = usable(pool, now, "main-2", priority=10, last_used_at=now - timedelta(minutes=5))
    assert _checkout(tool)["account"]["id"] == second.pk
    assert _checkout(tool)["account"]["id"] == first.pk


def test_balanced_routing_prefers_the_most_quota_per_hour_until_reset(tool, pool, now):
    pool.routing = "balanced"
    pool.save()
    usable(pool, now, "resets in days", five_hour=5.0, resets_in=timedelta(days=4))
    soon = usable(pool, now, "resets soon", five_hour=60.0, resets_in=timedelta(hours=1))
    assert _checkout(tool)["account"]["label"] == soon.label


def test_a_balanced_session_keeps_its_degraded_account_while_none_is_usable(tool, pool, now):
    pool.routing = "balanced"
    pool.save()
    backoff = {"refresh_backoff_until": now + timedelta(minutes=9)}  # degraded, still serving
    first = usable(pool, now, "first", five_hour=5.0, **backoff)
    other = usable(pool, now, "other", five_hour=50.0, **backoff)
    assert _checkout(tool, session="task-7")["account"]["id"] == first.pk
    QuotaWindow.objects.filter(account=first).update(utilization=90.0)  # other now spends better

    assert _checkout(tool)["account"]["id"] == other.pk
    assert _checkout(tool, session="task-7")["account"]["id"] == first.pk


def test_a_session_stays_on_its_account_while_it_stays_usable(tool, pool, now):
    a = usable(pool, now, "a")
    usable(pool, now, "b")
    first = _checkout(tool, session="task-42")
    assert first["account"]["id"] == a.pk
    assert _checkout(tool)["account"]["id"] != a.pk  # no session: least recently used
    assert _checkout(tool, session="task-42")["account"]["id"] == a.pk
    Account.objects.filter(pk=a.pk).update(cooldown_until=now + timedelta(minutes=5))
    assert _checkout(tool, session="task-42")["account"]["id"] != a.pk


def test_degraded_accounts_serve_only_when_no_account_is_usable(tool, pool, now):
    degraded = usable(pool, now, "degraded", refresh_backoff_until=now + timedelta(minutes=9))
    assert _checkout(tool)["account"]["id"] == degraded.pk
    healthy = usable(pool, now, "healthy")
    assert _checkout(tool)["account"]["id"] == healthy.pk


def test_a_token_expiring_within_five_minutes_is_refreshed_first(tool, pool, now, provider):
    usable(pool, now, "expiring", access_expires_at=now + timedelta(minutes=4))
    provider.token.respond(200, json=token_answer(access="sk-ant-oat01-fresh"))
    body = _checkout(tool)
    assert provider.token.call_count == 1
    assert body["credential"]["access_token"] == "sk-ant-oat01-fresh"
    assert body["credential"]["kind"] == "oauth"


def test_it_records_the_checkout_and_the_last_use(tool, pool, now):
    account = usable(pool, now, "a")
    body = _checkout(tool, session="s")
    checkout = Checkout.objects.get(pk=body["checkout_id"])
    assert checkout.account_id == account.pk
    assert checkout.session_hash
    assert checkout.session_hash != "s"
    account.refresh_from_db()
    assert account.last_used_at is not None


def test_none_usable_is_a_503_with_retry_after_and_every_reason(tool, pool, now):
    usable(pool, now, "cooling", cooldown_until=now + timedelta(minutes=10))
    usable(pool, now, "full", five_hour=100.0, resets_in=timedelta(hours=2))
    response = tool.post("/pools/claude/checkout", {})
    assert response.status_code == 503
    assert error_code(response) == "no_usable_account"
    assert 595 <= int(response["Retry-After"]) <= 601
    accounts = {a["label"]: a for a in response.json()["error"]["details"]["accounts"]}
    assert accounts["cooling"]["reasons"][0]["code"] == "cooldown"
    assert accounts["full"]["reasons"][0]["code"] == "quota_exhausted"


def test_a_users_token_cannot_check_out(alice, pool, now):
    from accounts_pool.services.keys import api_token_create

    usable(pool, now, "a")
    lead = Api(api_token_create(user=alice, name="cli")[1])
    assert lead.post("/pools/claude/checkout", {}).status_code == 403


# The key and its pool are read with the candidates, in one statement, on every request: a
# revocation or a pool change made elsewhere (a queryset update: no signal reaches this
# process) holds from the very next request on, with no retry.


def test_a_checkout_reads_the_key_with_its_candidates_in_one_statement(tool, pool, now):
    usable(pool, now, "a")
    _checkout(tool)
    with CaptureQueriesContext(connection) as queries:
        _checkout(tool)
    statements = [q["sql"] for q in queries.captured_queries]
    reads = [
        sql
        for sql in statements
        if not any(word in sql for word in ("INSERT", "UPDATE", "SAVEPOINT"))
    ]
    assert len(reads) == 1, reads
    assert "key_hash" in reads[0]
    assert "accounts_pool_quotawindow" in reads[0]
    if connection.vendor == "postgresql":
        assert len(statements) == 2  # and the one that records it
    assert Checkout.objects.count() == 2


def test_a_sessions_checkout_is_one_read_however_many_checkouts_the_session_made(tool, pool, now):
    ours = usable(pool, now, "ours")
    usable(pool, now, "other")
    _checkout(tool, session="long-task")
    first = Checkout.objects.get()
    Checkout.objects.bulk_create(  # a day of a busy Claude Code session
        Checkout(
            id=uuid.uuid4(),
            account=ours,
            consumer_key=first.consumer_key,
            session_hash=first.session_hash,
            at=now - timedelta(seconds=30 * n),
            credential_version=1,
        )
        for n in range(1, 3001)
    )
    with CaptureQueriesContext(connection) as queries:
        assert _checkout(tool, session="long-task")["account"]["id"] == ours.pk
    statements = [q["sql"].lstrip() for q in queries.captured_queries]
    reads = [sql for sql in statements if sql.startswith("WITH kp")]
    assert len(reads) == 1  # the session's account is found inside checkout's own read
    assert not [sql for sql in statements if sql.startswith("SELECT")]  # and nowhere else
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE accounts_pool_checkout")
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {reads[0]}")
            plan = cursor.fetchone()[0]
        rows = [
            n["Actual Rows"]
            for n in _plan_nodes(plan)
            if n.get("Relation Name", "") == "accounts_pool_checkout"
        ]
        assert rows == [1]  # the latest checkout only, not the session's 3,001


def _plan_nodes(plan):
    for node in plan if isinstance(plan, list) else [plan]:
        inner = node.get("Plan", node)
        yield inner
        for child in inner.get("Plans", []):
            yield from _plan_nodes(child)


def test_a_key_revoked_elsewhere_checks_out_nothing_on_the_next_request(tool, pool, now):
    account = usable(pool, now, "a")
    _checkout(tool)
    used_at = Account.objects.get(pk=account.pk).last_used_at
    ConsumerKey.objects.update(revoked_at=now, last_used_at=now - timedelta(minutes=2))

    with CaptureQueriesContext(connection) as queries:
        response = tool.post("/pools/claude/checkout", {})

    assert response.status_code == 401
    assert error_code(response) == "unauthenticated"
    assert len(queries.captured_queries) == 1  # the one read; nothing written, nothing retried
    assert Checkout.objects.count() == 1
    assert Account.objects.get(pk=account.pk).last_used_at == used_at
    assert ConsumerKey.objects.get().last_used_at == now - timedelta(minutes=2)


def test_a_key_revoked_elsewhere_refreshes_no_token(tool, pool, now, provider):
    account = usable(pool, now, "a")
    _checkout(tool)
    Account.objects.filter(pk=account.pk).update(access_expires_at=now + timedelta(minutes=4))
    ConsumerKey.objects.update(revoked_at=now)

    assert tool.post("/pools/claude/checkout", {}).status_code == 401
    assert provider.token.call_count == 0


def test_a_key_revoked_elsewhere_sees_no_reasons_when_none_is_usable(tool, pool, now):
    account = usable(pool, now, "secret-label")
    _checkout(tool)
    Account.objects.filter(pk=account.pk).update(cooldown_until=now + timedelta(minutes=5))
    ConsumerKey.objects.update(revoked_at=now)

    response = tool.post("/pools/claude/checkout", {})

    assert response.status_code == 401
    assert "secret-label" not in response.content.decode()


def test_a_pool_deleted_elsewhere_is_no_pool_to_its_key(tool, pool, now):
    usable(pool, now, "a")
    _checkout(tool)
    Pool.objects.filter(pk=pool.pk).delete()

    assert tool.post("/pools/claude/checkout", {}).status_code == 401


def test_a_pool_changed_elsewhere_routes_by_its_new_settings_at_once(tool, pool, now):
    first = usable(pool, now, "first", priority=10)
    idle = usable(pool, now, "idle", priority=200, last_used_at=now - timedelta(hours=1))
    assert _checkout(tool)["account"]["id"] == first.pk
    Pool.objects.filter(pk=pool.pk).update(routing=Pool.Routing.LEAST_RECENTLY_USED)

    assert _checkout(tool)["account"]["id"] == idle.pk
    assert Checkout.objects.filter(account=first).count() == 1


def test_a_pool_policy_changed_elsewhere_is_applied_at_once(tool, pool, now):
    usable(pool, now, "a", five_hour=85.0)
    assert _checkout(tool)["account"]["label"] == "a"
    Pool.objects.filter(pk=pool.pk).update(min_remaining_percent=20)

    response = tool.post("/pools/claude/checkout", {})
    assert response.status_code == 503
    assert error_code(response) == "no_usable_account"


def test_a_pool_renamed_elsewhere_answers_by_its_new_slug_at_once(tool, pool, now):
    usable(pool, now, "a")
    _checkout(tool)
    Pool.objects.filter(pk=pool.pk).update(slug="claude-max")

    assert tool.post("/pools/claude-max/checkout", {}).status_code == 200
    response = tool.post("/pools/claude/checkout", {})
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_only_the_chosen_account_credential_is_decrypted(pool, alice, now, monkeypatch):
    from accounts_pool import checkout_sql
    from accounts_pool.services.checkout import checkout_create
    from accounts_pool.services.keys import secret_hash

    for n in range(5):
        usable(pool, now, f"a{n}", priority=n)
    _, secret = consumer_key_create(pool=pool, name="t", created_by=alice)
    decrypted = []
    real = crypto.decrypt

    def counted(ciphertext: str) -> str:  # a spy: decrypts as before, and counts
        decrypted.append(ciphertext)
        return real(ciphertext)

    monkeypatch.setattr(checkout_sql, "decrypt", counted)
    pool.routing = "balanced"  # reads every candidate
    pool.save()

    result = checkout_create(key_hash=secret_hash(secret), now=now)

    assert len(decrypted) == 1
    assert result.account.access_token == "sk-ant-oat01-access-token-of-the-test-account-0001"


def _report(tool, checkout_id, **body):
    response = tool.post(f"/checkouts/{checkout_id}/report", body)
    assert response.status_code == 200, response.content
    return response.json()


def test_a_429_without_retry_after_cools_down_until_the_reported_reset(tool, pool, now):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    reset = int((now + timedelta(minutes=12)).timestamp())
    body = _report(
        tool,
        checkout["checkout_id"],
        status=429,
        headers={
            "anthropic-ratelimit-unified-5h-utilization": "1.0",
            "anthropic-ratelimit-unified-5h-reset": str(reset),
            "anthropic-ratelimit-unified-status": "rejected",
        },
    )
    account.refresh_from_db()
    assert abs(account.cooldown_until.timestamp() - reset) < 2
    assert body["windows_updated"] == ["five_hour"]
    window = QuotaWindow.objects.get(account=account, key="five_hour")
    assert (window.utilization, window.source) == (100.0, "report")


def test_a_long_limit_caps_the_cooldown_and_lets_the_window_exclude(tool, pool, now):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    reset = int((now + timedelta(days=2)).timestamp())
    _report(
        tool,
        checkout["checkout_id"],
        status=429,
        headers={
            "anthropic-ratelimit-unified-7d-utilization": "1.0",
            "anthropic-ratelimit-unified-7d-reset": str(reset),
        },
    )
    account.refresh_from_db()
    assert account.cooldown_until <= timezone.now() + timedelta(minutes=30)
    verdict = account.verdict(timezone.now() + timedelta(minutes=31))
    assert verdict.first_reason.code == "quota_exhausted"
    assert abs(verdict.first_reason.until.timestamp() - reset) < 2


def test_a_401_report_excludes_the_account_and_queues_a_refresh(
    tool, pool, now, django_capture_on_commit_callbacks
):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    with django_capture_on_commit_callbacks() as queued:
        body = _report(tool, checkout["checkout_id"], status=401)
    assert body["queued"] == ["refresh"]
    assert len(queued) == 1
    account.refresh_from_db()
    assert account.verdict(timezone.now()).first_reason.code == "token_expired"


def test_a_policy_403_report_blocks_and_queues_one_check(
    tool, pool, now, django_capture_on_commit_callbacks
):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    message = "OAuth authentication is currently not allowed for this organization."
    with django_capture_on_commit_callbacks() as queued:
        first = _report(tool, checkout["checkout_id"], status=403, message=message)
        again = _report(tool, checkout["checkout_id"], status=403, message=message)
    assert (first["queued"], again["queued"]) == (["quota_check"], [])
    assert len(queued) == 1
    account.refresh_from_db()
    assert (account.policy_status, account.policy_message) == ("blocked", message)
    assert account.refresh_backoff_until is None


def test_every_report_is_history_with_the_key_as_actor(tool, pool, now):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    _report(tool, checkout["checkout_id"], status=500, message="overloaded")
    event = AccountEvent.objects.get(account=account)
    assert (event.operation, event.outcome, event.http_status) == ("report", "recorded", 500)
    assert event.actor.startswith("key:laptop:")


def test_another_pools_key_cannot_report_on_this_checkout(tool, pool, team, alice, now):
    from accounts_pool.models import Pool

    usable(pool, now, "a")
    checkout = _checkout(tool)
    other = Pool.objects.create(team=team, name="Other", slug="other")
    stranger = Api(consumer_key_create(pool=other, name="x", created_by=alice)[1])
    response = stranger.post(f"/checkouts/{checkout['checkout_id']}/report", {"status": 429})
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_a_retry_after_date_far_in_the_future_is_capped(tool, pool, now):
    account = usable(pool, now, "a")
    checkout = _checkout(tool)
    body = _report(
        tool, checkout["checkout_id"], status=429, retry_after="Fri, 31 Dec 9999 23:59:59 GMT"
    )
    assert body["outcome"] == "rate_limited"
    account.refresh_from_db()
    assert account.cooldown_until <= timezone.now() + timedelta(minutes=30)


def test_the_candidate_read_pages_in_the_routings_order_with_windows(tool, pool, now):
    """checkout_sql.candidates: the key's pool's candidates, least recently used first (no
    priority routing here), with their windows; an account with none has none."""
    minute = timedelta(minutes=1)
    usable(pool, now, "fresh", last_used_at=now - minute)
    usable(pool, now, "never used")
    usable(pool, now, "window full", five_hour=100.0, last_used_at=now - 2 * minute)
    usable(pool, now, "cooling", cooldown_until=now + minute)
    make_account(pool, label="api key", kind="api_key", api_key="sk-ant-api03-x", refresh_token="")
    Pool.objects.filter(pk=pool.pk).update(routing=Pool.Routing.LEAST_RECENTLY_USED)
    key_hash = ConsumerKey.objects.get().key_hash

    page = checkout_sql.candidates(key_hash, now=now)

    assert page.key is not None
    assert page.key.pool.slug == "claude"
    chosen = [c.account.label for c in page.candidates]
    assert chosen[:2] == ["api key", "never used"] or chosen[:2] == ["never used", "api key"]
    assert chosen[2:] == ["window full", "fresh"]
    windows = {c.account.label: [w.key for w in c.windows] for c in page.candidates}
    assert windows["window full"] == ["five_hour"]
    assert windows["api key"] == []
    second = checkout_sql.candidates(key_hash, now=now, limit=2, offset=2)
    assert [c.account.label for c in second.candidates] == chosen[2:4]
    assert checkout_sql.candidates("no such hash", now=now).key is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgresql_plans_the_candidates_statement_once(tool, pool, now):
    """Every checkout runs the same candidates statement; prepared, it should keep one generic
    plan rather than be planned again on each run (which cost more than running it). Twenty
    pools of fifty: with the page's LIMIT passed as a value, PostgreSQL planned all ten runs."""
    others = Pool.objects.bulk_create(
        Pool(team=pool.team, name=f"Other {n}", slug=f"other-{n}") for n in range(19)
    )
    accounts = Account.objects.bulk_create(
        Account(
            pool=owner,
            label=f"a{n}",
            access_token="sk-ant-oat01-token",
            access_expires_at=now + timedelta(hours=7),
            refresh_token_fingerprint="fp",
            quota_checked_at=now,
        )
        for owner in [pool, *others]
        for n in range(50)
    )
    QuotaWindow.objects.bulk_create(
        QuotaWindow(
            account=a,
            key=key,
            label=key,
            utilization=10.0,
            resets_at=now + timedelta(hours=3),
            checked_at=now,
        )
        for a in accounts
        for key in ("five_hour", "seven_day")
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # what autovacuum would know of a pool among many
    for _ in range(12):
        _checkout(tool)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE %s",
            ["%LEFT JOIN%"],
        )
        plans = cursor.fetchall()
    # Prepared from the third run on (DB_PREPARE_THRESHOLD): PostgreSQL tries five custom plans
    # before it settles on the generic one for the other five.
    assert plans == [(5, 5)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_recording_a_checkout_relaxes_only_its_own_commit(pool, alice):
    """One statement writes the checkout and the last use without waiting for the disk; the
    connection's later transactions (a token refresh, say) still wait for it."""
    tool = Api(consumer_key_create(pool=pool, name="laptop", created_by=alice)[1])
    account = usable(pool, timezone.now(), "a")
    body = _checkout(tool)
    assert Checkout.objects.filter(pk=body["checkout_id"], account=account).exists()
    account.refresh_from_db()
    assert account.last_used_at is not None
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)


def test_the_service_refuses_a_revoked_key_and_skips_excluded_accounts(pool, alice, now):
    from accounts_pool.services.checkout import UnknownKey, checkout_create
    from accounts_pool.services.relay import relay_route

    first = usable(pool, now, "first", priority=1)
    second = usable(pool, now, "second", priority=2)
    key, _ = consumer_key_create(pool=pool, name="relay", created_by=alice)

    assert checkout_create(key_hash=key.key_hash, now=now).account.pk == first.pk
    routed = relay_route(key=key, session="", model=None, exclude=frozenset({first.pk}))
    assert routed.account_id == second.pk

    ConsumerKey.objects.filter(pk=key.pk).update(revoked_at=now)  # as another process would
    with pytest.raises(UnknownKey):
        relay_route(key=key, session="", model=None, exclude=frozenset())
    assert Checkout.objects.count() == 2
