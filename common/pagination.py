"""The one paging of every API list: ``?limit=`` and ``?offset=``, answered in the envelope
``{"count", "next", "previous", "results"}``. Its own module, apart from :mod:`common.api`: DRF
imports the default pagination class while its generic views are being defined, and
:mod:`common.api` builds on those views."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    """``?limit=`` and ``?offset=`` for every list: ASCII digits, ``limit`` 1 to :attr:`max_limit`,
    ``offset`` within the database's 64-bit integers; anything else is a 400 naming the parameter
    (never a silent default, never a 500 from an integer the database cannot hold)."""

    default_limit = 100
    max_limit = 1000
    max_offset = 2**62  # offset + limit must still fit in a signed 64-bit integer
    limit_query_description = f"How many results: 1 to {max_limit} (default {default_limit})."
    offset_query_description = "How many results to skip (default 0)."

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        bounds = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, self.max_offset)}
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            low, high = bounds[parameter["name"]]
            parameter["schema"].update(minimum=low, maximum=high)
        return parameters

    def get_limit(self, request: Any) -> int:
        return self._parameter(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request: Any) -> int:
        return self._parameter(request, self.offset_query_param, 0, 0, self.max_offset)

    @staticmethod
    def _parameter(request: Any, name: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)) or not low <= int(raw) <= high:
            raise exceptions.ValidationError({name: [f"an integer from {low} to {high}"]})
        return int(raw)
