"""Rotating the encryption key to the end: run with `K2,K1`, `manage.py reencrypt`, then `K2`
alone, and every page, checkout and task works. A row under a key nobody configured excludes
only its account, with its own reason, and /healthz says so."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
import respx
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from accounts_pool import crypto
from accounts_pool.models import Account, AccountEvent, OAuthLogin
from accounts_pool.services.cycle import cycle_run
from accounts_pool.services.keys import api_token_create, consumer_key_create
from accounts_pool.services.onboarding import account_store_tokens, oauth_login_start
from accounts_pool.services.quota import account_check_quota
from accounts_pool.services.reencrypt import reencrypt_model
from accounts_pool.services.refresh import account_refresh
from accounts_pool.tasks import verify_secrets

from .api import Api
from .conftest import ACCESS, REFRESH, make_account
from .test_relay import MESSAGES, relay, reply
from .test_relay import usable as relay_usable

K1 = settings.ACCOUNTS_POOL_ENCRYPTION_KEYS[0]
K2 = Fernet.generate_key().decode()
K0 = Fernet.generate_key().decode()  # a key no process is configured with
UNREADABLE = "credential_unreadable"


def _raw(model, pk, column):
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(model._meta.db_table)
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


def _usable(pool, label, **fields):
    now = timezone.now()
    account = make_account(
        pool,
        label=label,
        quota_checked_at=now,
        access_expires_at=now + timedelta(hours=7),
        **fields,
    )
    account.quota_windows.create(key="five_hour", label="5-hour", utilization=10, checked_at=now)
    return account


@pytest.fixture
def rows(pool, alice):
    """Rows of every kind, written under K1."""
    return {
        "oauth": _usable(pool, "main", priority=10),
        "api_key": Account.objects.create(
            pool=pool, label="key", kind="api_key", api_key="sk-ant-api03-the-api-key", priority=20
        ),
        "disabled": make_account(
            pool, label="off", enabled=False, refresh_token="sk-ant-ort01-of-the-disabled-one"
        ),
        "relogin": make_account(
            pool, label="dead", refresh_token="sk-ant-ort01-rejected", priority=30
        ),
        "login": oauth_login_start(pool=pool, user=alice),
    }


def _reencrypt(*args):
    out = StringIO()
    call_command("reencrypt", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def rotated(rows, settings):
    """K2 first and K1 kept, reencrypt, then K2 alone."""
    dead = rows["relogin"]
    Account.objects.filter(pk=dead.pk).update(relogin_required_for=dead.refresh_token_fingerprint)
    settings.ACCOUNTS_POOL_ENCRYPTION_KEYS = [K2, K1]
    printed = _reencrypt()
    settings.ACCOUNTS_POOL_ENCRYPTION_KEYS = [K2]
    return rows, printed


def test_reencrypt_moves_every_row_of_every_kind_under_the_first_key(rotated):
    rows, printed = rotated
    assert "accounts_pool.Account: 4 rows, 4 re-encrypted" in printed
    assert "accounts_pool.OAuthLogin: 1 rows, 1 re-encrypted" in printed
    k2 = Fernet(K2.encode())
    for account in Account.objects.all():
        for column in ("access_token", "refresh_token", "api_key"):
            stored = _raw(Account, account.pk, column)
            assert not stored or k2.decrypt(stored.encode())
    (login,) = OAuthLogin.objects.all()
    assert k2.decrypt(_raw(OAuthLogin, login.pk, "verifier").encode())
    assert Account.objects.get(pk=rows["oauth"].pk).refresh_token == REFRESH


def test_the_keyed_marks_follow_the_key(rotated):
    rows, _ = rotated
    dead = Account.objects.get(pk=rows["relogin"].pk)
    assert dead.refresh_token_fingerprint == crypto.fingerprint("sk-ant-ort01-rejected")
    assert dead.needs_relogin  # still the same rejected token, now keyed by K2


def test_running_it_again_changes_nothing(rotated):
    printed = _reencrypt()
    assert "accounts_pool.Account: 4 rows, 0 re-encrypted, 4 already under the first key" in printed
    assert "every stored secret is under the first key" in printed


def test_with_the_old_key_gone_every_page_checkout_and_task_works(rotated, client, alice):
    rows, _ = rotated
    tool = Api(consumer_key_create(pool=rows["oauth"].pool, name="t", created_by=alice)[1])
    taken = tool.post("/pools/claude/checkout", {})
    assert taken.status_code == 200, taken.content
    assert taken.json()["credential"]["access_token"] == ACCESS
    assert _pages_and_api_answer(client, alice, rows) == []
    for account in rows.values():
        if isinstance(account, Account):
            account_refresh(account_id=account.pk, force=True)
            account_check_quota(account_id=account.pk)
    assert not Account.objects.filter(credential_unreadable_at__isnull=False).exists()
    assert client.get("/healthz").json()["secrets"] == "ok"


def _pages_and_api_answer(client, user, rows):
    """Every page and API read about the pool and its accounts: those that did not answer 200."""
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    client.force_login(user)
    api = Api(api_token_create(user=user, name="t")[1])
    urls = [reverse("pool", args=["claude"]), reverse("team", args=["acme"])]
    urls += [reverse("admin:accounts_pool_account_changelist")]
    urls += [reverse("admin:accounts_pool_accountevent_changelist")]
    for account in rows.values():
        if isinstance(account, Account):
            urls += [reverse("account", args=[account.pk])]
            urls += [reverse("admin:accounts_pool_account_change", args=[account.pk])]
    failed = [url for url in urls if client.get(url).status_code != 200]
    paths = ["/pools/claude"] + [
        f"/accounts/{a.pk}" for a in rows.values() if isinstance(a, Account)
    ]
    return failed + [path for path in paths if api.get(path).status_code != 200]


@pytest.fixture
def stranded(rotated, pool):
    """After the rotation, one account written under K0, which no process has: first in line
    for checkout."""
    with override_settings(ACCOUNTS_POOL_ENCRYPTION_KEYS=[K0]):
        return _usable(pool, "stranded", priority=1, refresh_token="sk-ant-ort01-stranded")


def test_a_row_under_an_unknown_key_excludes_only_its_account(rotated, stranded, alice):
    tool = Api(consumer_key_create(pool=stranded.pool, name="t", created_by=alice)[1])
    taken = tool.post("/pools/claude/checkout", {})
    assert taken.status_code == 200, taken.content
    assert taken.json()["account"]["label"] == "main"
    lead = Api(api_token_create(user=alice, name="lead")[1])
    accounts = {a["label"]: a for a in lead.get("/pools/claude").json()["accounts"]}
    assert accounts["stranded"]["status"] == "excluded"
    assert accounts["stranded"]["reasons"][0]["code"] == UNREADABLE
    assert accounts["main"]["status"] == "usable"
    event = AccountEvent.objects.get(account=stranded, operation="decryption")
    assert (event.outcome, event.actor) == ("unreadable", "cycle")


def test_its_pages_say_why_and_nothing_fails(rotated, stranded, client, alice):
    rows, _ = rotated
    account_check_quota(account_id=stranded.pk)  # the cycle finds it first here
    rows["stranded"] = stranded
    assert _pages_and_api_answer(client, alice, rows) == []
    page = client.get(reverse("account", args=[stranded.pk])).content.decode()
    assert "cannot be decrypted with the configured encryption keys" in page
    detail = Api(api_token_create(user=alice, name="x")[1]).get(f"/accounts/{stranded.pk}").json()
    assert detail["reasons"][0]["code"] == UNREADABLE


def test_tasks_leave_it_alone_instead_of_raising_every_tick(rotated, stranded):
    assert account_refresh(account_id=stranded.pk, force=True).outcome == UNREADABLE
    assert account_check_quota(account_id=stranded.pk, force=True).outcome == UNREADABLE
    later = timezone.now() + timedelta(hours=6)  # every token due
    touched = {r.account_id for r in cycle_run(now=later)}
    assert stranded.pk not in touched
    assert AccountEvent.objects.filter(account=stranded, operation="decryption").count() == 1


def test_healthz_reports_it_and_the_sweep_finds_what_nothing_touched(rotated, stranded, client):
    assert client.get("/healthz").json()["secrets"] == "ok"  # nothing has read it yet
    assert verify_secrets() == 1
    body = client.get("/healthz").json()
    assert body["secrets"] == "1 account(s) unreadable with the configured keys"
    assert body["status"] == "degraded"


def test_reencrypt_names_the_row_and_exits_non_zero(rotated, stranded):
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("reencrypt", stdout=out)
    assert raised.value.returncode == 3
    assert f"1 unreadable (ids {stranded.pk})" in out.getvalue()
    marked = Account.objects.filter(pk=stranded.pk, credential_unreadable_at__isnull=False)
    assert marked.exists()


def test_putting_the_key_back_and_reencrypting_clears_it(rotated, stranded, settings):
    _reencrypt_quietly()
    settings.ACCOUNTS_POOL_ENCRYPTION_KEYS = [K2, K0]
    printed = _reencrypt()
    assert "1 re-encrypted" in printed
    account = Account.objects.get(pk=stranded.pk)
    assert account.credential_unreadable_at is None
    assert account.verdict(timezone.now()).status == "usable"


def test_logging_it_in_again_clears_it(rotated, stranded):
    account_check_quota(account_id=stranded.pk)  # found and marked
    target = Account.objects.defer(*Account.SECRET_FIELDS).get(pk=stranded.pk)
    account_store_tokens(account=target, refresh_token="sk-ant-ort01-new", actor="alice")
    account = Account.objects.get(pk=stranded.pk)
    assert account.credential_unreadable_at is None
    assert account.refresh_token == "sk-ant-ort01-new"
    reasons = [r.code for r in account.verdict(timezone.now()).reasons]
    assert UNREADABLE not in reasons


def _reencrypt_quietly():
    with pytest.raises(CommandError):
        _reencrypt()


def test_a_pending_login_under_an_unknown_key_asks_to_start_again(rotated, pool, alice):
    with override_settings(ACCOUNTS_POOL_ENCRYPTION_KEYS=[K0]):
        started = oauth_login_start(pool=pool, user=alice)
    lead = Api(api_token_create(user=alice, name="lead")[1])
    state = OAuthLogin.objects.order_by("-pk").values_list("state", flat=True)[0]
    answer = lead.post(
        "/pools/claude/oauth/complete",
        {"session": started.session, "code": f"code#{state}", "label": "new"},
    )
    assert answer.status_code == 410, answer.content
    assert "start again" in answer.json()["error"]["message"]


class Interrupted(Exception):
    pass


def test_an_interrupted_run_keeps_its_committed_batches_and_the_next_run_finishes(rows, settings):
    settings.ACCOUNTS_POOL_ENCRYPTION_KEYS = [K2, K1]

    def stop(tally, last_pk):
        raise Interrupted(last_pk)  # killed right after the first batch committed

    with pytest.raises(Interrupted):
        reencrypt_model(Account, Account.SECRET_FIELDS, now=timezone.now(), batch=2, on_batch=stop)
    printed = _reencrypt("--batch-size", "2")
    assert "accounts_pool.Account: 4 rows, 2 re-encrypted, 2 already under the first key" in printed


@pytest.mark.parametrize("size", ["0", "-3", "1000001"])
def test_a_bad_batch_size_is_refused_and_changes_nothing(rows, settings, size):
    settings.ACCOUNTS_POOL_ENCRYPTION_KEYS = [K2, K1]
    before = _raw(Account, rows["oauth"].pk, "refresh_token")
    with pytest.raises(CommandError, match="--batch-size must be between"):
        _reencrypt("--batch-size", size)
    assert _raw(Account, rows["oauth"].pk, "refresh_token") == before


@pytest.mark.django_db(transaction=True)
def test_the_relay_skips_an_unreadable_account_for_the_next(pool, alice):
    relay_usable(pool, "ana")
    with override_settings(ACCOUNTS_POOL_ENCRYPTION_KEYS=[K0]):
        stranded = relay_usable(pool, "stranded", priority=1)
    secret = consumer_key_create(pool=pool, name="laptop", created_by=alice)[1]
    with respx.mock(assert_all_called=False) as upstream:
        route = upstream.post(MESSAGES).mock(return_value=reply("from ana"))
        status, _, body = relay(secret)
    assert status == 200, body
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-ant-oat01-ana"
    marked = Account.objects.filter(pk=stranded.pk, credential_unreadable_at__isnull=False)
    assert marked.exists()


def test_the_levers_on_its_page_say_what_to_do(rotated, stranded, client, alice):
    client.force_login(alice)
    for action in ("refresh", "check-quota"):
        page = client.post(reverse("account_action", args=[stranded.pk, action]), follow=True)
        assert page.status_code == 200
        assert "put the key back and run manage.py reencrypt" in page.content.decode()
