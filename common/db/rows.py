"""Model instances from hand-written SQL, for the few hot paths where building a queryset costs
more than running it.

Django compiles a queryset to SQL on every evaluation: on the approval decision (bench.approvals)
that compilation, not the database, was most of the CPU. Here a statement names its tables and
columns from the models' metadata (``columns``), runs on the backend's own cursor (``cursor``: its
parameter style, its errors translated into Django's, the test-suite's query capture still
applies), and each row becomes an instance as a queryset would make it: the backend's and the
fields' converters applied, then ``Model.from_db`` (``load``). Joined rows fill the foreign-key
caches (``attach``), as ``select_related`` would.

Writes the same way (``insert``, ``update``): one row by primary key, each value prepared by its
field (``pre_save`` then ``get_db_prep_save``, as ``Model.save`` prepares it). No signal is sent:
use them only for models no signal handler listens to (none does in this project; governed
writes never go through signals).

Only plain, indexed single-table or joined reads and single-row writes belong here: anything
with filtering logic of its own stays a queryset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from django.db import connections
from django.db.models import Model


def table(model: type[Model]) -> str:
    """The quoted table name of ``model``."""
    return _quoted(model, None, connections["default"].vendor)


def columns(model: type[Model], alias: str) -> str:
    """``"alias"."col", ...`` for every concrete field of ``model``, in field order (what ``load``
    expects)."""
    return _quoted(model, alias, connections["default"].vendor)


@cache
def _quoted(model: type[Model], alias: str | None, vendor: str) -> str:
    # Built once per model, alias and database vendor: a statement asks for it on every call.
    quote = connections["default"].ops.quote_name
    if alias is None:
        return quote(model._meta.db_table)
    return ", ".join(f"{quote(alias)}.{quote(f.column)}" for f in model._meta.concrete_fields)


def width(model: type[Model]) -> int:
    """How many columns ``columns(model, ...)`` selects."""
    return len(model._meta.concrete_fields)


def _converters(model: type[Model], connection: Any) -> tuple[list[str], list[tuple[Any, list[Any]]]]:
    cache = connection.__dict__.setdefault("_row_converters", {})
    found = cache.get(model)
    if found is None:
        converters = []
        for field in model._meta.concrete_fields:
            col = field.get_col(model._meta.db_table)
            converters.append((col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)))
        found = cache[model] = ([f.attname for f in model._meta.concrete_fields], converters)
    return found


def load(model: type[Model], values: Sequence[Any], offset: int = 0, using: str = "default") -> Any:
    """An instance of ``model`` from ``values[offset:offset + width(model)]``, converted as a
    queryset converts them."""
    connection = connections[using]
    attnames, converters = _converters(model, connection)
    converted = list(values[offset : offset + len(attnames)])
    for i, (col, functions) in enumerate(converters):
        for function in functions:
            converted[i] = function(converted[i], col, connection)
    return model.from_db(using, attnames, converted)


def attach(instance: Model, field: str, related: Model) -> None:
    """Fill ``instance.<field>``'s cache with ``related``, as ``select_related`` does."""
    instance._meta.get_field(field).set_cached_value(instance, related)


@contextmanager
def cursor(using: str = "default") -> Iterator[Any]:
    """The backend's cursor (``%s`` parameters on every backend), without the wrapper Django puts
    around it for each statement when nothing needs that wrapper.

    The wrapper logs and times statements for ``connection.queries`` and runs the connection's
    execute wrappers; measured on the approval decision, it cost more than SQLite took to run the
    statement (18 of 33 microseconds per read). So: when the connection logs its queries (DEBUG,
    or a test capturing them) or has an execute wrapper, Django's cursor; otherwise the backend's,
    after the checks Django's makes (connection health, a transaction broken by an earlier error),
    with database errors translated into Django's as Django's cursor translates them."""
    connection = connections[using]
    if connection.queries_logged or connection.execute_wrappers:
        with connection.cursor() as wrapped:
            yield wrapped
        return
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        raw = connection.create_cursor()
        try:
            yield raw
        finally:
            raw.close()


def fetch(sql: str, params: Sequence[Any], using: str = "default") -> list[tuple[Any, ...]]:
    with cursor(using) as found:
        found.execute(sql, params)
        return found.fetchall()


def insert(instance: Model, using: str = "default") -> None:
    """INSERT ``instance`` as a new row, as ``instance.save()`` would (``auto_now_add`` and other
    ``pre_save`` hooks applied), and set its primary key."""
    connection = connections[using]
    opts = instance._meta
    pk = opts.pk
    fields = [f for f in opts.concrete_fields if not (f is pk and getattr(instance, f.attname) is None)]
    values = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608 (names from model metadata)
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    returning = pk not in fields and connection.features.can_return_columns_from_insert
    with cursor(using) as inserted:
        inserted.execute(sql + (f" RETURNING {quote(pk.column)}" if returning else ""), values)
        if pk not in fields:
            setattr(instance, pk.attname, inserted.fetchone()[0] if returning else inserted.lastrowid)
    instance._state.adding, instance._state.db = False, using


def update(instance: Model, fields: Sequence[str], using: str = "default") -> None:
    """UPDATE ``fields`` of ``instance``'s row, as ``instance.save(update_fields=fields)`` would."""
    connection = connections[using]
    opts = instance._meta
    chosen = [opts.get_field(name) for name in fields]
    values = [f.get_db_prep_save(f.pre_save(instance, False), connection) for f in chosen]
    quote = connection.ops.quote_name
    sql = (
        f"UPDATE {quote(opts.db_table)} SET {', '.join(f'{quote(f.column)} = %s' for f in chosen)} "  # noqa: S608 (names from model metadata)
        f"WHERE {quote(opts.pk.column)} = %s"
    )
    with cursor(using) as updated:
        updated.execute(sql, [*values, instance.pk])
        if updated.rowcount != 1:
            raise opts.model.DoesNotExist(f"no {opts.label} row {instance.pk} to update")
