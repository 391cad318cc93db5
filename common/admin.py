"""Admin building blocks shared by the apps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.db.models import Model
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from common.errors import DomainError
from common.security_log import refusal

# A list filter by project that offers only the projects of the rows the viewer may see (the
# plain related filter lists every project's slug).
PROJECT_FILTER = ("project", admin.RelatedOnlyFieldListFilter)

DONE = "done"
REFUSED = "refused"

M = TypeVar("M", bound=Model)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Governed rows change only through services (which check permission and write the ledger),
    never through the admin's default save: these pages show, they do not edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _object_fields(obj: Model) -> dict[str, Any]:
    return {"object_type": obj._meta.label_lower, "object_id": obj.pk}


def call_service_for_each(
    request: HttpRequest,
    objects: Iterable[M],
    call: Callable[[M], Any],
    *,
    name: Callable[[M], str] = str,
    refusal_fields: Callable[[M], dict[str, Any]] = _object_fields,
    refusal_event: str = "request.denied",
    outcome: Callable[[Any], str] = lambda _result: DONE,
    each: Mapping[str, str | Callable[[Any], str]] | None = None,
    counted: Mapping[str, str] | None = None,
    nothing: str | None = None,
) -> Counter[str]:
    """An admin action's body: ``call`` (a service, with ``actor=request.user``) once per selected
    object, each in the service's own transaction, and the user told what truly happened.

    ``outcome`` names what the service did from what it returned (default ``"done"``): an approval
    that fills one slot while others stay open did not approve the request, and a token already
    revoked was not revoked now. Each outcome in ``each`` is told once per object
    (``"<name>: <text>"``, the text made from the service's result where it is a function); each
    in ``counted`` once for all (its ``{count}`` filled in); an outcome in neither is counted but
    not told. ``nothing`` is told when no object reached a told outcome and none was refused.

    A ``DomainError`` refuses that object alone: it is told as ``"<name>: <message>"`` after the
    successes and logged as the API logs a refusal (``common.security_log.refusal`` with
    ``refusal_event`` and the object's ``refusal_fields``). Returns how many objects reached each
    outcome, refusals under ``"refused"``.
    """
    each, counted = each or {}, counted or {}
    tally: Counter[str] = Counter()
    told: list[str] = []
    refused: list[str] = []
    for obj in objects:
        try:
            result = call(obj)
        except DomainError as exc:
            tally[REFUSED] += 1
            refused.append(f"{name(obj)}: {exc.message}")
            refusal(request, exc, event=refusal_event, **refusal_fields(obj))
            continue
        kind = outcome(result)
        tally[kind] += 1
        if kind in each:
            text = each[kind]
            told.append(f"{name(obj)}: {text(result) if callable(text) else text}")
    told += [text.format(count=tally[kind]) for kind, text in counted.items() if tally[kind]]
    for line in told:
        messages.success(request, line)
    if nothing is not None and not told and not refused:
        messages.info(request, nothing)
    for line in refused:
        messages.error(request, line)
    return tally


# Rows and items shown of one structured value before "and N more" (a findings list can be long).
READABLE_LIMIT = 100


def readable(value: Any, *, limit: int = READABLE_LIMIT) -> SafeString:
    """A structured (JSON) value as a person reads it, for admin pages: an object as a table of
    names and values, a list of objects that share their names as a table with a column each,
    a list of plain values as a list, nested values in the same way; an empty value as a dash.
    Everything is escaped. Styled by the admin's own table rules (so its dark theme applies);
    the class ``readable`` lets a page's stylesheet tune it."""
    if value is None or value == "" or value == [] or value == {}:
        return mark_safe('<span class="readable-empty">-</span>')
    if isinstance(value, bool):
        return format_html("{}", "yes" if value else "no")
    if isinstance(value, dict):
        items = list(value.items())
        rows = format_html_join(
            "", '<tr><th scope="row">{}</th><td>{}</td></tr>', ((k, readable(v, limit=limit)) for k, v in items[:limit])
        )
        return format_html('<table class="readable">{}{}</table>', rows, _more(len(items), limit, 2))
    if isinstance(value, list):
        if all(isinstance(item, dict) for item in value):
            columns = list(dict.fromkeys(key for item in value for key in item))
            head = format_html_join("", '<th scope="col">{}</th>', ((c,) for c in columns))
            body = format_html_join(
                "",
                "<tr>{}</tr>",
                (
                    (format_html_join("", "<td>{}</td>", ((readable(item.get(c), limit=limit),) for c in columns)),)
                    for item in value[:limit]
                ),
            )
            more = _more(len(value), limit, len(columns))
            return format_html('<table class="readable"><thead><tr>{}</tr></thead><tbody>{}{}</tbody></table>',
                               head, body, more)  # fmt: skip
        items = format_html_join("", "<li>{}</li>", ((readable(item, limit=limit),) for item in value[:limit]))
        more = format_html("<li>and {} more</li>", len(value) - limit) if len(value) > limit else ""
        return format_html('<ul class="readable">{}{}</ul>', items, more)
    return format_html("{}", value)


def _more(total: int, limit: int, span: int) -> SafeString | str:
    return format_html('<tr><td colspan="{}">and {} more</td></tr>', span, total - limit) if total > limit else ""


def readable_field(name: str, description: str | None = None) -> Callable[[Any, Any], SafeString]:
    """A read-only admin field showing the model field ``name`` through ``readable``, for
    ``readonly_fields``/``fields`` in place of the field itself (which the admin prints as JSON):
    ``categories_shown = readable_field("data_subject_categories")``."""

    @admin.display(description=description or name.replace("_", " "))
    def shown(_admin: Any, obj: Any) -> SafeString:
        return readable(getattr(obj, name))

    return shown
