"""The admin page "Inventory at a time" (``admin:reports_inventory``, ``/admin/reports/inventory/``):
a date-time field and the deployments at that time, with their model version, approvals, dataset
versions, scans and evaluations, each fact linking to its ledger entry and its proof page.

Who may open it: whoever may view the ledger's entries in the admin (the entries' own admin page
answers, so the two never disagree); each reader sees the facts of the entries they read.

The page is added to the admin from this package (``inventory_urls``), as the factsheet is: the
reports' admin (``audits/reports/admin.py``) lists these URLs among its own.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from common.errors import DomainError


def inventory_urls(admin_site: admin.AdminSite) -> list[URLPattern]:
    return [path("inventory/", admin_site.admin_view(inventory_view), name="reports_inventory")]


def may_view_inventory(request: HttpRequest) -> bool:
    """Whether ``request``'s user may open the page (the report runs' list links it for them)."""
    return _entries_admin_allows(request)


def _entries_admin_allows(request: HttpRequest) -> bool:
    from audits.ledger.models import Entry

    try:
        return admin.site.get_model_admin(Entry).has_view_permission(request)
    except admin.sites.NotRegistered:
        return False


def _at_from_form(raw: str | None) -> Any:
    """The form's ``datetime-local`` value (no zone: the admin's time zone), or an ISO 8601
    date-time with its zone; empty: now."""
    from audits.reports.inventory.api import parse_at

    if raw and "T" in raw and len(raw.strip()) in (16, 19):  # 2026-12-01T09:30[:00], as the browser sends it
        try:
            naive = timezone.datetime.fromisoformat(raw.strip())
        except ValueError:
            return parse_at(raw)
        if naive.tzinfo is None:
            return parse_at(timezone.make_aware(naive, timezone.get_current_timezone()).isoformat())
    return parse_at(raw)


def inventory_view(request: HttpRequest) -> HttpResponse:
    from audits.reports.inventory.selectors import inventory_at

    if not _entries_admin_allows(request):
        raise PermissionDenied("You may not read the ledger's entries.")
    raw = request.GET.get("at", "")
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Inventory at a time",
        "subtitle": None,
        "raw_at": raw,
        "zone": timezone.get_current_timezone_name(),
    }
    try:
        at = _at_from_form(raw)
    except DomainError as refused:
        context["error"] = refused.message
        return TemplateResponse(request, "admin/inventory/inventory.html", context, status=400)
    inventory = inventory_at(user=request.user, at=at)
    context.update(
        at=at,
        at_local=timezone.localtime(at).strftime("%Y-%m-%dT%H:%M:%S"),
        inventory=inventory,
        rows=inventory.deployment_rows(),
        proofs=inventory.proofs,
        checkpoint=inventory.checkpoint,
    )
    return TemplateResponse(request, "admin/inventory/inventory.html", context)
