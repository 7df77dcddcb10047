"""Notifications end to end in this process: evaluations turn verdict changes into one message
per channel, delivered to real local receivers (HTTP in a thread, aiosmtpd), signed as the
README documents, retried and logged. Scheduling uses a fixed clock; the network is real."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import pytest
from django.db import connection

from accounts_pool import selectors
from accounts_pool.crypto import fingerprint
from accounts_pool.models import Delivery, DeliveryAttempt, QuotaPoint, QuotaWindow
from accounts_pool.services.channels import channel_create
from accounts_pool.services.notifications import (
    DeliveryOutcome,
    deliveries_due,
    delivery_attempt,
    digests_queue,
    notifications_evaluate,
)

from . import receivers
from .conftest import ACCESS, NOW, REFRESH, make_account

pytestmark = pytest.mark.django_db
MIN = timedelta(minutes=1)
ALL_KINDS = [
    "needs_relogin",
    "policy_blocked",
    "refresh_backoff",
    "pool_low",
    "pool_dry",
    "pool_forecast_dry",
]


@pytest.fixture
def account(pool):
    """A usable account: fresh token and a known quota."""
    return _usable(make_account(pool))


def _usable(account):
    QuotaWindow.objects.create(
        account=account,
        key="five_hour",
        label="5-hour",
        utilization=20.0,
        resets_at=NOW + timedelta(hours=4),
        checked_at=NOW - MIN,
    )
    return account


def _raw_channel() -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT target, signing_secret FROM accounts_pool_channel")
        return cursor.fetchone()


def _relogin(account) -> None:
    account.relogin_required_for = fingerprint(REFRESH)
    account.refresh_error_kind = "invalid_grant"
    account.refresh_error_message = "Refresh token not found or invalid"
    account.refresh_error_at = NOW
    account.save()


def _webhook(team, alice, url, kinds=ALL_KINDS):
    return channel_create(
        team=team, name="hook", channel_type="webhook", target=url, kinds=kinds, created_by=alice
    )


def _deliver_all(now) -> list[DeliveryOutcome]:
    return [delivery_attempt(delivery_id=d, now=now) for d in deliveries_due(now=now)]


def test_it_sends_a_signed_webhook_the_readme_recipe_verifies(team, alice, account):
    verify = receivers.readme_verify()
    with receivers.receiver(200) as hook:
        _, secret = _webhook(team, alice, hook.url)
        _relogin(account)
        assert notifications_evaluate(now=NOW) == 1
        assert _deliver_all(NOW) == [DeliveryOutcome.DELIVERED]
    got = hook.accepted()[0]
    stamp, signature = (
        got.headers["X-AccountsPool-Timestamp"],
        got.headers["X-AccountsPool-Signature"],
    )
    assert verify(secret, got.body, stamp, signature)
    assert not verify(secret, got.body.replace(b"main", b"mainx"), stamp, signature)  # altered
    assert not verify(secret, got.body, str(int(stamp) + 1), signature)  # re-stamped
    assert not verify(secret, got.body, stamp, signature, now=int(stamp) + 301)  # replayed later
    assert not verify("whsec_other", got.body, stamp, signature)
    message = json.loads(got.body)
    assert (message["kind"], message["state"], message["account"]) == (
        "needs_relogin",
        "started",
        {"id": account.pk, "label": "main"},
    )
    assert "Refresh token rejected" in message["reason"]
    assert message["url"].endswith(f"/accounts/{account.pk}/")


def test_it_sends_once_per_transition_never_once_per_cycle(team, alice, account):
    _webhook(team, alice, "http://127.0.0.1:9/never", kinds=["needs_relogin"])
    _relogin(account)
    counts = [notifications_evaluate(now=NOW + n * MIN) for n in range(10)]
    assert counts == [1] + [0] * 9
    account.relogin_required_for = ""
    account.save()
    counts = [notifications_evaluate(now=NOW + n * MIN) for n in range(10, 20)]
    assert counts == [1] + [0] * 9
    assert list(Delivery.objects.order_by("created_at").values_list("direction", flat=True)) == [
        "started",
        "ended",
    ]


def test_a_policy_block_that_lifts_within_five_minutes_sends_nothing(team, alice, account):
    _webhook(team, alice, "http://127.0.0.1:9/never")
    account.policy_status, account.policy_message = "blocked", "not allowed"
    account.save()
    assert [notifications_evaluate(now=NOW + n * MIN) for n in range(4)] == [0, 0, 0, 0]
    account.policy_status = "ok"
    account.save()
    assert [notifications_evaluate(now=NOW + n * MIN) for n in range(4, 30)] == [0] * 26


def test_a_channel_hears_only_the_kinds_it_picked(team, alice, account):
    _webhook(team, alice, "http://127.0.0.1:9/a", kinds=["pool_dry"])
    _webhook(team, alice, "http://127.0.0.1:9/b", kinds=["needs_relogin"])
    _relogin(account)  # the only account: the pool runs dry too (sent after 5 minutes)
    notifications_evaluate(now=NOW)
    notifications_evaluate(now=NOW + 5 * MIN)
    sent = set(Delivery.objects.values_list("channel__name", "kind"))
    assert sent == {("hook", "needs_relogin"), ("hook", "pool_dry")}
    assert Delivery.objects.filter(channel__kinds=["pool_dry"], kind="needs_relogin").count() == 0


def test_a_receiver_answering_500_then_200_gets_the_message_once_on_the_retry(team, alice, account):
    with receivers.receiver(500, 200) as hook:
        _webhook(team, alice, hook.url)
        _relogin(account)
        notifications_evaluate(now=NOW)
        assert _deliver_all(NOW) == [DeliveryOutcome.FAILED]
        assert _deliver_all(NOW + 10 * timedelta(seconds=1)) == []  # not due before 30 s
        assert _deliver_all(NOW + 30 * timedelta(seconds=1)) == [DeliveryOutcome.DELIVERED]
        assert _deliver_all(NOW + 2 * timedelta(hours=1)) == []
    assert [r.answered for r in hook.got] == [500, 200]
    assert len({json.loads(r.body)["id"] for r in hook.got}) == 1  # the same message
    log = list(
        DeliveryAttempt.objects.order_by("attempt").values_list("attempt", "status_code", "ok")
    )
    assert log == [(1, 500, False), (2, 200, True)]


def test_a_receiver_down_for_hours_loses_nothing_and_every_attempt_is_logged(team, alice, account):
    with receivers.receiver(200) as probe:
        port = probe.port  # a port that is free once the probe stops
    _webhook(team, alice, f"http://127.0.0.1:{port}/hooks/secret-path-123")
    _relogin(account)
    notifications_evaluate(now=NOW)
    now, failures = NOW, 0
    while now < NOW + timedelta(hours=6):
        outcomes = _deliver_all(now)
        failures += outcomes.count(DeliveryOutcome.FAILED)
        now += timedelta(minutes=1)
    assert failures >= 8  # 30 s, 1, 2, 4 ... minutes apart, then every 2 hours
    with receivers.receiver(200, port=port) as hook:
        now += timedelta(hours=2)
        assert _deliver_all(now) == [DeliveryOutcome.DELIVERED]
    assert len(hook.accepted()) == 1
    log = list(DeliveryAttempt.objects.order_by("attempt"))
    assert [row.attempt for row in log] == list(range(1, failures + 2))
    assert all("could not connect" in row.error for row in log[:-1])
    assert log[-1].ok
    assert log[-1].status_code == 200


def test_it_gives_up_after_24_hours(team, alice, account):
    _webhook(team, alice, "http://127.0.0.1:9/never")
    _relogin(account)
    notifications_evaluate(now=NOW)
    now = NOW
    while now < NOW + timedelta(hours=25):
        _deliver_all(now)
        now += timedelta(minutes=10)
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.GAVE_UP
    assert delivery.attempts == DeliveryAttempt.objects.count() > 10


def test_the_pool_going_dry_and_recovering_arrives_by_email(team, alice, pool, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    account = _usable(make_account(pool))
    with receivers.smtp_server() as (port, inbox):
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        channel_create(
            team=team,
            name="ops mail",
            channel_type="email",
            target="ops@acme.test, lead@acme.test",
            kinds=["pool_dry"],
            created_by=alice,
        )
        account.cooldown_until, account.cooldown_reason = NOW + timedelta(hours=3), "429"
        account.save()
        for minute in range(0, 7):
            notifications_evaluate(now=NOW + minute * MIN)
            _deliver_all(NOW + minute * MIN)
        account.cooldown_until = None
        account.save()
        for minute in range(7, 14):
            notifications_evaluate(now=NOW + minute * MIN)
            _deliver_all(NOW + minute * MIN)
    subjects = [m["Subject"] for m in inbox]
    assert subjects == [
        "[accounts-pool] Pool Claude: dry: no usable account",
        "[accounts-pool] Pool Claude: recovered: usable again",
    ]
    assert inbox[0]["To"] == "ops@acme.test, lead@acme.test"
    assert "None of the pool's 1 accounts is usable." in inbox[0].get_payload()
    assert "/pools/claude/" in inbox[1].get_payload()
    assert set(DeliveryAttempt.objects.values_list("status_code", flat=True)) == {250}


def test_slack_gets_plain_text_with_a_link(team, alice, account):
    with receivers.receiver(200) as slack:
        channel_create(
            team=team,
            name="slack",
            channel_type="slack",
            target=slack.url,
            kinds=["needs_relogin"],
            created_by=alice,
        )
        _relogin(account)
        notifications_evaluate(now=NOW)
        _deliver_all(NOW)
    body = json.loads(slack.accepted()[0].body)
    assert set(body) == {"text"}
    assert body["text"].startswith("Account main in pool Claude: needs re-login.")
    assert f"/accounts/{account.pk}/|Open>" in body["text"]


def test_no_secret_reaches_a_payload_or_the_log(team, alice, pool, caplog):
    caplog.set_level(logging.DEBUG)
    account = _usable(make_account(pool))
    with receivers.receiver(500) as hook:
        _, secret = _webhook(team, alice, hook.url)
        account.relogin_required_for = fingerprint(REFRESH)
        account.refresh_error_message = f"rejected {REFRESH}"  # as if a provider echoed it
        account.save()
        notifications_evaluate(now=NOW)
        _deliver_all(NOW)
    body = hook.got[0].body.decode()
    for secret_text in (ACCESS, REFRESH, secret, "secret-path-123"):
        assert secret_text not in body
        assert secret_text not in caplog.text
    stored = _raw_channel()
    assert "secret-path-123" not in stored[0]  # encrypted at rest
    assert secret not in stored[1]


def test_an_unresolvable_or_refused_target_at_send_time_is_logged_not_sent(
    team, alice, account, settings
):
    _webhook(team, alice, "http://127.0.0.1:9/x")
    settings.ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS = False  # changed since it was saved
    _relogin(account)
    notifications_evaluate(now=NOW)
    _deliver_all(NOW)
    attempt = DeliveryAttempt.objects.get()
    assert not attempt.ok
    assert "127.0.0.1" in attempt.error
    assert "private" in attempt.error


def test_two_evaluations_at_once_announce_a_change_once(team, alice, account):
    _webhook(team, alice, "http://127.0.0.1:9/x")
    _relogin(account)
    assert notifications_evaluate(now=NOW) + notifications_evaluate(now=NOW) == 1


def test_a_disabled_account_sends_nothing_of_its_own(team, alice, account):
    _webhook(team, alice, "http://127.0.0.1:9/never", kinds=["needs_relogin"])
    _relogin(account)
    account.enabled, account.disabled_reason = False, "leaving"
    account.save()
    assert notifications_evaluate(now=NOW) == 0
    account.enabled = True
    account.save()
    assert notifications_evaluate(now=NOW + MIN) == 1


def test_the_daily_digest_lists_every_pool_and_why_accounts_are_out_once_a_day(
    team, alice, pool, account, mailoutbox
):
    make_account(pool, label="blocked one", policy_status="blocked", policy_message="no OAuth")
    channel_create(
        team=team,
        name="digest",
        channel_type="email",
        target="lead@acme.test",
        kinds=[],
        created_by=alice,
        daily_digest=True,
    )
    assert digests_queue(now=NOW) == 1
    assert digests_queue(now=NOW + MIN) == 0  # the same day: nothing more
    _deliver_all(NOW + MIN)
    text = mailoutbox[0].body
    assert mailoutbox[0].subject == "[accounts-pool] Daily summary of team Acme"
    assert "Claude: 1 of 2 accounts usable." in text
    assert "  - blocked one: Blocked by the organisation's policy: no OAuth" in text


def test_a_message_held_by_a_killed_worker_is_sent_once_its_claim_runs_out(team, alice, account):
    with receivers.receiver(200) as hook:
        _webhook(team, alice, hook.url, kinds=["needs_relogin"])
        _relogin(account)
        notifications_evaluate(now=NOW)
        Delivery.objects.update(claimed_until=NOW + 2 * MIN)  # a worker took it, then died
        assert deliveries_due(now=NOW + MIN) == []
        assert _deliver_all(NOW + 3 * MIN) == [DeliveryOutcome.DELIVERED]
    assert len(hook.accepted()) == 1


def test_a_deleted_channel_drops_its_pending_messages(team, alice, account):
    channel, _ = _webhook(team, alice, "http://127.0.0.1:9/x", kinds=["needs_relogin"])
    _relogin(account)
    notifications_evaluate(now=NOW)
    delivery_id = Delivery.objects.get().pk
    channel.delete()
    assert delivery_attempt(delivery_id=delivery_id, now=NOW) == DeliveryOutcome.SKIPPED


def test_the_ticks_cheap_read_gives_the_pages_verdicts(team, pool, account):
    make_account(pool, label="blocked", policy_status="blocked", policy_message="no")
    make_account(pool, label="cooling", cooldown_until=NOW + timedelta(hours=1))
    _relogin(account)
    cheap = selectors.team_verdicts(team, now=NOW)
    full = selectors.team_overview(team, now=NOW)
    assert [(p.pk, [(r.account.pk, r.verdict) for r in rows]) for p, rows in cheap] == [
        (p.pk, [(r.account.pk, r.verdict) for r in rows]) for p, rows in full
    ]


@pytest.mark.parametrize("accounts", [1, 8])
def test_an_evaluation_costs_the_same_queries_for_more_accounts(
    team, alice, pool, accounts, django_assert_max_num_queries
):
    _webhook(team, alice, "http://127.0.0.1:9/x")
    for n in range(accounts):
        _usable(make_account(pool, label=f"a{n}"))
    notifications_evaluate(now=NOW)
    with django_assert_max_num_queries(11):  # 9, and the forecast's windows and points
        assert notifications_evaluate(now=NOW + MIN) == 0


def test_a_queued_message_is_not_queued_again_until_its_task_is_presumed_lost(team, alice, account):
    _webhook(team, alice, "http://127.0.0.1:9/x", kinds=["needs_relogin"])
    _relogin(account)
    notifications_evaluate(now=NOW)
    first = deliveries_due(now=NOW)
    assert len(first) == 1
    assert deliveries_due(now=NOW + MIN) == []  # its task waits for a worker
    assert deliveries_due(now=NOW + 3 * MIN) == first  # the task was lost: queued again


def test_a_label_with_line_breaks_cannot_add_email_headers(team, alice, pool, mailoutbox):
    account = make_account(pool, label="evil\nBcc: thief@evil.test")
    channel_create(
        team=team,
        name="m",
        channel_type="email",
        target="lead@acme.test",
        kinds=["needs_relogin"],
        created_by=alice,
    )
    _relogin(account)
    notifications_evaluate(now=NOW)
    assert _deliver_all(NOW) == [DeliveryOutcome.DELIVERED]
    assert mailoutbox[0].subject.startswith("[accounts-pool] Account evil Bcc: thief@evil.test")
    assert mailoutbox[0].recipients() == ["lead@acme.test"]


def test_a_failure_inside_is_logged_and_retried_like_any_other(team, alice, account):
    _webhook(team, alice, "http://127.0.0.1:9/x", kinds=["needs_relogin"])
    _relogin(account)
    notifications_evaluate(now=NOW)
    with connection.cursor() as cursor:  # a key rotated out from under it
        cursor.execute("UPDATE accounts_pool_channel SET signing_secret = 'not a fernet token'")
    assert _deliver_all(NOW) == [DeliveryOutcome.FAILED]
    assert DeliveryAttempt.objects.get().error == "internal error (SecretDecryptionError)"


def test_a_pool_below_its_minimum_is_announced_after_five_minutes(team, alice, pool, account):
    _usable(make_account(pool, label="second"))
    pool.minimum_usable = 2
    pool.save()
    _webhook(team, alice, "http://127.0.0.1:9/x", kinds=["pool_low"])
    account.cooldown_until = NOW + timedelta(hours=2)
    account.save()
    assert [notifications_evaluate(now=NOW + n * MIN) for n in range(7)] == [0] * 5 + [1, 0]
    payload = Delivery.objects.get().payload
    assert payload["title"] == "Pool Claude: below its minimum usable accounts"
    assert payload["reason"] == "1 of 2 accounts usable; the pool's minimum is 2."
    assert (payload["pool"]["usable"], payload["pool"]["minimum_usable"]) == (1, 2)


def test_a_refresh_backing_off_for_over_an_hour_is_announced_with_its_end(team, alice, account):
    _webhook(team, alice, "http://127.0.0.1:9/x", kinds=["refresh_backoff"])
    until = NOW + timedelta(hours=3)
    account.access_expires_at, account.refresh_backoff_until = NOW - MIN, until
    account.refresh_error_status, account.refresh_error_at = 503, NOW
    account.save()
    assert sum(notifications_evaluate(now=NOW + n * MIN) for n in range(6)) == 1
    payload = Delivery.objects.get().payload
    assert payload["kind"] == "refresh_backoff"
    assert "HTTP 503 from the token endpoint" in payload["reason"]
    assert payload["until"] == until.isoformat().replace("+00:00", "Z")


def test_the_forecast_running_dry_within_the_hour_arrives_once_and_its_end_once(
    team, alice, pool, account
):
    """Usage climbed from 50% to 70% in the last half hour: at that pace the pool's only account
    is full in about 45 minutes. Announced once after damping across many ticks, with the time,
    the reason and the pool page; a window reset ends it, announced once too."""
    for minutes_ago, used in ((30, 50.0), (15, 60.0), (1, 70.0)):
        at = NOW - minutes_ago * MIN
        QuotaPoint.objects.create(
            account=account,
            window="five_hour",
            minute=at,
            observed_at=at,
            utilization=used,
            resets_at=NOW + timedelta(hours=4),
        )
    QuotaWindow.objects.filter(account=account).update(utilization=70.0)
    with receivers.receiver(200) as hook:
        _webhook(team, alice, hook.url, kinds=["pool_forecast_dry"])
        for minute in range(0, 12):
            notifications_evaluate(now=NOW + minute * MIN)
            _deliver_all(NOW + minute * MIN)
        QuotaWindow.objects.filter(account=account).update(
            utilization=2.0, resets_at=NOW + timedelta(hours=5), checked_at=NOW + 12 * MIN
        )
        for minute in range(12, 24):
            notifications_evaluate(now=NOW + minute * MIN)
            _deliver_all(NOW + minute * MIN)
    messages = [json.loads(got.body) for got in hook.accepted()]
    assert [(m["kind"], m["state"], m["at"]) for m in messages] == [
        ("pool_forecast_dry", "started", _iso(NOW + 5 * MIN)),
        ("pool_forecast_dry", "ended", _iso(NOW + 17 * MIN)),
    ]
    started, ended = messages
    assert started["title"] == "Pool Claude: forecast to run dry within the hour"
    runs_dry_at = datetime.fromisoformat(started["runs_dry_at"])
    assert NOW + 40 * MIN < runs_dry_at < NOW + 60 * MIN
    assert f"used up at {runs_dry_at:%H:%M} UTC" in started["reason"]
    assert "five-hour window" in started["reason"]
    assert started["url"].endswith("/pools/claude/")
    assert ended["title"] == "Pool Claude: no longer forecast to run dry within the hour"
    assert ended["runs_dry_at"] is None


def _iso(when) -> str:
    return when.isoformat().replace("+00:00", "Z")
