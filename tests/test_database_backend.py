"""The PostgreSQL backend checks a kept connection by looking at its socket, not by asking the
server: no round trip on a healthy connection, a new connection after the server closed one."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import close_old_connections, connection

from accounts_pool import rawsql
from accounts_pool.postgresql.base import TimestamptzLoader

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


def _terminate(pid: int) -> None:
    """Stop the connection's server process, as a restart or an idle timeout would."""
    with _observer() as observer:
        assert observer.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while observer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the backend did not stop"
            time.sleep(0.05)
    assert not connection.is_usable()


def test_a_connection_the_server_closed_is_replaced_before_it_is_used():
    pid = _backend()
    _terminate(pid)
    # What Django does before each request and (config/celery.py) each task.
    close_old_connections()
    assert _backend() != pid
    assert connection.is_usable()


def test_written_sql_first_in_a_request_gets_the_same_check():
    on = rawsql.db()
    pid = rawsql.fetch(on, "SELECT pg_backend_pid()", [])[0][0]
    _terminate(pid)
    close_old_connections()
    assert rawsql.fetch(on, "SELECT pg_backend_pid()", [])[0][0] != pid


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


def test_timestamps_read_as_django_reads_them():
    """The compiled timestamptz loader gives the same instants, in the same time zone object,
    as Django's own loader."""
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        register_tzloader,
    )

    sql = (
        "SELECT '2026-11-29 14:05:00.123456+01'::timestamptz,"
        " '1999-12-31 23:59:59-08'::timestamptz, NULL::timestamptz"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        ours = cursor.fetchone()
        register_tzloader(connection.timezone, cursor.cursor)  # Django's loader, on this cursor
        cursor.execute(sql)
        django = cursor.fetchone()
    assert ours == django
    assert [v.tzinfo for v in ours[:2]] == [connection.timezone] * 2
    assert [v.tzinfo for v in django[:2]] == [connection.timezone] * 2
    assert ours[0].isoformat() == "2026-11-29T13:05:00.123456+00:00"
    assert ours[2] is None
    loader = connection.connection.adapters.get_loader(1184, psycopg.pq.Format.TEXT)
    assert issubclass(loader, TimestamptzLoader)
