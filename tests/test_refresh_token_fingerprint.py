"""A refresh token's fingerprint is keyed by the encryption keys, and the migration that
introduced it gives existing rows the keyed fingerprint of their token."""

from __future__ import annotations

import hashlib
import importlib

from cryptography.fernet import Fernet
from django.apps import apps
from django.test import override_settings

from accounts_pool import crypto
from accounts_pool.models import Account

from .conftest import REFRESH, make_account

migration = importlib.import_module("accounts_pool.migrations.0008_keyed_refresh_token_fingerprint")


def _legacy(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def test_it_is_a_full_hmac_and_not_the_plain_hash():
    mark = crypto.fingerprint(REFRESH)
    assert len(mark) == 64
    assert mark != hashlib.sha256(REFRESH.encode()).hexdigest()


def test_it_differs_under_another_key(settings):
    before = crypto.fingerprint(REFRESH)
    settings.ACCOUNTS_POOL_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    assert crypto.fingerprint(REFRESH) != before


def test_after_a_rotation_the_old_keys_fingerprint_is_still_among_them(settings):
    old = crypto.fingerprint(REFRESH)
    settings.ACCOUNTS_POOL_ENCRYPTION_KEYS = [
        Fernet.generate_key().decode(),
        *settings.ACCOUNTS_POOL_ENCRYPTION_KEYS,
    ]
    assert crypto.fingerprints(REFRESH) == [crypto.fingerprint(REFRESH), old]
    assert crypto.fingerprint(REFRESH) != old


def test_an_empty_secret_has_no_fingerprint():
    assert (crypto.fingerprint(""), crypto.fingerprints("")) == ("", [])


def _old_style(account: Account, *, relogin_for: str = "") -> None:
    Account.objects.filter(pk=account.pk).update(
        refresh_token_fingerprint=_legacy(REFRESH), relogin_required_for=relogin_for
    )


def test_the_migration_gives_a_row_the_keyed_fingerprint_and_keeps_needs_relogin(pool):
    account = make_account(pool)
    _old_style(account, relogin_for=_legacy(REFRESH))
    migration.keyed_fingerprints(apps, None)
    account.refresh_from_db()
    assert account.refresh_token_fingerprint == crypto.fingerprint(REFRESH)
    assert account.needs_relogin


def test_the_migration_clears_a_stale_needs_relogin_mark(pool):
    account = make_account(pool)
    _old_style(account, relogin_for=_legacy("sk-ant-ort01-an-older-rejected-token"))
    migration.keyed_fingerprints(apps, None)
    account.refresh_from_db()
    assert (account.refresh_token_fingerprint, account.relogin_required_for) == (
        crypto.fingerprint(REFRESH),
        "",
    )


def test_the_migration_leaves_a_row_it_cannot_decrypt_as_it_was(pool):
    with override_settings(ACCOUNTS_POOL_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]):
        unreadable = make_account(pool, label="other key")
    readable = make_account(pool, label="ours")
    _old_style(unreadable, relogin_for=_legacy(REFRESH))
    _old_style(readable)
    migration.keyed_fingerprints(apps, None)
    marks = dict(Account.objects.values_list("label", "refresh_token_fingerprint"))
    assert marks == {"other key": _legacy(REFRESH), "ours": crypto.fingerprint(REFRESH)}
    relogin = dict(Account.objects.values_list("label", "relogin_required_for"))
    assert relogin == {"other key": _legacy(REFRESH), "ours": ""}


def test_the_migration_back_restores_the_old_style(pool):
    account = make_account(pool)
    migration.legacy_fingerprints(apps, None)
    account.refresh_from_db()
    assert account.refresh_token_fingerprint == _legacy(REFRESH)
