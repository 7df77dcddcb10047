"""The PostgreSQL backend checks a kept connection by looking at its socket, not by asking the
server: no round trip on a healthy connection, a new connection after the server closed one."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import close_old_connections, connection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _observer() -> psycopg.Connection:
    """A second connection to the test database, to watch and stop the first."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    return psycopg.connect(**params, autocommit=True)


def test_a_healthy_kept_connection_is_checked_without_a_query():
    pid = _backend()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'last statement before the check'")
    assert connection.is_usable()
    with _observer() as observer:
        row = observer.execute(
            "SELECT query, state FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()
    assert row == ("SELECT 'last statement before the check'", "idle")


def test_a_connection_the_server_closed_is_replaced_before_it_is_used():
    pid = _backend()
    with _observer() as observer:
        assert observer.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while observer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the backend did not stop"
            time.sleep(0.05)
    assert not connection.is_usable()
    # What Django does before each request and (config/celery.py) each task.
    close_old_connections()
    assert _backend() != pid
    assert connection.is_usable()


def test_a_connection_inside_a_transaction_gets_the_round_trip_check():
    pid = _backend()
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            assert connection.is_usable()
            with _observer() as observer:
                row = observer.execute(
                    "SELECT query, state FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
        finally:
            cursor.execute("ROLLBACK")
    assert row == ("SELECT 1", "idle in transaction")
