"""The approval requests (the inbox); the break-glass reviews are in break_glass.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME, ActionForm
from django.contrib.admin.views.main import ChangeList
from django.db.models import BooleanField, Case, ExpressionWrapper, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from common.admin import PROJECT_FILTER, call_service_for_each
from common.api import LEDGERED_TEXT_HELP
from governance.admin.decision import decision_page
from governance.admin.scoped import ProjectScopedAdmin
from governance.models import ApprovalRequest, ApprovalState
from governance.rules import outcome_in_words
from governance.selectors import approval_ids_waiting_for
from governance.services import approval_request_decide
from governance.subjects import request_in_words, requests_in_words


class DecisionActionForm(ActionForm):
    # The ledger keeps the approver's reason with the decision: the officer writes it next to the
    # action rather than leaving a generic note.
    reason = forms.CharField(
        label="Reason:", required=False, max_length=500,
        widget=forms.TextInput(attrs={"size": 60, "placeholder": "kept in the ledger for good: no names or addresses",
                                      "title": LEDGERED_TEXT_HELP}),
    )  # fmt: skip


def _waiting_ids(request: HttpRequest) -> set[int]:
    """The requests the user may decide now, asked once per page (the filter and the column)."""
    cached = getattr(request, "_approvals_waiting_for_me", None)
    if cached is None:
        cached = set(approval_ids_waiting_for(user=request.user))
        request._approvals_waiting_for_me = cached  # type: ignore[attr-defined]
    return cached


def _minute(moment: datetime | None) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M}" if moment else "-"


class WaitingForMeFilter(admin.SimpleListFilter):
    """By default the inbox shows what the user may decide now; "All" shows every request of their
    projects. The default holds for what is shown: an action applies to the rows the user ticked
    (a request decided by someone else meanwhile is then refused by name, not silently skipped),
    and "select all" to the rows shown."""

    title = "who may decide"
    parameter_name = "waiting"
    ME, ALL = "me", "all"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(self.ME, "Waiting for me"), (self.ALL, "All")]

    def value(self) -> str:
        return self.ALL if super().value() == self.ALL else self.ME

    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == self.ALL:
            return queryset
        ticked = request.method == "POST" and request.POST.get("select_across") != "1"
        if ticked and self.parameter_name not in self.used_parameters:
            return queryset
        return queryset.filter(pk__in=_waiting_ids(request))


class InboxChangeList(ChangeList):
    """The inbox's rows, each marked ``waiting`` when the user may decide it now."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        queryset = super().get_queryset(request, exclude_parameters)
        ids = _waiting_ids(request)
        waiting = Case(When(pk__in=ids, then=Value(True)), default=Value(False)) if ids else Value(False)
        return queryset.annotate(waiting=ExpressionWrapper(waiting, output_field=BooleanField()))

    def get_results(self, request: HttpRequest) -> None:
        """The page's rows, each with what it asks in words (its subjects named a type at a time)."""
        super().get_results(request)
        rows = list(self.result_list)
        asked = requests_in_words([(row.action, row.subject_type, row.subject_id) for row in rows])
        for row, words in zip(rows, asked, strict=True):
            row.in_words = words
        self.result_list = rows


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ProjectScopedAdmin):
    """The inbox: by default the requests the user may decide now ("waiting for me"), each opening
    its decision page (governance/admin/decision.py), where the decider reads the subject, the
    rule in words, the slots, the evidence and the history, and approves or rejects with a reason.
    The list's approve and reject actions call the same service as the API, with the reason typed
    next to the action (or, left blank, a note naming the admin)."""

    # Short columns: at 1280 px the list sits beside the filter panel, and a wider table scrolls (the
    # newest first; the filter panel picks by date asked).
    list_display = ["id", "waiting_for_me", "state", "asks", "project", "requester", "expires"]
    list_filter = [WaitingForMeFilter, "state", PROJECT_FILTER, "subject_type", "created_at"]
    list_select_related = ["project", "requester"]
    search_fields = ["subject_id", "action", "comment"]
    ordering = ["state", "-created_at"]
    actions = ["approve_selected", "reject_selected"]
    action_form = DecisionActionForm

    class Media:
        css = {"all": ["governance/inbox.css"]}

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Actions need change permission on the list; a request's page is its decision page.
        return obj is None and request.user.has_perm("governance.view_approvalrequest")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return decision_page(self, request, object_id)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return InboxChangeList

    @admin.display(boolean=True, description="for me", ordering="waiting")
    def waiting_for_me(self, obj: ApprovalRequest) -> bool:
        return bool(getattr(obj, "waiting", False))

    @admin.display(description="request", ordering="action")
    def asks(self, obj: ApprovalRequest) -> str:
        """What it asks and about which subject, by the subject's own name ("use for training:
        assistant/tickets v1")."""
        words = getattr(obj, "in_words", None)
        return words if words is not None else request_in_words(obj.action, obj.subject_type, obj.subject_id)

    def action_checkbox(self, obj: ApprovalRequest) -> str:
        """The row's checkbox, named for a screen reader by what the request asks ("Select request
        #12: use for training: assistant/tickets v1"), not by the request's identifiers."""
        attrs = {"class": "action-select", "aria-label": f"Select request #{obj.pk}: {self.asks(obj)}"}
        return forms.CheckboxInput(attrs, lambda value: False).render(ACTION_CHECKBOX_NAME, str(obj.pk))

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: ApprovalRequest) -> str:
        return _minute(obj.expires_at)

    def _decide(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest], decision: str) -> None:
        reason = request.POST.get("reason", "").strip() or f"{decision}d in the admin by {request.user.get_username()}"
        call_service_for_each(
            request, queryset.filter(state=ApprovalState.PENDING),
            lambda approval: approval_request_decide(
                actor=request.user, request_id=approval.pk, decision=decision, reason=reason,
            ),
            name=lambda approval: f"#{approval.pk}", refusal_event="approval.decision.denied",
            refusal_fields=lambda approval: {"approval_request": approval.pk},
            # The state the request is left in: an approval that fills one slot of several leaves it pending.
            outcome=lambda decided: decided.state,
            # A slot filled while others stay open is told per request, naming the slots still open.
            each={ApprovalState.PENDING: outcome_in_words},
            counted={
                ApprovalState.APPROVED: "Approved {count} request(s).",
                ApprovalState.REJECTED: "Rejected {count} request(s).",
            },
            nothing="No request decided: none of the selected requests is pending.",
        )  # fmt: skip

    @admin.action(description="Approve the selected requests (fills your slot)")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        self._decide(request, queryset, "approve")

    @admin.action(description="Reject the selected requests")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        self._decide(request, queryset, "reject")
