"""The manual levers from the shell: refresh_cycle and create_api_token."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts_pool.models import ApiToken
from accounts_pool.services.keys import api_token_authenticate

from .conftest import make_account, policy_403, token_answer, usage_answer

MIN = timedelta(minutes=1)


def _cycle(*args: str) -> str:
    out = StringIO()
    call_command("refresh_cycle", *args, stdout=out)
    return out.getvalue()


def test_refresh_cycle_prints_one_line_per_account_touched(pool, provider):
    # The command runs on the real clock.
    make_account(pool, access_expires_at=timezone.now() + MIN, quota_checked_at=None)
    provider.token.respond(200, json=token_answer())
    provider.usage.respond(403, json=policy_403())
    output = _cycle("--pool", pool.slug)
    lines = output.strip().splitlines()
    assert lines[0].endswith("token: refreshed")
    assert "quota: policy_blocked (OAuth authentication is currently not allowed" in lines[1]
    assert lines[-1] == "cycle done: 2 result(s)"


def test_account_failures_are_data_not_a_failed_command(pool, provider):
    make_account(pool, access_expires_at=timezone.now())
    provider.token.respond(403)
    output = _cycle()
    assert "token: rejected until " in output


def test_force_runs_one_account_even_when_nothing_is_due(pool, provider):
    account = make_account(pool, access_expires_at=timezone.now() + timedelta(days=1))
    provider.token.respond(200, json=token_answer())
    provider.usage.respond(200, json=usage_answer())
    output = _cycle("--account", str(account.pk), "--force")
    assert f"account {account.pk} token: refreshed" in output
    assert f"account {account.pk} quota: checked" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pool", "nope"], "No pool with slug 'nope'"),
        (["--account", "999999"], "No account with id 999999"),
        (["--force"], "--force needs --account"),
    ],
)
def test_refresh_cycle_rejects_bad_arguments(db, args, message):
    with pytest.raises(CommandError, match=message):
        _cycle(*args)


def test_create_api_token_prints_a_token_once_and_stores_its_hash(alice):
    out = StringIO()
    call_command("create_api_token", "alice", "--name", "laptop", stdout=out)
    secret = out.getvalue().strip()
    token = ApiToken.objects.get(user=alice)
    assert token.name == "laptop"
    assert secret not in token.token_hash
    assert token.prefix == secret[:12]
    assert api_token_authenticate(secret) == token
    assert api_token_authenticate(secret + "x") is None


def test_create_api_token_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="No user 'mallory'"):
        call_command("create_api_token", "mallory")
    assert ApiToken.objects.count() == 0
