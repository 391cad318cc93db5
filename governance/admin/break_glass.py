"""The break-glass reviews: every emergency approval, open ones first and overdue ones flagged,
closed by a compliance officer of the project with an outcome and a note (the same service as the
API, ``break_glass_review_close``, which checks the role and separation of duties and writes the
ledger)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from common.api import LEDGERED_TEXT_HELP
from governance.admin.closing import close_with_outcome
from governance.admin.scoped import ProjectScopedAdmin
from governance.models import BreakGlassReview
from governance.roles import Role
from governance.selectors import project_list
from governance.services import break_glass_review_close


class BreakGlassCloseForm(forms.Form):
    outcome = forms.ChoiceField(
        choices=[("upheld", "upheld: the emergency was real"), ("revoked", "revoked: it was not")],
        widget=forms.RadioSelect,
    )
    note = forms.CharField(widget=forms.Textarea, help_text=f"What you checked. {LEDGERED_TEXT_HELP}")


@admin.register(BreakGlassReview)
class BreakGlassReviewAdmin(ProjectScopedAdmin):
    """Emergency approvals awaiting (or past) a compliance officer's review; open ones first, by due date."""

    project_path = "request__project"
    list_display = ["request", "admin", "opened_at", "due_at", "overdue", "outcome", "closed_by"]
    list_filter = ["outcome", ("request__project", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["request__project", "admin", "closed_by"]
    ordering = ["closed_at", "due_at"]
    actions = ["close_reviews"]

    @admin.display(boolean=True, description="overdue")
    def overdue(self, obj: BreakGlassReview) -> bool:
        return obj.closed_at is None and obj.due_at < timezone.now()

    def get_actions(self, request: HttpRequest) -> dict[str, object]:
        # Offered to compliance officers only; the service decides again for each review's project.
        officer = project_list(user=request.user, roles=[Role.COMPLIANCE_OFFICER]).exists()
        return super().get_actions(request) if officer else {}

    @admin.action(description="Close the selected reviews with an outcome")
    def close_reviews(self, request: HttpRequest, queryset: QuerySet[BreakGlassReview]) -> HttpResponse | None:
        def describe(review: BreakGlassReview) -> str:
            request_ = review.request
            due = f"{timezone.localtime(review.due_at):%Y-%m-%d %H:%M}"
            closed = f": already closed as {review.outcome}" if review.closed_at else ""
            return (
                f"Request #{request_.pk} ({request_.action}, project {request_.project}), approved by {review.admin} "
                f"in an emergency, review due {due}{closed}"
            )

        return close_with_outcome(
            self, request, queryset.select_related("request__project", "admin"), form_class=BreakGlassCloseForm,
            describe=describe,
            intro="Each review is closed through the same service as the API, with this outcome and note, recorded "
            "in the ledger. The platform admin who broke the glass and the person who made the request may not "
            "review it.",
            close=lambda review, data: break_glass_review_close(
                actor=request.user, review_id=review.pk, outcome=data["outcome"], note=data["note"]
            ),
        )  # fmt: skip
