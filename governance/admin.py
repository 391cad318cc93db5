"""Admin pages of the governance app. Read-only: changes go through the services (and the API),
so that every one of them is checked and recorded the same way."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import PROJECT_FILTER, ReadOnlyAdmin
from common.api import LEDGERED_TEXT_HELP
from common.errors import DomainError
from common.security_log import refusal
from governance.models import ApiToken, ApprovalRequest, ApprovalState, BreakGlassReview, Project, ServiceAccount
from governance.permissions import is_platform_admin
from governance.selectors import project_list
from governance.services import api_token_revoke, approval_request_decide


class ProjectScopedAdmin(ReadOnlyAdmin):
    """Read-only pages that show a user only the rows of the projects where they hold a role.
    ``project_path`` is the lookup from the model to its project (``"dataset__project"``)."""

    project_path = "project"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        return queryset.filter(**{f"{self.project_path}__in": project_list(user=request.user)})


@admin.register(Project)
class ProjectAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The projects where the user holds a role (all of them for a platform admin), as in the API.
        return super().get_queryset(request).filter(pk__in=project_list(user=request.user).values("pk"))


@admin.register(ServiceAccount)
class ServiceAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "owner", "created_at"]
    list_select_related = ["user", "owner"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The accounts the user owns (all of them for a platform admin, who creates them).
        queryset = super().get_queryset(request)
        return queryset if is_platform_admin(request.user) else queryset.filter(owner=request.user)


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "user", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    list_filter = ["revoked_at"]
    exclude = ["digest"]
    actions = ["revoke"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Actions need change permission on the changelist; the form itself stays read-only.
        return obj is None and request.user.has_perm("governance.change_apitoken")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The user's own tokens (anyone's for a platform admin): those are the ones they may revoke.
        queryset = super().get_queryset(request)
        return queryset if is_platform_admin(request.user) else queryset.filter(user=request.user)

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        done, refused = 0, []
        for token in queryset:
            try:
                if api_token_revoke(actor=request.user, token=token):
                    done += 1
            except DomainError as exc:
                refused.append(f"{token.prefix}: {exc.message}")
                refusal(request, exc, api_token=token.prefix)
        if done:
            messages.success(request, f"Revoked {done} token(s).")
        elif not refused:
            messages.info(request, "No token revoked: each selected token was already revoked.")
        for line in refused:
            messages.error(request, line)


class DecisionActionForm(ActionForm):
    # The ledger keeps the approver's reason with the decision: the officer writes it next to the
    # action rather than leaving a generic note.
    reason = forms.CharField(
        label="Reason:", required=False, max_length=500,
        widget=forms.TextInput(attrs={"size": 60, "placeholder": "kept in the ledger for good: no names or addresses",
                                      "title": LEDGERED_TEXT_HELP}),
    )  # fmt: skip


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ProjectScopedAdmin):
    """The compliance officer's inbox: pending requests first, with the subject's digest, the
    requester's comment, the evidence recorded at submission and every decision with its ledger
    index. Approve and reject call the same service as the API, with the reason typed next to the
    action (or, left blank, a note naming the admin)."""

    list_display = [
        "id",
        "state",
        "action",
        "subject_type",
        "subject_id",
        "project",
        "requester",
        "created_at",
        "expires_at",
    ]
    list_filter = ["state", PROJECT_FILTER, "subject_type", "created_at"]
    list_select_related = ["project", "requester"]
    search_fields = ["subject_id", "action", "comment"]
    ordering = ["state", "-created_at"]
    readonly_fields = ["summary"]
    fields = ["summary"]
    actions = ["approve_selected", "reject_selected"]
    action_form = DecisionActionForm

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Actions need change permission on the list; the form stays read-only.
        return obj is None and request.user.has_perm("governance.view_approvalrequest")

    @admin.display(description="request")
    def summary(self, obj: ApprovalRequest) -> str:
        from django.urls import reverse
        from django.utils.html import format_html, format_html_join

        rows = [
            (
                d.approver.get_username(), d.role, d.decision, d.reason,
                reverse("admin:ledger_entry_change", args=[d.ledger_index]), d.ledger_index,
            )
            for d in obj.decisions.select_related("approver")
        ]  # fmt: skip
        decisions = format_html_join("", '<li>{} as {}: {} ({}), <a href="{}">ledger entry #{}</a></li>', rows)
        return format_html(
            "<p><b>{}</b> on {} {} (digest <code>{}</code>)</p><p>Requested by {}: {}</p>"
            "<p>Rule: {}</p><p>Policy set <code>{}</code></p><ul>{}</ul>",
            obj.action, obj.subject_type, obj.subject_id, obj.subject_digest, obj.requester.get_username(),
            obj.comment or "-", obj.rule, obj.policy_hash, decisions,
        )  # fmt: skip

    def _decide(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest], decision: str) -> None:
        done, refused = 0, []
        reason = request.POST.get("reason", "").strip() or f"{decision}d in the admin by {request.user.get_username()}"
        for approval in queryset.filter(state=ApprovalState.PENDING):
            try:
                approval_request_decide(
                    actor=request.user, request_id=approval.pk, decision=decision, reason=reason,
                )  # fmt: skip
                done += 1
            except DomainError as exc:
                refused.append(f"#{approval.pk}: {exc.message}")
                refusal(request, exc, event="approval.decision.denied", approval_request=approval.pk)
        if done:
            messages.success(request, f"{decision.capitalize()}d {done} request(s).")
        for line in refused:
            messages.error(request, line)

    @admin.action(description="Approve the selected requests (fills your slot)")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        self._decide(request, queryset, "approve")

    @admin.action(description="Reject the selected requests")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        self._decide(request, queryset, "reject")


@admin.register(BreakGlassReview)
class BreakGlassReviewAdmin(ProjectScopedAdmin):
    """Emergency approvals awaiting (or past) a compliance officer's review; overdue ones first."""

    project_path = "request__project"
    list_display = ["request", "admin", "opened_at", "due_at", "overdue", "outcome", "closed_by"]
    list_filter = ["outcome", ("request__project", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["request__project", "admin", "closed_by"]
    ordering = ["closed_at", "due_at"]

    @admin.display(boolean=True, description="overdue")
    def overdue(self, obj: BreakGlassReview) -> bool:
        from django.utils import timezone

        return obj.closed_at is None and obj.due_at < timezone.now()
