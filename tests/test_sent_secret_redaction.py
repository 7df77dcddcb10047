"""A provider error that quotes the very secret the call sent (a refresh token, an access token,
of any shape, whole or cut short) leaves no trace of it in the account's last errors, its
history, or anywhere in the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps
from django.db import connection
from django.utils import timezone

from accounts_pool.crypto import fingerprint
from accounts_pool.models import AccountEvent
from accounts_pool.redaction import redact
from accounts_pool.services.keys import consumer_key_create
from accounts_pool.services.quota import account_check_quota
from accounts_pool.services.refresh import account_refresh

from .api import Api
from .conftest import NOW, make_account
from .conftest import POLICY_MESSAGE as POLICY

# Shapes the fixed patterns miss: short, no sk-ant- prefix, no "Bearer".
SHORT_REFRESH = "rt.9f8e7d6c5b"
SHORT_ACCESS = "at_4b3c2d1e0f9a"


def _everything_stored() -> str:
    """Every row of every table of the app, as the database holds it (ciphertext stays
    ciphertext: this reads around the ORM)."""
    dump: list[str] = []
    with connection.cursor() as cursor:
        for model in apps.get_app_config("accounts_pool").get_models():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(model._meta.db_table)}")  # noqa: S608
            dump.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(dump)


def _assert_nowhere(account, secret: str) -> None:
    account.refresh_from_db()
    stored = [account.refresh_error_message, account.quota_error_message]
    stored += list(AccountEvent.objects.filter(account=account).values_list("message", flat=True))
    assert not any(secret in text or secret[:8] in text for text in stored), stored
    assert secret not in _everything_stored()


def test_a_token_endpoint_error_quoting_the_sent_refresh_token_is_masked(pool, provider):
    account = make_account(
        pool,
        refresh_token=SHORT_REFRESH,
        refresh_token_fingerprint=fingerprint(SHORT_REFRESH),
        access_expires_at=NOW + timedelta(hours=1),
    )
    provider.token.respond(
        400,
        json={
            "error": "invalid_request",
            "error_description": f"refresh_token {SHORT_REFRESH} (prefix {SHORT_REFRESH[:9]}) "
            "is malformed",
        },
    )
    account_refresh(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert "[redacted]" in account.refresh_error_message
    assert "is malformed" in account.refresh_error_message  # the prose stays
    _assert_nowhere(account, SHORT_REFRESH)


def test_a_usage_endpoint_error_quoting_the_sent_access_token_is_masked(pool, provider):
    account = make_account(
        pool, access_token=SHORT_ACCESS, quota_checked_at=NOW - timedelta(hours=1)
    )
    provider.usage.respond(
        500,
        json={"type": "error", "error": {"type": "api_error", "message": f"bad {SHORT_ACCESS}"}},
    )
    account_check_quota(account_id=account.pk, now=NOW)
    account.refresh_from_db()
    assert account.quota_error_message == "bad [redacted]"
    _assert_nowhere(account, SHORT_ACCESS)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("token rt.9f8e7d6c5b expired", "token [redacted] expired"),
        ("token starting rt.9f8e7d6... expired", "token starting [redacted]... expired"),
        ("the request was invalid", "the request was invalid"),
    ],
)
def test_it_masks_what_the_call_sent_whole_or_in_part(message, expected):
    assert redact(message, secrets=[SHORT_REFRESH]) == expected


def test_a_report_quoting_the_checked_out_token_keeps_none_of_it(pool, alice):
    now = timezone.now()
    account = make_account(
        pool, access_token=SHORT_ACCESS, access_expires_at=now + timedelta(hours=7)
    )
    account.quota_windows.create(key="five_hour", label="5-hour", utilization=1, checked_at=now)
    tool = Api(consumer_key_create(pool=pool, name="laptop", created_by=alice)[1])
    checkout = tool.post("/pools/claude/checkout", {}).json()
    assert checkout["credential"]["access_token"] == SHORT_ACCESS
    message = f"{POLICY} (token {SHORT_ACCESS})"
    answer = tool.post(
        f"/checkouts/{checkout['checkout_id']}/report", {"status": 403, "message": message}
    )
    assert answer.status_code == 200, answer.content
    account.refresh_from_db()
    assert account.policy_status == "blocked"
    assert SHORT_ACCESS not in account.policy_message
    _assert_nowhere(account, SHORT_ACCESS)
