"""A project's PII lists in the admin: every member of a project reads its entries; a data steward or
a platform admin of the project adds one (a form) and removes one (after a confirmation, with a
reason). Both go through ``governance.services.pii_list_entry_add`` / ``pii_list_entry_remove``,
as the API's do, which check the rules and write the ledger.

"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from common.admin import PROJECT_FILTER
from common.api import LEDGERED_TEXT_HELP
from common.errors import DomainError
from common.security_log import refusal
from governance.admin.scoped import ProjectScopedAdmin
from governance.models import PiiListEntry, PiiListKind, PiiListMatch, Project
from governance.permissions import is_platform_admin, project_roles_held
from governance.selectors import project_list
from governance.services.pii_lists import (
    LIST_KEEPERS,
    PATTERN_MAX_CHARS,
    REASON_MAX_CHARS,
    VALUE_MAX_CHARS,
    pii_list_entry_add,
    pii_list_entry_remove,
)

TEMPLATES = "admin/governance/piilistentry"


def keeper_projects(user: Any) -> list[Project]:
    """The projects whose lists ``user`` may change (all of them for a global admin)."""
    admin = is_platform_admin(user)
    return [p for p in project_list(user=user) if admin or project_roles_held(user, p) & LIST_KEEPERS]


class EntryForm(forms.Form):
    project = forms.ChoiceField()
    kind = forms.ChoiceField(choices=PiiListKind.choices)
    match = forms.ChoiceField(
        choices=PiiListMatch.choices,
        help_text="allow: a value or a pattern; deny: a term or a pattern",
    )
    text = forms.CharField(
        label="Value, pattern or term",
        max_length=VALUE_MAX_CHARS,
        help_text=f"A pattern must match a finding's whole value (at most {PATTERN_MAX_CHARS} characters); a value "
        "is hashed with the deployment's key and neither stored nor recorded.",
        widget=forms.TextInput(attrs={"size": 60, "autocomplete": "off"}),
    )
    entity = forms.CharField(
        label="Entity type",
        required=False,
        max_length=64,
        help_text="PERSON, LOCATION, PHONE_NUMBER…; blank: every type (allow only). A deny entry names the type "
        "its matches are reported as, which may be the project's own (CUSTOMER_CODE).",
    )
    reason = forms.CharField(
        max_length=REASON_MAX_CHARS, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), help_text=LEDGERED_TEXT_HELP
    )

    def __init__(self, *args: Any, projects: list[Project], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].choices = [(p.slug, f"{p.slug}: {p.name}") for p in projects]


@admin.display(description="rule")
def rule_shown(entry: PiiListEntry) -> str:
    if entry.match == PiiListMatch.VALUE:
        return format_html("value, keyed hash <code>{}…</code>", entry.value_hash[:12])
    return format_html("{} <code>{}</code>", entry.match, entry.pattern)


class InForceFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("in_force", "in force"), ("removed", "removed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[PiiListEntry]) -> QuerySet[PiiListEntry]:
        if self.value() == "in_force":
            return queryset.filter(removed_at__isnull=True)
        if self.value() == "removed":
            return queryset.filter(removed_at__isnull=False)
        return queryset


@admin.register(PiiListEntry)
class PiiListEntryAdmin(ProjectScopedAdmin):
    list_display = ["project", "kind", "entity_shown", rule_shown, "reason", "created_by", "created_at", "remove_link"]
    list_display_links = None
    list_filter = [InForceFilter, "kind", "match", PROJECT_FILTER]
    list_select_related = ["project", "created_by"]
    search_fields = ["entity", "pattern", "reason"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request) and bool(keeper_projects(request.user))

    def get_urls(self) -> list[Any]:
        remove = path(
            "<path:object_id>/remove/",
            self.admin_site.admin_view(self.remove_view),
            name="governance_piilistentry_remove",
        )
        return [remove, *super().get_urls()]

    @admin.display(description="entity type", ordering="entity")
    def entity_shown(self, entry: PiiListEntry) -> str:
        return entry.entity or "every type"

    @admin.display(description="")
    def remove_link(self, entry: PiiListEntry) -> str:
        # Shown to every reader; the page behind it opens for the project's list keepers only.
        if entry.removed_at is not None:
            return format_html("removed {}: {}", f"{entry.removed_at:%Y-%m-%d %H:%M}", entry.removal_reason)
        url = reverse("admin:governance_piilistentry_remove", args=[entry.pk])
        return format_html('<a href="{}" class="remove-link">Remove…</a>', url)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "PII lists", **(extra_context or {})})

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        projects = keeper_projects(request.user)
        if not self.has_view_permission(request) or not projects:
            raise DjangoPermissionDenied
        form = EntryForm(request.POST if request.method == "POST" else None, projects=projects)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            project = next(p for p in projects if p.slug == data["project"])
            try:
                entry, added = pii_list_entry_add(
                    actor=request.user, project=project, kind=data["kind"], match=data["match"],
                    text=data["text"], entity=data["entity"], reason=data["reason"],
                )  # fmt: skip
            except DomainError as exc:
                refusal(request, exc, project=project.slug)
                for field, problems in exc.fields.items():
                    named = "text" if field in PiiListMatch.values else field
                    form.add_error(named if named in form.fields else None, problems)
                if not exc.fields:
                    form.add_error(None, exc.message)
            else:
                if added:
                    messages.success(request, f"Added to the PII lists of {project.slug}: {entry}.")
                else:
                    messages.info(request, f"The PII lists of {project.slug} already held this entry: {entry}.")
                return HttpResponseRedirect(reverse("admin:governance_piilistentry_changelist"))
        context = {**self._context(request, "Add a PII list entry"), "form": form}
        return TemplateResponse(request, f"{TEMPLATES}/add.html", context)

    def remove_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        entry = self.get_object(request, object_id)
        if entry is None:
            raise Http404("no such PII list entry among your projects'")
        if entry.project not in keeper_projects(request.user):
            raise DjangoPermissionDenied
        changelist = reverse("admin:governance_piilistentry_changelist")
        if entry.removed_at is not None:
            messages.info(request, f"Entry {entry.pk} was removed already, at {entry.removed_at:%Y-%m-%d %H:%M} UTC.")
            return HttpResponseRedirect(changelist)
        if request.method == "POST":
            try:
                pii_list_entry_remove(actor=request.user, entry=entry, reason=request.POST.get("reason", ""))
            except DomainError as exc:
                refusal(request, exc, pii_list_entry=entry.pk)
                messages.error(request, f"Entry {entry.pk} not removed: {exc.message}")
            else:
                messages.success(request, f"Removed from the PII lists of {entry.project.slug}: {entry}.")
            return HttpResponseRedirect(changelist)
        context = {**self._context(request, "Remove this PII list entry?"), "entry": entry,
                   "ledgered_text_help": LEDGERED_TEXT_HELP}  # fmt: skip
        return TemplateResponse(request, f"{TEMPLATES}/remove_confirmation.html", context)

    def _context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts, "title": title}
