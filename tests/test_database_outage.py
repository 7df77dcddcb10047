"""The database refused, blackholed, or too slow: checkout and the API answer 503 JSON with
Retry-After instead of a 500 page after a hang, pages answer 503, and /healthz answers within
its bound naming the part that is down.

The outage is made by pointing the connection settings elsewhere (a port nobody listens on, a
socket that accepts and never answers) and dropping the kept connection; the next query meets
it as a request would."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts_pool.services.keys import consumer_key_create

from . import processes
from .api import Api
from .conftest import make_account
from .test_relay import relay


@contextmanager
def _pointed(**changes: object) -> Iterator[None]:
    """The default connection's settings changed (the kept connection dropped) until exit."""
    saved = {name: connection.settings_dict.get(name) for name in changes}
    saved_options = dict(connection.settings_dict.get("OPTIONS", {}))
    connection.close()
    connection.settings_dict.update(changes)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        connection.settings_dict["OPTIONS"] = saved_options


@contextmanager
def _refused() -> Iterator[None]:
    if connection.vendor == "postgresql":
        with _pointed(HOST="127.0.0.1", PORT=str(processes.free_port())):
            yield
    else:
        with _pointed(NAME="/nonexistent/accounts-pool/db.sqlite3"):
            yield


@contextmanager
def _blackholed() -> Iterator[None]:
    """A server that completes the TCP handshake (the kernel does, from the backlog) and never
    says a word."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        options = {**connection.settings_dict["OPTIONS"], "connect_timeout": 2}
        with _pointed(HOST="127.0.0.1", PORT=str(hole.getsockname()[1]), OPTIONS=options):
            yield


@pytest.fixture
def served(transactional_db, pool, alice):
    """A pool with a usable account, a tool's key, and a lead logged in to the pages."""
    now = timezone.now()
    account = make_account(pool, quota_checked_at=now, access_expires_at=now + timedelta(hours=7))
    account.quota_windows.create(key="five_hour", label="5-hour", utilization=5, checked_at=now)
    return Api(consumer_key_create(pool=pool, name="tool", created_by=alice)[1])


def _assert_unavailable(response) -> None:
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response["Retry-After"] == "5"


def test_checkout_answers_503_json_with_retry_after_when_the_database_refuses(served):
    with _refused():
        _assert_unavailable(served.post("/pools/claude/checkout", {}))
        _assert_unavailable(served.get("/pools/claude"))
    assert served.post("/pools/claude/checkout", {}).status_code == 200  # and back


def test_pages_answer_503_when_the_database_refuses(served, client, alice):
    client.force_login(alice)
    with _refused():
        response = client.get(reverse("pool", args=["claude"]))
    assert response.status_code == 503
    assert response["Retry-After"] == "5"


def test_healthz_names_the_database_when_it_refuses(served, client):
    with _refused():
        body = client.get("/healthz").json()
    assert body["status"] == "unavailable"
    assert body["database"].startswith("database: ")
    assert (body["broker"], body["secrets"]) == ("ok", "unknown")


@pytest.mark.postgres
def test_a_blackholed_database_gets_503_after_the_connect_timeout_not_a_hang(served):
    with _blackholed():
        started = time.monotonic()
        _assert_unavailable(served.post("/pools/claude/checkout", {}))
        took = time.monotonic() - started
    assert took < 10, took  # connect_timeout 2 s (it hung 31 s without one)


@pytest.mark.postgres
def test_healthz_answers_within_its_bound_with_the_database_blackholed(served, client, settings):
    settings.HEALTHZ_TIMEOUT = 1.0
    with _blackholed():
        started = time.monotonic()
        response = client.get("/healthz")
        took = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["database"] == "database: no answer within 1 s"
    assert took < 3, took


@pytest.mark.postgres
def test_a_statement_past_the_statement_timeout_answers_503(served, pool):
    """A row locked by another session holds checkout's write; the server cancels it."""
    options = {**connection.settings_dict["OPTIONS"], "options": "-c statement_timeout=300"}
    account = pool.accounts.get()
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"}) as other:
        other.execute("SELECT 1 FROM accounts_pool_account WHERE id = %s FOR UPDATE", [account.pk])
        with _pointed(OPTIONS=options):
            _assert_unavailable(served.post("/pools/claude/checkout", {}))


@pytest.mark.postgres
def test_connections_carry_the_configured_timeouts(transactional_db):
    connection.close()  # a new one, as a request or task makes (this one ran migrations)
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "30s"
    assert connection.settings_dict["OPTIONS"]["connect_timeout"] == 3


def test_the_relay_answers_503_in_anthropics_shape_when_the_database_refuses(served, pool, alice):
    secret = consumer_key_create(pool=pool, name="relay", created_by=alice)[1]
    with _refused():
        status, headers, body = relay(secret)
    assert status == 503, body
    assert json.loads(body)["error"]["type"] == "api_error"
    assert headers["Retry-After"] == "5"


@pytest.mark.postgres
def test_migrations_run_without_the_statement_timeout(transactional_db):
    connection.close()
    call_command("migrate", "accounts_pool", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"
    connection.close()  # the next test's connection carries the timeout again
