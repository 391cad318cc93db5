"""Model instances from hand-written SQL, for the few statements of the approval decision where
building a queryset costs more than running it.

Django compiles a queryset to SQL on every evaluation. Measured in-process on the decision's
reads (2026-12-06, timeit, ``bench.approvals``' data), a read built here costs 11-66 us and its
queryset twin 114-634 us; the decision makes seven of them (token, policy set, request, roles,
decisions so far, dataset version, parties), about 2.5 ms of CPU saved on a decision whose server
CPU is 3-4 ms. Its two writes: ``insert`` 53 us less than ``save()``, ``update`` 18 us against
105; with ``save()`` instead, ``bench.approvals`` fell from 470 to 409 decisions/s and its p99
rose from 51 to 58 ms (medians of four alternating runs): both run under the write lock that
every decision waits for.

A statement names its tables and columns from the models' metadata (``table``, ``columns``) and
runs on Django's cursor (query logging, execute wrappers and error translation as for any query).
Each row becomes an instance as a queryset makes it: the backend's and the fields' converters
applied, then ``Model.from_db`` (``load``); a joined row is assigned to the foreign key
(``request.project = project``), which fills the cache ``select_related`` fills. ``insert`` and
``update`` write one row as ``save()`` writes it, values prepared by their fields, but send no
signal: use them only for models no signal handler listens to (none does here; governed writes
never go through signals).

Only plain, indexed statements belong here, each with a parity test against its ORM twin
(``tests/test_hand_written_reads.py``); anything with filtering logic of its own stays a queryset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any
from weakref import WeakKeyDictionary

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


Converters = tuple[list[str], list[tuple[Any, list[Callable[..., Any]]]]]
# Per connection (each thread has its own): the backend's converters are bound to it.
_converters_of: WeakKeyDictionary[Any, dict[type[Model], Converters]] = WeakKeyDictionary()


def _converters(model: type[Model], connection: Any) -> Converters:
    known = _converters_of.setdefault(connection, {})
    found = known.get(model)
    if found is None:
        converters = []
        for field in model._meta.concrete_fields:
            col = field.get_col(model._meta.db_table)
            converters.append((col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)))
        found = known[model] = ([f.attname for f in model._meta.concrete_fields], converters)
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


def fetch(sql: str, params: Sequence[Any], using: str = "default") -> list[tuple[Any, ...]]:
    """Every row of ``sql`` (``%s`` parameters, as for any Django cursor)."""
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def insert(instance: Model, using: str = "default") -> None:
    """INSERT ``instance`` as a new row, as ``instance.save()`` would (``auto_now_add`` and other
    ``pre_save`` hooks applied), and set its primary key. No signal is sent."""
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
    with connection.cursor() as inserted:
        inserted.execute(sql + (f" RETURNING {quote(pk.column)}" if returning else ""), values)
        if pk not in fields:
            setattr(instance, pk.attname, inserted.fetchone()[0] if returning else inserted.lastrowid)
    instance._state.adding, instance._state.db = False, using


def update(instance: Model, fields: Sequence[str], using: str = "default") -> None:
    """UPDATE ``fields`` of ``instance``'s row, as ``instance.save(update_fields=fields)`` would.
    No signal is sent."""
    connection = connections[using]
    opts = instance._meta
    chosen = [opts.get_field(name) for name in fields]
    values = [f.get_db_prep_save(f.pre_save(instance, False), connection) for f in chosen]
    quote = connection.ops.quote_name
    sql = (
        f"UPDATE {quote(opts.db_table)} SET {', '.join(f'{quote(f.column)} = %s' for f in chosen)} "  # noqa: S608 (names from model metadata)
        f"WHERE {quote(opts.pk.column)} = %s"
    )
    with connection.cursor() as updated:
        updated.execute(sql, [*values, instance.pk])
        if updated.rowcount != 1:
            raise opts.model.DoesNotExist(f"no {opts.label} row {instance.pk} to update")
