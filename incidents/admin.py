"""The incident pages: the register with each incident's Art. 73 clock (due date, days left,
overdue in red), registering an incident, and the incident's own page, from which its project's
members link systems and deployments and a compliance officer classifies, records the report to
the authority and closes it.

Every form calls the same service as the API; a refusal is shown as a message (or on the form)
and changes nothing. An auditor reads the same pages without their forms; a form posted anyway
is refused by the service like any other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from common.admin import DONE, PROJECT_FILTER, ReadOnlyAdmin, call_service_for_each
from common.errors import DomainError
from common.security_log import refusal
from governance.selectors import project_list
from incidents import rules, services
from incidents.models import Incident, IncidentState, SeriousKind
from incidents.selectors import may_decide, may_register, register_projects
from serving.models import Deployment
from systems.models import AISystem

MOMENT_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
SEALED = "Sealed in the ledger's vault under this incident's own reference, never in clear."


class UtcMomentField(forms.DateTimeField):
    """A date and time in UTC (the clock is counted in UTC; the label says so)."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(input_formats=MOMENT_FORMATS, **kwargs)

    def to_python(self, value: Any) -> datetime | None:
        if value in self.empty_values:
            return None
        parsed = forms.fields.BaseTemporalField.to_python(self, str(value).strip())
        return parsed.replace(tzinfo=UTC)


def _text(label: str, *, help_text: str = SEALED, rows: int = 3) -> forms.CharField:
    return forms.CharField(
        label=label, max_length=services.MAX_TEXT, help_text=help_text,
        widget=forms.Textarea(attrs={"rows": rows, "cols": 70}),
    )  # fmt: skip


