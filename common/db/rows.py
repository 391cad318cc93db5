"""Model instances from hand-written SQL, for the few hot paths where building a queryset costs
more than running it.

Django compiles a queryset to SQL on every evaluation: on the approval decision (bench.approvals)
that compilation, not the database, was most of the CPU. Here a statement names its tables and
columns from the models' metadata (``columns``), runs through the connection's cursor (so the
backend, its parameters and the test-suite's query capture all still apply), and each row becomes
an instance as a queryset would make it: the backend's and the fields' converters applied, then
``Model.from_db`` (``load``). Joined rows fill the foreign-key caches (``attach``), as
``select_related`` would.

Only plain, indexed single-table or joined reads belong here: anything with filtering logic of its
own stays a queryset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections
from django.db.models import Model


def table(model: type[Model]) -> str:
    """The quoted table name of ``model``."""
    return connections["default"].ops.quote_name(model._meta.db_table)


def columns(model: type[Model], alias: str) -> str:
    """``"alias"."col", ...`` for every concrete field of ``model``, in field order (what ``load``
    expects)."""
    quote = connections["default"].ops.quote_name
    return ", ".join(f"{quote(alias)}.{quote(f.column)}" for f in model._meta.concrete_fields)


def width(model: type[Model]) -> int:
    """How many columns ``columns(model, ...)`` selects."""
    return len(model._meta.concrete_fields)


def _converters(model: type[Model], using: str) -> list[tuple[Any, list[Any]]]:
    connection = connections[using]
    cache = connection.__dict__.setdefault("_row_converters", {})
    found = cache.get(model)
    if found is None:
        found = []
        for field in model._meta.concrete_fields:
            col = field.get_col(model._meta.db_table)
            found.append((col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)))
        cache[model] = found
    return found


def load(model: type[Model], values: Sequence[Any], offset: int = 0, using: str = "default") -> Any:
    """An instance of ``model`` from ``values[offset:offset + width(model)]``, converted as a
    queryset converts them."""
    connection = connections[using]
    converted = []
    for (col, converters), value in zip(_converters(model, using), values[offset:], strict=False):
        for converter in converters:
            value = converter(value, col, connection)
        converted.append(value)
    return model.from_db(using, [f.attname for f in model._meta.concrete_fields], converted)


def attach(instance: Model, field: str, related: Model) -> None:
    """Fill ``instance.<field>``'s cache with ``related``, as ``select_related`` does."""
    instance._meta.get_field(field).set_cached_value(instance, related)


def fetch(sql: str, params: Sequence[Any], using: str = "default") -> list[tuple[Any, ...]]:
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
