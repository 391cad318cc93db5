"""Declared schemas of a deployment's ``target`` and ``guard`` (JSON objects a request carries),
checked before a row or a ledger entry is written.

Each is a DRF serializer whose fields take JSON values as they are: DRF's own fields coerce
(``IntegerField`` takes ``"8"`` and ``8.0``, ``ChoiceField`` compares ``str(value)``), and a
deployment's digest covers these objects, so what is stored must be exactly what was checked.
A field left out is its default, checked like any given value (a default outside bounds that a
setting narrowed is refused too). The first problem, in the order the fields are declared, is
raised as one ``DomainError`` (``invalid_input``) naming the field as ``target.max_tokens`` or
``guard.entities[1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.settings import api_settings

from common.errors import DomainError
from serving.grants import GUARD_MODES, TARGET_FIELDS  # what a grant carries, checked again by the server

GUARD_ENTITIES = ("EMAIL_ADDRESS", "CREDIT_CARD", "PHONE_NUMBER", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "PERSON")
GUARD_FIELDS = ("mode", "entities")

__all__ = [
    "GUARD_ENTITIES",
    "GUARD_FIELDS",
    "GUARD_MODES",
    "TARGET_FIELDS",
    "GuardSpec",
    "JsonObject",
    "TargetSpec",
    "guard_clean",
    "invalid_input",
    "spec_clean",
    "target_clean",
]

Bound = int | Callable[[], int]  # a callable bound reads a setting when the value is checked


def invalid_input(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


class _JsonValue(serializers.Field):
    """A JSON value taken as it is; missing, it is ``default`` (a callable is called for it), and
    a missing or null value goes through ``to_internal_value`` like any other."""

    def __init__(self, *, default: Any, **kwargs: Any) -> None:
        super().__init__(required=False, **kwargs)
        self.missing = default

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is empty:
            data = self.missing() if callable(self.missing) else self.missing
        return False, data

    def to_representation(self, value: Any) -> Any:
        return value


class WholeNumber(_JsonValue):
    """A JSON integer (never a bool, a float or a string) from ``low`` to ``high``."""

    def __init__(self, *, low: Bound, high: Bound, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.low, self.high = low, high

    def to_internal_value(self, data: Any) -> int:
        low = self.low() if callable(self.low) else self.low
        high = self.high() if callable(self.high) else self.high
        if not isinstance(data, int) or isinstance(data, bool) or not low <= data <= high:
            raise serializers.ValidationError(f"must be a whole number from {low} to {high}, got {data!r}")
        return data


class LowercaseText(_JsonValue):
    """A JSON string, kept without surrounding blanks and in lower case."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError(f"must be a string, got {data!r}")
        return data.strip().lower()


class OneOf(_JsonValue):
    """A JSON string among ``choices``; ``message`` is formatted with ``choices`` and ``value``."""

    def __init__(self, *, choices: tuple[str, ...], message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices, self.message = choices, message

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or data not in self.choices:
            raise serializers.ValidationError(self.message.format(choices=", ".join(self.choices), value=data))
        return data


class ListOf(_JsonValue):
    """A JSON array (never a string or an object) whose items ``child`` checks, each under its
    position."""

    def __init__(self, *, child: serializers.Field, what: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.child, self.what = child, what
        self.child.bind(field_name="", parent=self)

    def to_internal_value(self, data: Any) -> list[Any]:
        if not isinstance(data, list):
            raise serializers.ValidationError(f"expected a list of {self.what}, got {type(data).__name__}")
        items, errors = [], {}
        for position, item in enumerate(data):
            try:
                items.append(self.child.run_validation(item))
            except serializers.ValidationError as exc:
                errors[position] = exc.detail
        if errors:
            raise serializers.ValidationError(errors)
        return items


class JsonObject(serializers.Serializer):
    """A JSON object with the declared fields only: anything else is refused, naming the fields
    that are known, before any field is checked."""

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        return False, data  # a missing or null object is refused as any non-object is

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError(f"expected an object, got {type(data).__name__}")
        known = tuple(self.fields)
        unknown = sorted(str(name) for name in set(data) - set(known))
        if unknown:
            raise serializers.ValidationError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return dict(super().to_internal_value(data))


class TargetSpec(JsonObject):
    """Where and how big a deployment runs. A GPU type names one this platform has, and only with
    a ``gpu_count`` of 1 or more."""

    gpu_type = LowercaseText(default="")
    gpu_count = WholeNumber(low=0, high=lambda: settings.TRAINING_MAX_GPUS, default=0)
    replicas = WholeNumber(low=1, high=16, default=1)
    max_batch = WholeNumber(low=1, high=256, default=1)
    max_tokens = WholeNumber(low=1, high=lambda: settings.SERVING_MAX_TOKENS, default=64)
    max_prompt_chars = WholeNumber(low=1, high=100_000, default=4000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        gpu_type, types = attrs["gpu_type"], settings.TRAINING_GPU_TYPES
        if attrs["gpu_count"] and gpu_type not in types:
            raise serializers.ValidationError(
                {"gpu_type": f"this platform has no GPU type {gpu_type!r}; it has {', '.join(types)}"}
            )
        if not attrs["gpu_count"] and gpu_type:
            raise serializers.ValidationError({"gpu_type": "a GPU type needs a gpu_count of 1 or more"})
        return attrs


class GuardSpec(JsonObject):
    """The runtime guard: its mode and the entity types it looks for (kept sorted, once each).
    Every entity is checked before it is hashed (a non-string entity once crashed ``set()``)."""

    mode = OneOf(choices=GUARD_MODES, message="one of {choices}, got {value!r}", default="redact")
    entities = ListOf(
        child=OneOf(choices=GUARD_ENTITIES, message="known entity types: {choices}; got {value!r}", default=None),
        what="entity types",
        default=lambda: list(GUARD_ENTITIES),
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {**attrs, "entities": sorted(set(attrs["entities"]))}


def _first_problem(field: str, detail: Any) -> tuple[str, str]:
    """The first problem in a DRF error detail, with the path of the field it is about."""
    if isinstance(detail, Mapping):
        name, inner = next(iter(detail.items()))
        if name == api_settings.NON_FIELD_ERRORS_KEY:
            return _first_problem(field, inner)
        return _first_problem(f"{field}[{name}]" if isinstance(name, int) else f"{field}.{name}", inner)
    if isinstance(detail, list):
        return _first_problem(field, detail[0])
    return field, str(detail)


def spec_clean(spec: type[JsonObject], field: str, raw: Any) -> dict[str, Any]:
    """``raw`` as ``spec`` declares it (defaults filled in, values normalised), or a
    ``DomainError`` naming the first field at fault under ``field``."""
    try:
        return dict(spec().run_validation(raw))
    except serializers.ValidationError as exc:
        raise invalid_input(*_first_problem(field, exc.detail)) from None


def target_clean(raw: Any) -> dict[str, Any]:
    return spec_clean(TargetSpec, "target", raw)


def guard_clean(raw: Any) -> dict[str, Any]:
    return spec_clean(GuardSpec, "guard", raw)
