"""The register's admin pages: the systems of the person's projects with their class and counts,
registering a system, filling its classification questionnaire (and submitting it for approval),
and the classifications. Every form and action calls the same services as the API."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from common.admin import DONE, PROJECT_FILTER, call_service_for_each, readable
from common.errors import DomainError
from governance.admin import ProjectScopedAdmin
from governance.admin.request_forms import TEMPLATE, show_refusal
from governance.models import Project
from governance.selectors import project_list
from systems.models import AISystem, AISystemClassification
from systems.rules import ANY_OF, ONE_OF, QUESTIONS, YES_NO, answer_in_words
from systems.services import REGISTRAR_ROLES


def registrar_projects(request: HttpRequest) -> QuerySet[Any]:
    """The projects where the person signed in may register and classify AI systems."""
    return project_list(user=request.user, roles=REGISTRAR_ROLES)


class AISystemRegisterForm(forms.Form):
    """What ``ai_system_register`` takes; the service checks the values again."""

    project = forms.ModelChoiceField(Project.objects.none(), help_text="The project the system belongs to.")
    slug = forms.SlugField(max_length=100, help_text="A slug, e.g. credit-scoring: the system's name in the API.")
    name = forms.CharField(max_length=200)
    purpose = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), help_text="The intended purpose (Art. 3(12))."
    )
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="What it is and how it works (Annex IV point 1); required before a high-risk system is deployed.",
    )  # fmt: skip
    human_oversight = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="How people oversee it and who may stop it (Art. 14); required before a high-risk system is "
        "deployed.",
    )  # fmt: skip
    deployers = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Who uses the system under their authority, one a line (Art. 26).",
    )  # fmt: skip

    def __init__(self, *args: Any, projects: QuerySet[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if projects is None:  # updating a registered system: its project and slug stay
            del self.fields["project"], self.fields["slug"]
        else:
            self.fields["project"].queryset = projects.order_by("slug")


def questionnaire_form(data: Any = None) -> forms.Form:
    """The classification questionnaire as a form: one field per question (``systems.rules``), and
    whether to submit the classification for approval at once."""
    fields: dict[str, forms.Field] = {}
    for question in QUESTIONS:
        label = f"{question.article}: {question.text}"
        if question.kind == YES_NO:
            # No answer ticked beforehand: each question is answered on purpose, or the form says which is not.
            fields[question.id] = forms.TypedChoiceField(
                label=label, choices=[("no", "no"), ("yes", "yes")], coerce=lambda v: v == "yes",
                widget=forms.RadioSelect, error_messages={"required": "Answer yes or no."},
            )  # fmt: skip
        elif question.kind == ONE_OF:
            fields[question.id] = forms.ChoiceField(
                label=label, choices=[("", "choose one"), *question.choices],
                error_messages={"required": "Choose one answer."},
            )  # fmt: skip
        elif question.kind == ANY_OF:
            fields[question.id] = forms.MultipleChoiceField(
                label=label, choices=question.choices, required=False, widget=forms.CheckboxSelectMultiple
            )
    fields["submit_for_approval"] = forms.BooleanField(
        required=False, initial=True, label="Submit for approval now",
        help_text="Opens the approval request (ai_system_classification.approve): a compliance officer approves. "
        "Needs an ML engineer or platform admin role; a compliance officer's classification is submitted by one.",
    )  # fmt: skip
    return type("QuestionnaireForm", (forms.Form,), fields)(data)


@admin.register(AISystem)
class AISystemAdmin(ProjectScopedAdmin):
    list_display = ["slug", "name", "project", "owner", "risk_class", "classification_number", "deployment_count",
                    "classification_count"]  # fmt: skip
    list_filter = ["risk_class", PROJECT_FILTER]
    list_select_related = ["project", "owner", "classification"]
    search_fields = ["slug", "name", "purpose"]
    exclude = ["deployers", "classification"]
    readonly_fields = ["deployers_shown", "classification_shown", "deployments_shown", "classifications_shown",
                       "classify_link", "update_link"]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[AISystem]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                deployment_total=Count("deployments", distinct=True),
                classification_total=Count("classifications", distinct=True),
            )
        )

    @admin.display(description="classification", ordering="classification__number")
    def classification_number(self, system: AISystem) -> str:
        return f"#{system.classification.number}" if system.classification_id else "none approved"

    @admin.display(description="deployments", ordering="deployment_total")
    def deployment_count(self, system: AISystem) -> int:
        return system.deployment_total  # type: ignore[attr-defined]

    @admin.display(description="classifications", ordering="classification_total")
    def classification_count(self, system: AISystem) -> int:
        return system.classification_total  # type: ignore[attr-defined]

    @admin.display(description="deployers")
    def deployers_shown(self, system: AISystem) -> str:
        return readable(system.deployers) if system.deployers else "none named"

    @admin.display(description="approved classification")
    def classification_shown(self, system: AISystem) -> str:
        current = system.classification
        if current is None:
            return "none approved: the system cannot be deployed"
        reasons = [(r.get("article", ""), r.get("text", "")) for r in current.reasons]
        listed = format_html_join(mark_safe("<br>"), "{}: {}", reasons)
        return format_html("#{}: {}<br>{}", current.number, current.get_risk_class_display(), listed)

    @admin.display(description="deployments (and their model versions)")
    def deployments_shown(self, system: AISystem) -> str:
        rows = [
            (reverse("admin:serving_deployment_change", args=[d.pk]), d.name, d.environment, d.state,
             str(d.model_version))
            for d in system.deployments.select_related("model_version__model").order_by("-pk")
        ]  # fmt: skip
        return format_html_join(mark_safe("<br>"), '<a href="{}">{}</a> ({}, {}): {}', rows) or "none"

    @admin.display(description="classifications")
    def classifications_shown(self, system: AISystem) -> str:
        rows = [
            (reverse("admin:systems_aisystemclassification_change", args=[c.pk]), c.number,
             c.get_risk_class_display(), c.get_state_display())
            for c in system.classifications.order_by("-number")
        ]  # fmt: skip
        return format_html_join(mark_safe("<br>"), '<a href="{}">#{}</a>: {}, {}', rows) or "none"

    @admin.display(description="questionnaire")
    def classify_link(self, system: AISystem) -> str:
        url = reverse("admin:systems_aisystem_classify", args=[system.pk])
        return format_html('<a href="{}" id="classify-link">Fill the classification questionnaire…</a>', url)

    @admin.display(description="register entry")
    def update_link(self, system: AISystem) -> str:
        url = reverse("admin:systems_aisystem_update", args=[system.pk])
        return format_html('<a href="{}" id="update-link">Update the purpose, description, oversight or deployers…</a>',
                           url)  # fmt: skip

    # Registering: the add page is a form that calls the service.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return registrar_projects(request).exists()

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise DjangoPermissionDenied
        from systems.services import ai_system_register

        form = AISystemRegisterForm(request.POST or None, projects=registrar_projects(request))
        if request.method == "POST" and form.is_valid():
            data = dict(form.cleaned_data)
            deployers = [line.strip() for line in data.pop("deployers").splitlines() if line.strip()]
            try:
                system = ai_system_register(actor=request.user, owner=request.user, deployers=deployers, **data)
            except DomainError as exc:
                show_refusal(request, form, exc, {})
            else:
                messages.success(request, f"AI system {system} registered; classify it next.")
                return HttpResponseRedirect(reverse("admin:systems_aisystem_classify", args=[system.pk]))
        intro = (
            "A system (use case) of one of your projects: you are its owner. It is unclassified until a "
            "classification of it is approved; until then it cannot be deployed."
        )
        return self._form_page(request, form, "Register an AI system", "Register the system", intro)

    def _form_page(self, request: HttpRequest, form: forms.Form, title: str, submit: str, intro: str) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": title, "intro": intro,
            "form": form, "submit": submit,
        }  # fmt: skip
        return TemplateResponse(request, TEMPLATE, context)

    def get_urls(self) -> list[Any]:
        classify = path(
            "<path:object_id>/classify/",
            self.admin_site.admin_view(self.classify_view),
            name="systems_aisystem_classify",
        )
        update = path(
            "<path:object_id>/update/", self.admin_site.admin_view(self.update_view), name="systems_aisystem_update"
        )
        return [classify, update, *super().get_urls()]

    def update_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The register's entry of one system, changed through ``ai_system_update`` (ledgered)."""
        from systems.services import ai_system_update

        system = self.get_object(request, object_id)
        if system is None:
            raise Http404("no such AI system")
        if not registrar_projects(request).filter(pk=system.project_id).exists():
            raise DjangoPermissionDenied
        now = {"name": system.name, "purpose": system.purpose, "description": system.description,
               "human_oversight": system.human_oversight, "deployers": "\n".join(system.deployers)}  # fmt: skip
        form = AISystemRegisterForm(request.POST or None, initial=now)
        if request.method == "POST" and form.is_valid():
            data = dict(form.cleaned_data)
            data["deployers"] = [line.strip() for line in data["deployers"].splitlines() if line.strip()]
            try:
                ai_system_update(actor=request.user, system=system, **data)
            except DomainError as exc:
                show_refusal(request, form, exc, {})
            else:
                messages.success(request, f"AI system {system} updated.")
                return HttpResponseRedirect(reverse("admin:systems_aisystem_change", args=[system.pk]))
        return self._form_page(request, form, f"Update AI system {system}", "Save the changes",
                               "The changes are recorded in the ledger; the risk class changes only through a new "
                               "classification.")  # fmt: skip

    def classify_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The questionnaire of one system: a new classification (``ai_system_classification_create``)
        and, when asked, its approval request (``ai_system_classification_submit``)."""
        from systems.services import ai_system_classification_create, ai_system_classification_submit

        system = self.get_object(request, object_id)
        if system is None:
            raise Http404("no such AI system")
        if not registrar_projects(request).filter(pk=system.project_id).exists():
            raise DjangoPermissionDenied
        form = questionnaire_form(request.POST or None)
        if request.method == "POST" and form.is_valid():
            answers = {q.id: form.cleaned_data[q.id] for q in QUESTIONS}
            try:
                classification = ai_system_classification_create(actor=request.user, system=system, answers=answers)
            except DomainError as exc:
                show_refusal(request, form, exc, {f"answers.{q.id}": q.id for q in QUESTIONS})
            else:
                made = f"Classification #{classification.number}: {classification.get_risk_class_display()}"
                if form.cleaned_data["submit_for_approval"]:
                    try:
                        approval = ai_system_classification_submit(actor=request.user, classification=classification)
                    except DomainError as exc:
                        messages.warning(request, f"{made}, kept in draft: not submitted ({exc.message}).")
                    else:
                        messages.success(request, f"{made}; approval request #{approval.pk} waits for its approvers.")
                else:
                    messages.success(request, f"{made}, in draft.")
                page = reverse("admin:systems_aisystemclassification_change", args=[classification.pk])
                return HttpResponseRedirect(page)
        return self._form_page(request, form, f"Classify AI system {system}", "Classify",
                               f"{system.name}: {system.purpose} The answers give the risk class (EU AI Act); "
                               "the class counts once the classification is approved.")  # fmt: skip


@admin.register(AISystemClassification)
class AISystemClassificationAdmin(ProjectScopedAdmin):
    project_path = "system__project"
    list_display = ["id", "system", "number", "risk_class", "state", "created_by", "created_at", "decided_at"]
    list_filter = ["risk_class", "state"]
    list_select_related = ["system__project", "created_by"]
    exclude = ["answers", "reasons"]
    readonly_fields = ["answers_shown", "reasons_shown"]
    actions = ["submit_for_approval"]

    @admin.display(description="answers")
    def answers_shown(self, classification: AISystemClassification) -> str:
        rows = []
        for question in QUESTIONS:
            value = classification.answers.get(question.id)
            shown = answer_in_words(question, value)
            rows.append((question.article, question.text, shown))
        return format_html_join(mark_safe("<br>"), "{} {} <b>{}</b>", rows)

    @admin.display(description="reasons")
    def reasons_shown(self, classification: AISystemClassification) -> str:
        reasons = [(r.get("article", ""), r.get("text", "")) for r in classification.reasons]
        return format_html_join(mark_safe("<br>"), "{}: {}", reasons) or "-"

    @admin.action(description="Submit the selected classifications for approval")
    def submit_for_approval(self, request: HttpRequest, queryset: QuerySet[AISystemClassification]) -> None:
        from systems.services import ai_system_classification_submit

        call_service_for_each(
            request, queryset,
            lambda c: ai_system_classification_submit(actor=request.user, classification=c),
            name=lambda c: f"classification {c.number} of {c.system}",
            refusal_fields=lambda c: {"classification": c.pk}, each={DONE: "submitted for approval"},
        )  # fmt: skip
