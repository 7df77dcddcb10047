"""Django's PostgreSQL backend with a health check that needs no round trip.

Django checks a kept connection before a request or task reuses it (CONN_HEALTH_CHECKS) by
sending `SELECT 1`: one more round trip on every checkout, about a tenth of its cost on both
sides. An idle connection has nothing to read, while a connection the server has closed
(restart, a terminated backend, an idle timeout, a pooler gone away) has its goodbye or the end
of the stream waiting in the socket. So looking at the socket tells them apart without asking
the server. A connection that is not idle, or whose socket cannot be read, gets Django's own
check."""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        if connection.pgconn.status != pq.ConnStatus.OK:
            return False
        idle = connection.info.transaction_status == pq.TransactionStatus.IDLE
        if not idle or not hasattr(select, "poll"):  # no poll() on Windows
            return bool(super().is_usable())
        try:
            socket = connection.pgconn.socket
        except psycopg.OperationalError:  # libpq has no socket
            return False
        # Anything to read on an idle connection is the server leaving (or, rarely, a
        # notification): a new connection is the safe answer either way.
        waiting = select.poll()
        waiting.register(socket, select.POLLIN | select.POLLPRI)
        return not waiting.poll(0)
