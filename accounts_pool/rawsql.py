"""Hand-written statements that still read and write like the ORM, for the hottest paths.

Building a query through the ORM costs more Python time than PostgreSQL takes to answer it
(about 0.3-0.7 ms per query; bench/checkout.py, bench/cycle.py). On the few statements every
checkout and every refresh runs, the SQL is written out instead, from the models' own table and
column names. Rows become model instances through the same converters the ORM applies
(decryption of encrypted fields, SQLite's datetimes and booleans), so callers see ordinary
models; columns left out are deferred. Values written are prepared as the ORM prepares them
(encryption, datetimes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.sql import Query

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class Columns(Generic[M]):
    """Some columns of one model under a table alias: their SELECT list, and instances back."""

    model: type[M]
    alias: str
    fields: tuple[Field[Any, Any], ...]

    @classmethod
    def of(
        cls,
        model: type[M],
        alias: str,
        names: Iterable[str] | None = None,
        *,
        exclude: Iterable[str] = (),
    ) -> Columns[M]:
        """`names` (default: every column; the primary key always), less `exclude`."""
        meta = model._meta
        wanted = None if names is None else {*names, meta.pk.name}
        left_out = set(exclude)
        fields = tuple(
            f
            for f in meta.concrete_fields
            if (wanted is None or f.name in wanted or f.attname in wanted)
            and f.name not in left_out
        )
        return cls(model, alias, fields)

    @property
    def table(self) -> str:
        return f"{quote(self.model._meta.db_table)} {self.alias}"

    def col(self, name: str) -> str:
        """alias.column of a field by name."""
        field = self.model._meta.get_field(name)
        assert isinstance(field, Field)
        assert field.column
        return f"{self.alias}.{quote(field.column)}"

    def select(self) -> str:
        return ", ".join(f"{self.alias}.{quote(f.column)}" for f in self.fields)

    @cached_property
    def attnames(self) -> list[str]:
        return [f.attname for f in self.fields]

    def build(self, values: Sequence[Any], on: BaseDatabaseWrapper) -> M:
        """A model instance from this part of a row, converted as the ORM converts."""
        return self.model.from_db(on.alias, self.attnames, _convert(self, values, on))

    def values(self, values: Sequence[Any], on: BaseDatabaseWrapper) -> dict[str, Any]:
        """This part of a row by attribute name, converted as the ORM converts, for a reader
        that needs the values and not a model instance."""
        return dict(zip(self.attnames, _convert(self, values, on), strict=True))


def db() -> BaseDatabaseWrapper:
    """The default connection itself (django.db.connection is a proxy: each attribute read
    looks the connection up again)."""
    return connections[DEFAULT_DB_ALIAS]


def quote(name: str) -> str:
    return db().ops.quote_name(name)


def column(model: type[Model], name: str) -> str:
    """A field's column, quoted."""
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return quote(field.column)


def param(value: datetime, on: BaseDatabaseWrapper) -> Any:
    """A datetime as the database driver takes it (SQLite stores naive UTC text)."""
    return on.ops.adapt_datetimefield_value(value)


def fetch(on: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = _run(on, sql, params, lambda cursor: cursor.fetchall())
    return rows


def execute(on: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> int:
    """Run a statement that returns no rows; how many rows it changed."""
    return int(_run(on, sql, params, lambda cursor: cursor.rowcount))


def _run(on: BaseDatabaseWrapper, sql: str, params: Sequence[Any], result: Any) -> Any:
    """Run sql on a cursor the connection keeps for its next statement: making Django's cursor
    for each statement costs about a fifth of a short query's client time. A connection that
    logs its queries (DEBUG, CaptureQueriesContext) gets a new logging cursor each time."""
    if on.queries_logged:
        with on.cursor() as logged:
            logged.execute(sql, params)
            return result(logged)
    # What on.cursor() does first: the health check a kept connection gets once per request
    # or task (a server that went away means a new connection), and the thread check.
    on.close_if_health_check_failed()
    on.ensure_connection()
    on.validate_thread_sharing()
    kept = on.__dict__.get("_rawsql_cursor")
    if kept is None or kept[0] is not on.connection or kept[1] is not on.timezone:
        # Django's cursor reads timestamps in the connection's time zone as it was made.
        kept = on.__dict__["_rawsql_cursor"] = (on.connection, on.timezone, on.cursor())
    cursor = kept[2]
    cursor.execute(sql, params)
    return result(cursor)


def _convert(columns: Columns[Any], values: Sequence[Any], on: BaseDatabaseWrapper) -> list[Any]:
    out = list(values)
    for index, functions in _converters(columns, on):
        value = out[index]
        for function, expression in functions:
            value = function(value, expression, on)
        out[index] = value
    return out


_CACHE: dict[tuple[str, type[Model], tuple[str, ...]], list[tuple[int, list[Any]]]] = {}


def _converters(columns: Columns[Any], on: BaseDatabaseWrapper) -> list[tuple[int, list[Any]]]:
    key = (on.vendor, columns.model, tuple(columns.attnames))
    found = _CACHE.get(key)
    if found is None:
        compiler = Query(columns.model).get_compiler(connection=on)
        table = columns.model._meta.db_table
        expressions = [f.get_col(table) for f in columns.fields]
        by_index = compiler.get_converters(expressions)
        found = [(i, [(fn, expr) for fn in fns]) for i, (fns, expr) in sorted(by_index.items())]
        _CACHE[key] = found
    return found


@dataclass(frozen=True)
class Sql:
    """A raw SQL fragment with its parameters, as a value in `update`."""

    text: str
    params: tuple[Any, ...] = ()


def update(
    on: BaseDatabaseWrapper,
    model: type[Model],
    values: dict[str, Any],
    where: Sql,
) -> int:
    """UPDATE model SET field = value, ... WHERE where; returns the rows changed. Values are
    prepared by their fields (get_db_prep_save); an Sql value is written as it is."""
    meta = model._meta
    assignments: list[str] = []
    params: list[Any] = []
    for name, value in values.items():
        field = meta.get_field(name)
        assert isinstance(field, Field)
        if isinstance(value, Sql):
            assignments.append(f"{on.ops.quote_name(field.column)} = {value.text}")
            params.extend(value.params)
        else:
            assignments.append(f"{on.ops.quote_name(field.column)} = %s")
            params.append(field.get_db_prep_save(value, on))
    table = on.ops.quote_name(meta.db_table)
    # Identifiers from the model's metadata, quoted; values are parameters; `where` and Sql
    # values are the caller's own text, never input.
    sql = f"UPDATE {table} SET {', '.join(assignments)} WHERE {where.text}"  # noqa: S608
    return execute(on, sql, [*params, *where.params])
