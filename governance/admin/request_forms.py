"""What the admin's request pages share (a fine-tune run, a deployment): the ML engineer fills a
form, one service records the request and opens its approval request, and a refusal shows on the
form, which keeps what was typed. The pages themselves live with their apps (training, serving)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from common.api import LEDGERED_TEXT_HELP
from common.errors import DomainError
from common.security_log import refusal
from governance.models import Project
from governance.roles import Role
from governance.selectors import project_list

TEMPLATE = "admin/governance/request_form.html"


def requester_projects(request: HttpRequest) -> QuerySet[Project]:
    """The projects where the person signed in may ask for runs and deployments."""
    return project_list(user=request.user, roles=[Role.ML_ENGINEER])


def comment_field() -> forms.CharField:
    return forms.CharField(
        required=False, max_length=4000, label="Comment for the approvers",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why you ask, what the approvers should know. " + LEDGERED_TEXT_HELP,
    )  # fmt: skip


def gpu_type_field() -> forms.ChoiceField:
    """The GPU types the platform offers (``TRAINING_GPU_TYPES``), or none: the CPU."""
    from django.conf import settings

    return forms.ChoiceField(
        choices=[("", "none (CPU)")] + [(t, t) for t in settings.TRAINING_GPU_TYPES], required=False,
        label="GPU type",
    )  # fmt: skip


def show_refusal(request: HttpRequest, form: forms.Form, exc: DomainError, aliases: dict[str, str]) -> None:
    """A service's refusal on the form: each field it names under the form's own field (the
    service's ``target.gpu_count`` is the form's ``gpu_count``: ``aliases`` and the last part of
    a dotted name), anything else above the form. Logged as a refused request."""
    refusal(request, exc)
    for name, problems in (exc.fields or {}).items():
        field = aliases.get(name, name.rsplit(".", 1)[-1])
        # Named as the service names it when that differs from the form's field.
        form.add_error(
            field if field in form.fields else None, [p if name == field else f"{name}: {p}" for p in problems]
        )
    if not exc.fields:
        form.add_error(None, exc.message)


class RequestAddMixin:
    """The add page of a model admin whose rows are requested (runs, deployments): open to ML
    engineers of some project (the service checks the chosen one), a form, one service that records
    the request and opens its approval request, a refusal shown on the form with nothing made.
    A subclass names its form and page texts and calls its service in ``submit_request``."""

    request_form: type[forms.Form]
    request_what: str  # "Deployment": the message after the request
    request_title: str
    request_submit: str
    request_intro: str
    # The service's field names that are not the form's (``guard.mode`` -> ``guard_mode``).
    request_field_aliases: dict[str, str] = {}

    def submit_request(self, request: HttpRequest, data: dict[str, Any]) -> tuple[Any, Any]:
        """Call the app's service with the form's data: (the new row, its approval request)."""
        raise NotImplementedError

    def has_add_permission(self, request: HttpRequest) -> bool:
        return requester_projects(request).exists()

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = self.request_form(request.POST or None, projects=requester_projects(request))  # type: ignore[call-arg]
        if request.method == "POST" and form.is_valid():
            try:
                obj, approval = self.submit_request(request, form.cleaned_data)
            except DomainError as exc:
                show_refusal(request, form, exc, self.request_field_aliases)
            else:
                return self._requested(request, obj, approval)
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": self.request_title,  # type: ignore[attr-defined]
            "intro": self.request_intro, "form": form, "submit": self.request_submit,
        }  # fmt: skip
        return TemplateResponse(request, TEMPLATE, context)

    def _requested(self, request: HttpRequest, obj: Any, approval: Any) -> HttpResponse:
        """After the request: say what now waits, for whom, and open the new row's page."""
        slots = " and ".join(f"{s['count']} {s['role'].replace('_', ' ')}" for s in approval.rule["approvals"])
        what = self.request_what
        messages.success(request, f"{what} #{obj.pk} requested; approval request #{approval.pk} waits for {slots}.")
        opts = self.model._meta  # type: ignore[attr-defined]
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