class RegisterForm(forms.Form):
    project = forms.ModelChoiceField(queryset=None)  # type: ignore[arg-type]
    title = forms.CharField(max_length=services.MAX_TITLE, help_text=SEALED)
    description = _text("Description", rows=5)
    aware_at = UtcMomentField(label="Aware since (UTC)", help_text="when you became aware of it: the clock starts here")
    occurred_at = UtcMomentField(label="Occurred (UTC)", required=False, help_text="if known")
    ai_systems = forms.ModelMultipleChoiceField(queryset=None, required=False, label="AI systems")  # type: ignore[arg-type]
    deployments = forms.ModelMultipleChoiceField(queryset=None, required=False)  # type: ignore[arg-type]

    def __init__(self, *args: Any, projects: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects  # type: ignore[attr-defined]
        if projects.count() == 1:
            self.fields["project"].initial = projects.first()
        self.fields["ai_systems"].queryset = AISystem.objects.filter(project__in=projects)  # type: ignore[attr-defined]
        self.fields["deployments"].queryset = Deployment.objects.filter(project__in=projects)  # type: ignore[attr-defined]


class LinkForm(forms.Form):
    ai_systems = forms.ModelMultipleChoiceField(queryset=None, required=False, label="AI systems")  # type: ignore[arg-type]
    deployments = forms.ModelMultipleChoiceField(queryset=None, required=False)  # type: ignore[arg-type]

    def __init__(self, *args: Any, incident: Incident, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["ai_systems"].queryset = AISystem.objects.filter(project=incident.project)  # type: ignore[attr-defined]
        self.fields["deployments"].queryset = Deployment.objects.filter(project=incident.project)  # type: ignore[attr-defined]


class ClassifyForm(forms.Form):
    serious = forms.TypedChoiceField(
        choices=[("true", "serious"), ("false", "not serious")], coerce=lambda v: v == "true",
        widget=forms.RadioSelect,
    )  # fmt: skip
    serious_kind = forms.ChoiceField(
        choices=[("", "- (not serious)"), *SeriousKind.choices], required=False, label="What makes it serious",
        help_text="sets the Art. 73 clock: 2 days (Art. 73(3)), 10 days for a death (Art. 73(4)), 15 days otherwise",
    )  # fmt: skip

    def __init__(self, *args: Any, incident: Incident, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


class ReportForm(forms.Form):
    reported_at = UtcMomentField(label="Reported (UTC)")
    reference = forms.CharField(max_length=services.MAX_REFERENCE, label="Authority's reference")
    complete = forms.BooleanField(
        required=False, initial=True, label="Complete report",
        help_text="untick for an initial, incomplete report (Art. 73(5)); record the complete one later",
    )  # fmt: skip

    def __init__(self, *args: Any, incident: Incident, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


class CloseForm(forms.Form):
    root_cause = _text("Root cause")
    corrective_action = _text("Corrective action")

    def __init__(self, *args: Any, incident: Incident, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


def _ids(objects: Any) -> list[int]:
    return [o.pk for o in objects or []]


@dataclass(frozen=True)
class Step:
    label: str
    form: type[forms.Form]
    officers: bool  # compliance officers and platform admins only; otherwise every member but auditors
    call: Callable[[Any, Incident, dict[str, Any]], Incident]
    done: Callable[[Incident], str]


STEPS: dict[str, Step] = {
    "classify": Step(
        "Classify", ClassifyForm, True,
        lambda actor, i, d: services.incident_classify(
            actor=actor, incident=i, serious=d["serious"], serious_kind=d["serious_kind"]
        ),
        lambda i: f"classified: {clock_text(i)}",
    ),
    "report": Step(
        "Record the report to the authority", ReportForm, True,
        lambda actor, i, d: services.incident_report_to_authority(
            actor=actor, incident=i, reported_at=d["reported_at"], reference=d["reference"], complete=d["complete"]
        ),
        lambda i: f"report recorded ({i.authority_reference})"
        + ("" if i.authority_completed_at else ": initial, the complete report is still to come"),
    ),
    "close": Step(
        "Close", CloseForm, True,
        lambda actor, i, d: services.incident_close(
            actor=actor, incident=i, root_cause=d["root_cause"], corrective_action=d["corrective_action"]
        ),
        lambda i: "closed",
    ),
    "link": Step(
        "Link systems and deployments", LinkForm, False,
        lambda actor, i, d: services.incident_link(
            actor=actor, incident=i, ai_systems=_ids(d["ai_systems"]), deployments=_ids(d["deployments"])
        ),
        lambda i: "linked",
    ),
}  # fmt: skip


def clock_text(incident: Incident) -> str:
    if incident.serious is None:
        return "not classified yet"
    return rules.describe(incident.report_due_at, incident.authority_reported_at, timezone.now())


def seriousness_text(incident: Incident) -> str:
    if incident.serious is None:
        return "not classified"
    return SeriousKind(incident.serious_kind).label if incident.serious else "not serious"


def clock_html(incident: Incident) -> SafeString:
    """The clock, red when overdue, amber past half time."""
    now, text = timezone.now(), clock_text(incident)
    if incident.state != IncidentState.CLOSED and rules.is_overdue(
        incident.report_due_at, incident.authority_reported_at, now
    ):
        return format_html('<strong class="incident-overdue" style="color: var(--error-fg)">{}</strong>', text)
    half = rules.reminder_due(incident.aware_at, incident.report_due_at)
    if incident.authority_reported_at is None and half is not None and now >= half:
        return format_html('<span class="incident-soon" style="color: #b38600">{}</span>', text)
    return format_html("<span>{}</span>", text)


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    """The register, nearest deadline first, each with its Art. 73 clock."""

    list_display = ["reference_link", "project", "title", "state", "seriousness", "clock"]
    list_display_links = None
    list_filter = ["state", "serious", "serious_kind", PROJECT_FILTER]
    list_select_related = ["project"]
    search_fields = ["title"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Incident]:
        return (
            super()
            .get_queryset(request)
            .filter(project__in=project_list(user=request.user))
            .order_by(F("report_due_at").asc(nulls_last=True), "-pk")
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("incidents.view_incident") and register_projects(user=request.user).exists()

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/step/<slug:step>/", view(self.step_view), name="incidents_incident_step"),
            *super().get_urls(),
        ]

    @admin.display(description="incident", ordering="number")
    def reference_link(self, obj: Incident) -> SafeString:
        return format_html('<a href="{}">{}</a>', self._page(obj), obj.reference)

    @admin.display(description="serious", ordering="serious")
    def seriousness(self, obj: Incident) -> str:
        return seriousness_text(obj)

    @admin.display(description="Art. 73 clock", ordering="report_due_at")
    def clock(self, obj: Incident) -> SafeString:
        return clock_html(obj)

    # --- registering -----------------------------------------------------------------------------

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = RegisterForm(request.POST or None, projects=register_projects(user=request.user).order_by("slug"))
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                incident = services.incident_register(
                    actor=request.user, project=data["project"], title=data["title"],
                    description=data["description"], aware_at=data["aware_at"], occurred_at=data["occurred_at"],
                    ai_systems=_ids(data["ai_systems"]), deployments=_ids(data["deployments"]),
                )  # fmt: skip
            except DomainError as exc:
                refusal(request, exc, object_type="incidents.incident")
                _form_errors(form, exc)
            else:
                messages.success(request, f"{incident.reference} registered in {incident.project.slug}.")
                return HttpResponseRedirect(self._page(incident))
        context = {
            **self.admin_site.each_context(request), "title": "Register an incident", "form": form,
            "opts": self.opts,
        }  # fmt: skip
        return TemplateResponse(request, "admin/incidents/incident/add.html", context)

    # --- the incident's page ---------------------------------------------------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        return self._render_page(request, obj)

    def _render_page(
        self, request: HttpRequest, obj: Incident, bound: tuple[str, forms.Form] | None = None
    ) -> HttpResponse:
        from audits.ledger.models import Entry

        decides, registers = (
            may_decide(user=request.user, project=obj.project),
            may_register(user=request.user, project=obj.project),
        )
        steps = []
        if obj.state != IncidentState.CLOSED:
            for name, spec in STEPS.items():
                if not (decides if spec.officers else registers):
                    continue
                if name == "report" and (not obj.serious or obj.authority_completed_at):
                    continue
                # Only what the service would take: an incident closes once classified, and a serious
                # one once its complete report is recorded.
                if name == "close" and (obj.serious is None or (obj.serious and not obj.authority_completed_at)):
                    continue
                form = bound[1] if bound and bound[0] == name else spec.form(incident=obj)
                url = reverse("admin:incidents_incident_step", args=[obj.pk, name])
                steps.append({"name": name, "label": spec.label, "form": form, "url": url})
        entries = Entry.objects.filter(subject_type="incident", subject_id=str(obj.pk)).order_by("index")
        context = {
            **self.admin_site.each_context(request), "title": f"{obj.reference}: {obj.title}", "opts": self.opts,
            "incident": obj, "facts": self._facts(obj), "steps": steps, "entries": entries,
            "read_only": not (decides or registers), "ledger_links": request.user.has_perm("ledger.view_entry"),
        }  # fmt: skip
        return TemplateResponse(request, "admin/incidents/incident/detail.html", context)

    @staticmethod
    def _facts(obj: Incident) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = [
            ("State", obj.get_state_display()),
            ("Project", obj.project.slug),
            ("Registered", f"{obj.created_at:%Y-%m-%d %H:%M} UTC by {obj.reported_by.get_username()}"),
            ("Occurred", f"{obj.occurred_at:%Y-%m-%d %H:%M} UTC" if obj.occurred_at else "not known"),
            ("Aware since", f"{obj.aware_at:%Y-%m-%d %H:%M} UTC"),
            ("Description", obj.description),
            ("AI systems", format_html_join(", ", '<a href="{}">{}</a>', (
                (reverse("admin:systems_aisystem_change", args=[s.pk]), f"{s.name} ({s})") for s in obj.ai_systems.all()
            )) or "none linked"),
            ("Deployments", format_html_join(", ", '<a href="{}">{}</a>', (
                (reverse("admin:serving_deployment_change", args=[d.pk]), f"{d.name} ({d.environment}, id {d.pk})")
                for d in obj.deployments.all()
            )) or "none linked"),
            ("Serious", seriousness_text(obj)),
            ("Art. 73 clock", clock_html(obj)),
        ]  # fmt: skip
        if obj.serious:
            clock = rules.clock_of(obj.serious_kind)
            rows.append(("Rule", f"{clock.article}: {clock.why}"))
        if obj.authority_reported_at:
            completed = (
                f", complete report {obj.authority_completed_at:%Y-%m-%d %H:%M} UTC"
                if obj.authority_completed_at
                else ", initial report: the complete one is still to come (Art. 73(5))"
            )
            rows.append(("Reported", f"{obj.authority_reported_at:%Y-%m-%d %H:%M} UTC, reference "
                                     f"{obj.authority_reference}{completed}"))  # fmt: skip
        if obj.overdue_recorded_at:
            rows.append(("Overdue recorded", f"{obj.overdue_recorded_at:%Y-%m-%d %H:%M} UTC"))
        if obj.closed_at:
            rows.append(("Closed", f"{obj.closed_at:%Y-%m-%d %H:%M} UTC by {obj.closed_by.get_username()}"))
            rows.append(("Root cause", obj.root_cause))
            rows.append(("Corrective action", obj.corrective_action))
        return rows

    def _page(self, obj: Incident) -> str:
        return reverse("admin:incidents_incident_change", args=[obj.pk])

    def step_view(self, request: HttpRequest, pk: int, step: str) -> HttpResponse:
        obj = self.get_queryset(request).select_related("project").filter(pk=pk).first()
        if obj is None:
            raise Http404(f"no incident {pk} in your projects")
        if request.method != "POST":
            return HttpResponseRedirect(self._page(obj))
        spec = STEPS.get(step)
        if spec is None:
            raise Http404(f"no step {step!r}")
        form = spec.form(request.POST, incident=obj)
        if not form.is_valid():
            messages.error(request, f"{obj.reference}: {spec.label.lower()}: check the form below; nothing changed")
            return self._render_page(request, obj, bound=(step, form))
        call_service_for_each(
            request, [obj], lambda i: spec.call(request.user, i, form.cleaned_data), name=lambda i: i.reference,
            each={DONE: spec.done},
        )  # fmt: skip
        return HttpResponseRedirect(self._page(obj))


def _form_errors(form: forms.Form, exc: DomainError) -> None:
    """A service's refusal on the form: on the fields it names, else above the form."""
    placed = False
    for field, problems in (exc.fields or {}).items():
        if field in form.fields:
            for problem in problems:
                form.add_error(field, str(problem))
            placed = True
    if not placed:
        form.add_error(None, exc.message)
