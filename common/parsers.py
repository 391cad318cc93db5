"""The API's one JSON parser: the input boundary every JSON body crosses before a view reads it.

A body is refused before any serializer or service sees it when it is:

- larger than ``API_MAX_BODY_BYTES`` (413 ``body_too_large``; Django's own
  ``DATA_UPLOAD_MAX_MEMORY_SIZE`` refuses larger ones still before they are read, answered the
  same way by ``common.api.exception_handler``);
- not UTF-8 or not JSON (400 ``malformed_request``, as DRF's parser answers);
- nested deeper than ``API_MAX_JSON_DEPTH`` arrays and objects (Python's JSON decoder recurses,
  and past about a thousand levels it raised ``RecursionError``: a 500);
- holding a value the ledger's canonical JSON (RFC 8785) cannot record exactly: an integer outside
  ±(2^53-1) (``rfc8785.IntegerDomainError`` inside ``ledger_append`` or a digest: a 500) or a
  number too large for a double (``1e400`` parses as infinity);
- holding a string or a key with a NUL character (PostgreSQL stores none) or a lone surrogate
  (not Unicode text: it cannot be encoded as UTF-8), or an object that names a key twice
  (I-JSON, RFC 7493: which of the two counts would depend on the parser).

These are 400 ``invalid_input`` naming the top-level field that holds the value, and the path to it
inside the field (``hyperparameters``: ``seed: 9007199254740993 is outside …``); a body that is not
an object is named ``non_field_errors``. Nothing is written: the view has not run.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers, status

# RFC 8785 serialises numbers as IEEE 754 doubles: the integers it records exactly are those of
# I-JSON (RFC 7493 section 2.2), the range ``rfc8785.dumps`` accepts (tests/test_input_boundary.py
# holds the two equal).
SAFE_INTEGER_MAX = 2**53 - 1
# An integer literal this long is past the range whatever its digits: it is not converted at all
# (Python refuses to convert one of over 4300 digits, and converting is quadratic below that).
_LONGEST_SAFE_LITERAL = len(str(-SAFE_INTEGER_MAX))
_NOT_TEXT_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
# Strings (a key when a colon follows) and brackets: enough to follow the nesting of a body too
# deep for the decoder, and to name the top-level key under which it went too deep.
_NESTING_TOKENS = re.compile(r'(?P<key>"[^"\\]*(?:\\.[^"\\]*)*"\s*:)|"[^"\\]*(?:\\.[^"\\]*)*"|(?P<bracket>[\[\]{}])')


class BodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than this API accepts: at most {limit} bytes")


class _LongInteger:
    """An integer literal too long to be in range, kept unconverted for the error message."""

    __slots__ = ("digits",)

    def __init__(self, literal: str) -> None:
        self.digits = len(literal.lstrip("-"))


class _RepeatedKeys(dict):  # type: ignore[type-arg]
    """An object that named a key twice (the value kept is the last, as ``json`` keeps it)."""

    repeated: list[str]


def _integer(literal: str) -> int | _LongInteger:
    return int(literal) if len(literal) <= _LONGEST_SAFE_LITERAL else _LongInteger(literal)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    seen: set[str] = set()
    repeated = _RepeatedKeys(value)
    repeated.repeated = sorted({key for key, _ in pairs if key in seen or seen.add(key)})  # type: ignore[func-returns-value]
    return repeated


def _constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _where(path: tuple[Any, ...]) -> str:
    """``("target", "replicas", 2)`` -> ``"replicas[2]"``: the place inside the top-level field."""
    text = ""
    for step in path[1:]:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


def _scalar_problem(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return "text with a NUL character or a lone surrogate" if _NOT_TEXT_CHARACTERS.search(value) else None
    if kind is int:
        if -SAFE_INTEGER_MAX <= value <= SAFE_INTEGER_MAX:
            return None
        return f"{value} is outside -(2^53-1) to 2^53-1, the integers the ledger records exactly"
    if kind is float:
        return None if math.isfinite(value) else "a number too large to record (past the range of a double)"
    if kind is _LongInteger:
        return f"an integer of {value.digits} digits is outside -(2^53-1) to 2^53-1, what the ledger records exactly"
    return None  # true, false, null


def _container_problem(value: list[Any] | dict[str, Any], depth: int, max_depth: int) -> str | None:
    if depth > max_depth:
        return f"nested deeper than {max_depth} levels of arrays and objects"
    if isinstance(value, _RepeatedKeys):
        return f"names the key {value.repeated[0]!r} more than once"
    if isinstance(value, dict) and any(_NOT_TEXT_CHARACTERS.search(key) for key in value):
        return "has a key with a NUL character or a lone surrogate"
    return None


def bound_problems(data: Any, *, max_depth: int) -> dict[str, list[str]]:
    """The first problem found in each top-level field of a parsed body (see the module's
    docstring), as a serializer's errors: ``{field: ["where: what"]}``. Iterative: the depth of
    ``data`` costs no stack; a path is built for containers and for a value found wrong only."""
    found: dict[str, list[str]] = {}
    by_field = isinstance(data, dict)  # a problem is named by its top-level field

    def report(path: tuple[Any, ...], problem: str) -> None:
        field = str(path[0]) if path and by_field else "non_field_errors"
        where = _where(path) if by_field else _where(("", *path))
        found.setdefault(field, [f"{where}: {problem}" if where else problem])

    if not isinstance(data, (dict, list)):
        problem = _scalar_problem(data)
        return {} if problem is None else {"non_field_errors": [problem]}
    stack: list[tuple[Any, tuple[Any, ...], int]] = [(data, (), 1)]
    while stack:
        container, path, depth = stack.pop()
        if path and by_field and str(path[0]) in found:
            continue
        problem = _container_problem(container, depth, max_depth)
        if problem is not None:
            report(path, problem)
            continue
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in items:
            if isinstance(item, (dict, list)):
                stack.append((item, (*path, key), depth + 1))
            else:
                problem = _scalar_problem(item)
                if problem is not None:
                    report((*path, key), problem)
    return found


def _too_deep(text: str, max_depth: int) -> dict[str, list[str]]:
    """The error of a body too deep for the decoder, naming the top-level key it went too deep
    under (the first place past ``max_depth``, found by following strings and brackets only)."""
    problem = f"nested deeper than {max_depth} levels of arrays and objects"
    depth, key, top_is_object = 0, None, text.lstrip().startswith("{")
    for token in _NESTING_TOKENS.finditer(text):
        if token["key"] is not None:
            if depth == 1 and top_is_object:
                key = json.loads(token["key"].rstrip()[:-1].rstrip())
        elif token["bracket"] in ("[", "{"):
            depth += 1
            if depth > max_depth:
                break
        elif token["bracket"] is not None:
            depth -= 1
    if top_is_object and key is not None:
        return {str(key): [problem]}
    return {"non_field_errors": [f"the body is {problem}"]}


class BoundedJSONParser(parsers.JSONParser):
    """DRF's JSON parser behind the input boundary of the module's docstring."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        parser_context = parser_context or {}
        limit = settings.API_MAX_BODY_BYTES
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise BodyTooLarge(limit)
        encoding = parsers.get_encoding(parser_context)  # a text encoding (a ParseError otherwise)
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - the body is not {encoding} text: {exc}") from None
        max_depth = settings.API_MAX_JSON_DEPTH
        try:
            data = json.loads(text, object_pairs_hook=_object, parse_int=_integer, parse_constant=_constant)
        except RecursionError:
            raise exceptions.ValidationError(_too_deep(text, max_depth)) from None
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        problems = bound_problems(data, max_depth=max_depth)
        if problems:
            raise exceptions.ValidationError(problems)
        return data
