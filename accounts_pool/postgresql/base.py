"""Django's PostgreSQL backend, with a health check that needs no round trip and compiled
timestamp parsing.

Django checks a kept connection before a request or task reuses it (CONN_HEALTH_CHECKS) by
sending `SELECT 1`: one more round trip on every checkout, about a tenth of its cost on both
sides. An idle connection has nothing to read, while a connection the server has closed
(restart, a terminated backend, an idle timeout, a pooler gone away) has its goodbye or the end
of the stream waiting in the socket. So looking at the socket tells them apart without asking
the server. A connection that is not idle, or whose socket cannot be read, gets Django's own
check.

Django reads every `timestamptz` through a subclass of psycopg's pure-Python loader, so that
values carry its time zone; psycopg[binary] compiles that loader, but a subclass does not get
the compiled one. A checkout reads about a dozen timestamps. The loader here asks the compiled
one (whichever psycopg has) and sets the time zone the same way."""

from __future__ import annotations

import functools
import select
from datetime import datetime, tzinfo
from typing import Any

import psycopg
from django.db.backends.postgresql import base
from psycopg import adapters, pq
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader

TIMESTAMPTZ_OID = 1184
_PSYCOPG_TIMESTAMPTZ = adapters.get_loader(TIMESTAMPTZ_OID, pq.Format.TEXT)


class TimestamptzLoader(Loader):
    """psycopg's own timestamptz loader, the result in `timezone` as Django's loader gives it
    (Django compares `timezone` before each cursor to decide whether to register its own)."""

    timezone: tzinfo | None = None

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        assert _PSYCOPG_TIMESTAMPTZ is not None
        self._load = _PSYCOPG_TIMESTAMPTZ(oid, context).load

    def load(self, data: Buffer) -> datetime:
        value: datetime = self._load(data)
        return value.replace(tzinfo=self.timezone)


@functools.cache
def _loader_in(timezone: tzinfo | None) -> type[TimestamptzLoader]:
    """The loader class for one time zone, made once (Django keys its own the same way)."""
    return type(
        "TimestamptzLoader", (TimestamptzLoader,), {"timezone": timezone, "__module__": __name__}
    )


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        connection.adapters.register_loader(TIMESTAMPTZ_OID, _loader_in(self.timezone))
        return connection

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
