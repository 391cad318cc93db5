"""Legal holds (read here; placed and released through the API) and the model reviews an erasure
opens, closed with an outcome by a compliance officer."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from audits.privacy.admin.base import PrivacyAdmin
from audits.privacy.admin.forms import ReviewCloseForm
from audits.privacy.models import LegalHold, ModelReview
from common.admin import PROJECT_FILTER
from governance.admin.closing import close_with_outcome


@admin.register(LegalHold)
class LegalHoldAdmin(PrivacyAdmin):
    list_display = ["id", "project", "scope", "reason", "placed_by", "placed_at", "released_at"]
    list_filter = [PROJECT_FILTER, "released_at"]
    list_select_related = ["project", "placed_by"]

    @admin.display(description="scope")
    def scope(self, obj: LegalHold) -> str:
        return "person" if obj.identifier_hashes else "project"


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

        def describe(review: ModelReview) -> str:
            closed = f": already closed as {review.outcome}" if review.closed_at else ""
            return f"{review.model_version} (review {review.pk}, after request DSR-{review.request_id}){closed}"

        return close_with_outcome(
            self, request, queryset.select_related("model_version__model", "project"), form_class=ReviewCloseForm,
            describe=describe,
            intro="Each review is closed through the same service as the API, with this outcome and note, recorded "
            "in the ledger.",
            close=lambda review, data: model_review_close(
                actor=request.user, review=review, outcome=data["outcome"], note=data["note"]
            ),
        )  # fmt: skip
