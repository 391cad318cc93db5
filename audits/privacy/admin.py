"""Admin pages of the data-subject request workflow. Read-only (rows change through the services;
requests are never deleted: they are the CCPA §7101 request log); actions call the services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template import Context, Template
from django.utils.html import format_html

from audits.privacy.models import DataSubjectRequest, DeadlineFlag, LegalHold, ModelReview, ReviewOutcome
from audits.privacy.selectors import privacy_projects
from common.admin import PROJECT_FILTER, ReadOnlyAdmin
from common.api import LEDGERED_TEXT_HELP
from common.errors import DomainError
from common.security_log import refusal

FLAG_COLOURS = {DeadlineFlag.ON_TIME: "#2e7d32", DeadlineFlag.DUE_SOON: "#ef6c00", DeadlineFlag.OVERDUE: "#c62828"}


class PrivacyAdmin(ReadOnlyAdmin):
    """Rows of the projects where the user is a compliance officer or an auditor."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).filter(project__in=privacy_projects(user=request.user))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Actions need change permission on the list; the form stays read-only.
        return obj is None and request.user.has_perm(f"privacy.view_{self.model._meta.model_name}")

    def _each(self, request: HttpRequest, queryset: QuerySet[Any], call: Any, done: str) -> None:
        for obj in queryset:
            try:
                call(obj)
            except DomainError as exc:
                refusal(request, exc, object_type=obj._meta.label_lower, object_id=obj.pk)
                messages.error(request, f"{obj}: {exc.message}")
            else:
                messages.success(request, f"{obj}: {done}")


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(PrivacyAdmin):
    """Open requests by deadline, with the flag the periodic task keeps (coloured), and the
    request-log columns (nature, manner, response, denial basis)."""

    list_display = [
        "id", "project", "regime", "kind", "channel", "state", "received_at", "confirm_by", "respond_by",
        "extended", "deadline", "responded_at", "response_nature", "denial_basis",
    ]  # fmt: skip
    list_filter = ["state", "regime", "kind", "deadline_flag", "channel", "extended", PROJECT_FILTER, "received_at"]
    list_select_related = ["project"]
    ordering = ["respond_by"]
    exclude = ["identifiers_sealed"]  # sealed anyway; the keyed hashes are shown instead
    actions = ["confirm_receipt", "search", "erase"]

    @admin.display(description="deadline", ordering="deadline_flag")
    def deadline(self, obj: DataSubjectRequest) -> str:
        if not obj.is_open:
            return "-"
        flag = DeadlineFlag(obj.deadline_flag)
        return format_html('<b style="color: {}">{}</b>', FLAG_COLOURS[flag], flag.label)

    @admin.action(description="Record receipt confirmed (CCPA)")
    def confirm_receipt(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> None:
        from audits.privacy.services import dsr_confirm_receipt

        self._each(request, queryset, lambda r: dsr_confirm_receipt(actor=request.user, request=r), "confirmed")

    @admin.action(description="Search the index and lineage")
    def search(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> None:
        from audits.privacy.services import dsr_search

        self._each(request, queryset, lambda r: dsr_search(actor=request.user, request=r), "searched")

    @admin.action(description="Erase the person (new dataset versions, model reviews, vault key shredded)")
    def erase(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> None:
        from audits.privacy.services import dsr_erase

        self._each(request, queryset, lambda r: dsr_erase(actor=request.user, request=r), "erased")


@admin.register(LegalHold)
class LegalHoldAdmin(PrivacyAdmin):
    list_display = ["id", "project", "scope", "reason", "placed_by", "placed_at", "released_at"]
    list_filter = [PROJECT_FILTER, "released_at"]
    list_select_related = ["project", "placed_by"]

    @admin.display(description="scope")
    def scope(self, obj: LegalHold) -> str:
        return "person" if obj.identifier_hashes else "project"


class ReviewCloseForm(forms.Form):
    outcome = forms.ChoiceField(choices=ReviewOutcome.choices)
    note = forms.CharField(
        widget=forms.Textarea, help_text=f"Retrained as which version, or why it may stay. {LEDGERED_TEXT_HELP}"
    )


_CLOSE_PAGE = Template(
    """<!doctype html><title>Close model reviews</title><h1>Close {{ count }} model review(s)</h1>
<form method="post">{% csrf_token %}{{ form.as_p }}
{% for pk in ids %}<input type="hidden" name="_selected_action" value="{{ pk }}">{% endfor %}
<input type="hidden" name="action" value="close_reviews"><input type="hidden" name="apply" value="1">
<input type="submit" value="Close"></form>"""
)


@admin.register(ModelReview)
class ModelReviewAdmin(PrivacyAdmin):
    """Model versions trained on erased data, open ones first; closed with an outcome."""

    list_display = ["id", "project", "model_version", "request", "opened_at", "outcome", "closed_by", "closed_at"]
    list_filter = ["outcome", PROJECT_FILTER, "closed_at"]
    list_select_related = ["project", "model_version__model", "closed_by"]
    actions = ["close_reviews"]

    @admin.action(description="Close the selected reviews with an outcome")
    def close_reviews(self, request: HttpRequest, queryset: QuerySet[ModelReview]) -> HttpResponse | None:
        from audits.privacy.services import model_review_close

        form = ReviewCloseForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            ids = [str(pk) for pk in queryset.values_list("pk", flat=True)]
            context = Context({"form": form, "ids": ids, "count": len(ids), "csrf_token": _csrf(request)})
            return HttpResponse(_CLOSE_PAGE.render(context))
        data = form.cleaned_data
        self._each(
            request, queryset,
            lambda r: model_review_close(actor=request.user, review=r, outcome=data["outcome"], note=data["note"]),
            f"closed as {data['outcome']}",
        )  # fmt: skip
        return None


def _csrf(request: HttpRequest) -> str:
    from django.middleware.csrf import get_token

    return get_token(request)
