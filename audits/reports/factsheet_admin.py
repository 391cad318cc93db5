"""The factsheet page of a model version in the admin (``admin:reports_factsheet``), and the links
to it from the model versions' list and page.

Who may open a factsheet: whoever may view that model version in the admin. The page asks the
model version's own admin page (``has_view_permission`` and its ``get_queryset``), so the two
never disagree: no view permission answers 403, a version outside the reader's projects 404.

The registry sits on a lower floor and may not import the reports, so the links are added from
here: a column on the model versions' list (``attach_factsheet_column``, called from this app's
admin module) and an object tool on a version's page (the template
``admin/registry/modelversion/change_form.html`` of this app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.html import format_html

if TYPE_CHECKING:
    from audits.reports.factsheet import Factsheet


def factsheet_urls(admin_site: admin.AdminSite) -> list[URLPattern]:
    return [path("factsheet/<int:pk>/", admin_site.admin_view(factsheet_view), name="reports_factsheet")]


def _model_version_admin() -> admin.ModelAdmin:
    from registry.models import ModelVersion

    try:
        return admin.site.get_model_admin(ModelVersion)
    except admin.sites.NotRegistered:
        raise Http404("model versions have no admin page") from None


def factsheet_view(request: HttpRequest, pk: int) -> HttpResponse:
    # The reports' PDF builders (reportlab) load with the page, not with the admin at start-up.
    from audits.reports.factsheet import factsheet_of, final_loss

    model_admin = _model_version_admin()
    if not model_admin.has_view_permission(request):
        raise PermissionDenied("You may not view model versions.")
    queryset = model_admin.get_queryset(request).select_related("model__project", "base__model", "created_by")
    version = get_object_or_404(queryset, pk=pk)
    sheet = factsheet_of(version)
    _link(request, sheet)
    context = {
        **admin.site.each_context(request),
        "title": f"Factsheet of {version}",
        "subtitle": None,
        "opts": version._meta,
        "version": version,
        "version_href": reverse("admin:registry_modelversion_change", args=[version.pk]),
        "sheet": sheet,
        "runs": [(fact, final_loss(fact.obj)) for fact in sheet.runs],
    }
    return TemplateResponse(request, "admin/reports/factsheet.html", context)


def _link(request: HttpRequest, sheet: Factsheet) -> None:
    """Fill in the links this reader may follow: each object's admin page, each entry's page and its
    inclusion proof. The proof page's URL is looked up by name, so the page works before it exists."""
    from audits.ledger.models import Entry

    may_view: dict[type[Model], bool] = {}

    def viewable(model: type[Model]) -> bool:
        if model not in may_view:
            try:
                may_view[model] = admin.site.get_model_admin(model).has_view_permission(request)
            except admin.sites.NotRegistered:
                may_view[model] = False
        return may_view[model]

    for fact in sheet.facts():
        model = type(fact.obj)
        if viewable(model):
            fact.href = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[fact.obj.pk])
    entries_open = viewable(Entry)
    for ref in sheet.entry_refs():
        if entries_open:
            ref.href = reverse("admin:ledger_entry_change", args=[ref.index])
        try:
            ref.proof_href = reverse("admin:ledger_entry_proof", args=[ref.index])
        except NoReverseMatch:
            ref.proof_href = ""


# --- The link from the model versions' list --------------------------------------------------------


@admin.display(description="factsheet")
def factsheet_column(version: Any) -> str:
    return format_html(
        '<a href="{}" class="factsheet-link">Factsheet<span class="visually-hidden"> of {}</span></a>',
        reverse("admin:reports_factsheet", args=[version.pk]),
        version,
    )


def attach_factsheet_column(admin_site: admin.AdminSite) -> None:
    """Add the factsheet column to the model versions' list (once; nothing when the registry shows no
    model versions)."""
    from registry.models import ModelVersion

    try:
        model_admin = admin_site.get_model_admin(ModelVersion)
    except admin.sites.NotRegistered:
        return
    if factsheet_column not in model_admin.list_display:
        model_admin.list_display = [*model_admin.list_display, factsheet_column]
