"""Secrets are encrypted at rest; a bad key fails closed."""

from __future__ import annotations

import subprocess

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import override_settings

from accounts_pool import crypto

from . import processes
from .conftest import ACCESS, REFRESH


def _raw(account_id: int) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, refresh_token FROM accounts_pool_account WHERE id = %s",
            [account_id],
        )
        return cursor.fetchone()


def test_tokens_are_stored_as_ciphertext(account):
    raw_access, raw_refresh = _raw(account.pk)
    assert ACCESS not in raw_access
    assert REFRESH not in raw_refresh
    assert raw_access.startswith("gAAAA")  # a Fernet token
    account.refresh_from_db()
    assert (account.access_token, account.refresh_token) == (ACCESS, REFRESH)


def test_a_rotated_key_still_decrypts_old_rows(account, settings):
    old = settings.ACCOUNTS_POOL_ENCRYPTION_KEYS
    settings.ACCOUNTS_POOL_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *old]
    account.refresh_from_db()
    assert account.refresh_token == REFRESH


def test_a_wrong_key_refuses_to_read(account):
    other_key = [Fernet.generate_key().decode()]
    with (
        override_settings(ACCOUNTS_POOL_ENCRYPTION_KEYS=other_key),
        pytest.raises(crypto.SecretDecryptionError),
    ):
        account.refresh_from_db()


@pytest.mark.parametrize(
    ("keys", "says"),
    [("", "Set ACCOUNTS_POOL_ENCRYPTION_KEYS"), ("not-a-key", "key #1 is not a valid Fernet key")],
)
def test_the_app_refuses_to_start_without_a_good_key(keys, says):
    env = processes.child_env(
        ACCOUNTS_POOL_ENCRYPTION_KEYS=keys, DJANGO_SETTINGS_MODULE="config.settings", SECRET_KEY="x"
    )
    done = subprocess.run(
        [str(processes.VENV_BIN / "python"), "manage.py", "check"],
        cwd=processes.ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert says in done.stderr


def test_a_missing_secret_key_names_the_variable():
    env = processes.child_env(DJANGO_SETTINGS_MODULE="config.settings", SECRET_KEY="")
    done = subprocess.run(
        [str(processes.VENV_BIN / "python"), "manage.py", "check"],
        cwd=processes.ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "SECRET_KEY" in done.stderr
