"""Password logins, the pages' and the admin's, lock out after 20 wrong passwords per username
or per address, for 15 minutes, during which the right password fails too; admins see it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.test import Client

# axes ships no type information; its model is reached through the app registry.
AccessAttempt = apps.get_model("axes", "AccessAttempt")
LOGIN_PAGES = ["/login/", "/admin/login/"]


def _login(path, username, password, address="203.0.113.7"):
    client = Client(REMOTE_ADDR=address)
    response = client.post(path, {"username": username, "password": password})
    return response, "_auth_user_id" in client.session


@pytest.fixture
def staff_alice(alice):
    alice.is_staff = True
    alice.save()
    return alice


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_it_locks_a_username_out_after_20_wrong_passwords_from_anywhere(path, staff_alice):
    for n in range(20):
        _login(path, "alice", "wrong", address=f"198.51.100.{n}")

    response, logged_in = _login(path, "alice", "alice-password-1", address="192.0.2.1")

    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert not logged_in


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_it_locks_an_address_out_after_20_wrong_passwords_for_any_usernames(path, staff_alice):
    for n in range(20):
        _login(path, f"guess{n}", "wrong")

    assert _login(path, "alice", "alice-password-1")[0].status_code == 429
    assert _login(path, "alice", "alice-password-1", address="192.0.2.1")[1]


def test_19_wrong_passwords_do_not_lock_anyone_out(alice):
    for _ in range(19):
        _login("/login/", "alice", "wrong")

    assert _login("/login/", "alice", "alice-password-1")[1]


def test_the_lockout_ends_after_15_minutes(alice):
    for _ in range(20):
        _login("/login/", "alice", "wrong")
    assert not _login("/login/", "alice", "alice-password-1")[1]

    past = AccessAttempt.objects.get().attempt_time - timedelta(minutes=15, seconds=1)
    AccessAttempt.objects.update(attempt_time=past)

    assert _login("/login/", "alice", "alice-password-1")[1]


def test_the_limit_and_the_period_are_settings(alice, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        _login("/login/", "alice", "wrong")

    response, logged_in = _login("/login/", "alice", "alice-password-1")

    assert (response.status_code, logged_in) == (429, False)
    assert "locked for 15 minutes" in response.content.decode()


def test_admins_see_the_lockout_in_the_admin(alice):
    for _ in range(20):
        _login("/login/", "alice", "wrong")
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", password="root-password-1"))

    page = admin.get("/admin/axes/accessattempt/").content.decode()

    assert "alice" in page
    assert "203.0.113.7" in page


def test_behind_the_proxy_the_address_is_the_one_the_proxy_appended(alice, settings):
    settings.BEHIND_TLS_PROXY = True
    for n in range(20):
        Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 203.0.113.7").post(
            "/login/", {"username": f"guess{n}", "password": "wrong"}
        )

    elsewhere = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.1")
    elsewhere.post("/login/", {"username": "alice", "password": "alice-password-1"})

    assert "_auth_user_id" in elsewhere.session
    assert _login("/login/", "alice", "alice-password-1")[0].status_code == 429
