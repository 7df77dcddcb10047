"""Written SQL runs on a cursor each connection keeps; query logging and reconnects still hold."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts_pool import rawsql


@pytest.mark.django_db(transaction=True)
def test_the_kept_cursor_follows_the_connection_when_it_is_replaced():
    on = rawsql.db()
    assert rawsql.fetch(on, "SELECT 1", []) == [(1,)]
    first = on.connection
    on.close()

    assert rawsql.fetch(on, "SELECT 2", []) == [(2,)]
    assert on.connection is not first


@pytest.mark.django_db
def test_a_connection_logging_its_queries_logs_written_sql():
    on = rawsql.db()
    with CaptureQueriesContext(connection) as queries:
        rawsql.fetch(on, "SELECT 3", [])
        rawsql.execute(on, "UPDATE accounts_pool_team SET name = name WHERE id = %s", [0])

    assert [q["sql"] for q in queries.captured_queries] == [
        "SELECT 3",
        "UPDATE accounts_pool_team SET name = name WHERE id = 0",
    ]
    assert rawsql.fetch(on, "SELECT 4", []) == [(4,)]
