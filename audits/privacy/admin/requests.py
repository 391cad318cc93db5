"""The data-subject request pages: the list by deadline, filing a request, and the request's own
page, from which a compliance officer takes each step (confirm receipt, verify identity, search,
issue the access package or its signed letter, erase after a confirmation page, extend, deny,
withdraw, complete).

Every step calls the same service as the API; a refusal is shown as a message and changes
nothing. An auditor reads the same pages without their buttons; a step posted anyway is refused
by the service like any other."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import capfirst

from audits.privacy import deadlines as dl
from audits.privacy import services
from audits.privacy.admin import display
from audits.privacy.admin.base import PrivacyAdmin, acts_somewhere
from audits.privacy.admin.forms import (
    CompleteForm,
    DenyForm,
    EraseConfirmForm,
    ExtendForm,
    ReceiveForm,
    VerifyIdentityForm,
    WithdrawForm,
)
from audits.privacy.models import DataSubjectRequest
from audits.privacy.selectors import may_act, officer_projects
from common.admin import DONE, PROJECT_FILTER, call_service_for_each
from common.errors import DomainError
from common.security_log import refusal


@dataclass(frozen=True)
class Step:
    """One button of the request's page: its form (None: the button alone), the service call and
    what the message says once it is done."""

    label: str
    form: type[forms.Form] | None
    call: Callable[[Any, DataSubjectRequest, dict[str, Any]], Any]
    done: Callable[[DataSubjectRequest], str]


STEPS: dict[str, Step] = {
    "confirm-receipt": Step(
        "Record receipt confirmed", None,
        lambda actor, r, d: services.dsr_confirm_receipt(actor=actor, request=r),
        lambda r: "receipt confirmed" + (" (late)" if r.confirm_by and r.receipt_confirmed_at > r.confirm_by else ""),
    ),
    "verify-identity": Step(
        "Record identity verified", VerifyIdentityForm,
        lambda actor, r, d: services.dsr_verify_identity(actor=actor, request=r, method=d["method"]),
        lambda r: f"identity verified ({r.verification_method})",
    ),
    "search": Step(
        "Search the index and lineage", None,
        lambda actor, r, d: services.dsr_search(actor=actor, request=r),
        lambda r: _searched(r),
    ),
    "extend": Step(
        "Extend the deadline", ExtendForm,
        lambda actor, r, d: services.dsr_extend(actor=actor, request=r, reason=d["reason"]),
        lambda r: f"extended: response {display.local(r.respond_by, r.tz)}",
    ),
    "deny": Step(
        "Deny the request", DenyForm,
        lambda actor, r, d: services.dsr_deny(actor=actor, request=r, basis=d["basis"], nature=d["nature"]),
        lambda r: f"denied ({r.denial_basis})",
    ),
    "withdraw": Step(
        "Record the withdrawal", WithdrawForm,
        lambda actor, r, d: services.dsr_withdraw(actor=actor, request=r, reason=d["reason"]),
        lambda r: "withdrawn by the requester",
    ),
    "complete": Step(
        "Complete the request", CompleteForm,
        lambda actor, r, d: services.dsr_complete(actor=actor, request=r, nature=d["nature"]),
        lambda r: f"completed ({r.response_nature})",
    ),
}  # fmt: skip


# Steps with a page or an answer of their own rather than a message: their buttons' labels.
OTHER_STEPS = {
    "access-letter": "Issue and download the letter (PDF)",
    "access-package": "Issue and download the access package",
    "erase": "Erase the person…",
}
# The letter is made and signed by the reports app (a floor above this one): its page is found by
# URL name, and not offered where no such page is installed.
LETTER_URL_NAME = "privacy-access-letter-admin"
# Steps that answer or delay a request rather than move it on: offered folded, below the next step.
LATER_STEPS = frozenset({"extend", "deny", "withdraw"})


def _searched(request: DataSubjectRequest) -> str:
    # What the search found, and where the index cannot speak: "nothing found" is not "not there".
    findings = request.findings
    unscanned = len(findings.get("unscanned_versions", []))
    caveat = f"; {unscanned} dataset version(s) not scanned yet, which the index cannot speak for" if unscanned else ""
    return f"searched: {findings['message']}{caveat}"


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(PrivacyAdmin):
    """Requests by deadline, each deadline in the request's time zone with the days left (coloured
    as the periodic flag is); the request-log facts (nature, manner, response) on each page."""

    # Seven narrow columns beside the filters: the channel and the response are on the request's
    # page (and in the API's request log), the regime and kind share one.
    list_display = ["reference", "project", "kind_short", "state", "received", "time_zone", "deadline"]
    list_display_links = ["reference"]
    list_filter = ["state", "regime", "kind", "deadline_flag", "channel", "extended", PROJECT_FILTER, "received_at"]
    list_select_related = ["project"]
    ordering = ["respond_by"]
    actions = ["confirm_receipt", "search"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("privacy.view_datasubjectrequest") and acts_somewhere(request)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/erase/", view(self.erase_view), name="privacy_datasubjectrequest_erase"),
            path("<int:pk>/step/<slug:step>/", view(self.step_view), name="privacy_datasubjectrequest_step"),
            *super().get_urls(),
        ]

    # --- the list ------------------------------------------------------------------------------

    @admin.display(description="request", ordering="pk")
    def reference(self, obj: DataSubjectRequest) -> str:
        return obj.reference

    @admin.display(description="kind", ordering="kind")
    def kind_short(self, obj: DataSubjectRequest) -> str:
        # "GDPR access", "CCPA opt out": the regime and the kind's code (the page and the filter
        # give the article), in a narrow column.
        return f"{obj.get_regime_display()} {obj.kind.replace('_', ' ')}"

    @admin.display(description="received", ordering="received_at")
    def received(self, obj: DataSubjectRequest) -> str:
        return format_html('<span class="dsr-nowrap">{}</span>', display.local(obj.received_at, obj.tz, zone=False))

    @admin.display(description="time zone", ordering="tz")
    def time_zone(self, obj: DataSubjectRequest) -> str:
        return obj.tz

    @admin.display(description="deadline", ordering="respond_by")
    def deadline(self, obj: DataSubjectRequest) -> str:
        return display.list_deadline(obj, timezone.now())

    @admin.action(description="Record receipt confirmed (CCPA)")
    def confirm_receipt(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> None:
        call_service_for_each(
            request, queryset, lambda r: services.dsr_confirm_receipt(actor=request.user, request=r),
            each={DONE: "confirmed"},
        )  # fmt: skip

    @admin.action(description="Search the index and lineage")
    def search(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> None:
        call_service_for_each(
            request, queryset, lambda r: services.dsr_search(actor=request.user, request=r), each={DONE: _searched}
        )

    # --- filing a request ----------------------------------------------------------------------

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ReceiveForm(request.POST or None, projects=officer_projects(user=request.user).order_by("slug"))
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                filed = services.dsr_receive(
                    actor=request.user, project=data["project"], regime=data["regime"], kind=data["kind"],
                    channel=data["channel"], received_at=form.received(), identifiers=form.identifiers(),
                    tz=data["tz"],
                )  # fmt: skip
            except DomainError as exc:
                refusal(request, exc, object_type="privacy.datasubjectrequest")
                for field, _problems in (exc.fields or {}).items():
                    if field in form.fields:
                        form.add_error(field, exc.message.removeprefix(f"{field}: "))
                        break
                else:
                    form.add_error(None, exc.message)
            else:
                messages.success(request, f"{filed.reference} filed: {display.state_text(filed)}.")
                return HttpResponseRedirect(self._page(filed))
        context = {
            **self.admin_site.each_context(request), "title": "File a data-subject request", "form": form,
            "opts": self.opts,
        }  # fmt: skip
        return TemplateResponse(request, "admin/privacy/datasubjectrequest/add.html", context)

    # --- the request's page --------------------------------------------------------------------

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
        self, request: HttpRequest, obj: DataSubjectRequest, bound: tuple[str, forms.Form] | None = None
    ) -> HttpResponse:
        from audits.ledger.models import Entry

        now = timezone.now()
        can_act = may_act(user=request.user, project=obj.project)
        offered = display.steps(obj, now) if can_act else []
        actions = []
        for name in offered:
            spec = STEPS.get(name)
            form = bound[1] if bound and bound[0] == name else (spec.form() if spec and spec.form else None)
            if name == "erase":
                url = reverse("admin:privacy_datasubjectrequest_erase", args=[obj.pk])
            elif name == "access-letter":
                try:
                    url = reverse(LETTER_URL_NAME, args=[obj.pk])
                except NoReverseMatch:
                    continue
            else:
                url = reverse("admin:privacy_datasubjectrequest_step", args=[obj.pk, name])
            actions.append({
                "name": name, "label": spec.label if spec else OTHER_STEPS[name], "form": form, "url": url,
                "later": name in LATER_STEPS,
            })  # fmt: skip
        entries = Entry.objects.filter(subject_type="data_subject_request", subject_id=str(obj.pk)).order_by("index")
        context = {
            **self.admin_site.each_context(request),
            "title": f"{obj.reference}: {obj.get_regime_display()} {obj.get_kind_display()}",
            "opts": self.opts, "dsr": obj, "can_act": can_act, "actions": actions,
            "open_step": bound[0] if bound else None, "facts": self._facts(obj, now),
            "found": display.findings(obj) if obj.searched_at else None, "erased": display.erasure(obj),
            "extension": self._extension(obj) if "extend" in offered else None,
            "entries": [(e, display.local(e.created_at, obj.tz)) for e in entries],
            "ledger_links": request.user.has_perm("ledger.view_entry"),
        }  # fmt: skip
        return TemplateResponse(request, "admin/privacy/datasubjectrequest/detail.html", context)

    @staticmethod
    def _facts(obj: DataSubjectRequest, now: datetime) -> list[tuple[str, Any]]:
        answered = obj.responded_at if not obj.is_open else None
        _, _, next_step = display.state_text(obj).partition(": ")  # a closed request has none
        state = format_html('<strong class="dsr-state">{}</strong>', capfirst(obj.get_state_display()))
        rows: list[tuple[str, Any]] = [
            ("State", format_html("{}: {}", state, next_step) if next_step else state),
            ("Project", obj.project.slug),
            ("Regime and kind", f"{obj.get_regime_display()}, {obj.get_kind_display()}"),
            ("Channel", obj.get_channel_display()),
            ("Received", f"{display.local(obj.received_at, obj.tz)}, filed by {obj.received_by.get_username()}"),
            ("Time zone", obj.tz),
            ("Identifiers", display.identifiers(obj)),
        ]  # fmt: skip
        if obj.confirm_by is None:
            rows.append(
                ("Confirm receipt", f"no confirmation step for a {obj.get_regime_display()} {obj.kind} request")
            )
        elif obj.receipt_confirmed_at:
            rows.append(("Confirm receipt", display.deadline(obj, obj.confirm_by, now, obj.receipt_confirmed_at)))
        else:
            rows.append(("Confirm receipt", display.deadline(obj, obj.confirm_by, now, None)))
        rows.append(("Respond", display.deadline(obj, obj.respond_by, now, answered)))
        if obj.extended:
            rows.append(("Extended", f"on {display.local(obj.extended_at, obj.tz)}: {obj.extension_reason}"))
        elif obj.extension_notice_by and obj.is_open:
            rows.append(("Extension", f"possible once, notified by {display.local(obj.extension_notice_by, obj.tz)}"))
        if obj.verified_at:
            who = obj.verified_by.get_username() if obj.verified_by else "-"
            rows.append(("Identity", f"verified {display.local(obj.verified_at, obj.tz)} by {who}: "
                                     f"{obj.verification_method}"))  # fmt: skip
        if obj.searched_at:
            rows.append(("Searched", display.local(obj.searched_at, obj.tz)))
        if obj.package_issued_at:
            rows.append(("Access package", format_html("issued {}, SHA-256 <code>{}</code>",
                                                       display.local(obj.package_issued_at, obj.tz),
                                                       obj.package_sha256)))  # fmt: skip
        if obj.letter_issued_at:
            rows.append(("Letter (PDF)", format_html("issued {}, signed, SHA-256 <code>{}</code>",
                                                     display.local(obj.letter_issued_at, obj.tz),
                                                     obj.letter_sha256)))  # fmt: skip
        if obj.erased_at:
            rows.append(("Erased", display.local(obj.erased_at, obj.tz)))
        if obj.responded_at:
            who = obj.closed_by.get_username() if obj.closed_by else "-"
            rows.append(("Response", f"{display.local(obj.responded_at, obj.tz)} by {who}: {obj.response_nature}"))
        if obj.denial_basis:
            rows.append(("Basis of the denial", obj.denial_basis))
        return rows

    @staticmethod
    def _extension(obj: DataSubjectRequest) -> str:
        from audits.privacy.services.shared import deadlines_of

        try:
            extended = deadlines_of(obj.regime, obj.kind, obj.received_at, obj.tz, extended=True)
        except DomainError as exc:
            return exc.message
        return f"Extended, the response would be {dl.describe(extended.respond_by.ends_at, obj.tz, timezone.now())}."

    def _page(self, obj: DataSubjectRequest) -> str:
        return reverse("admin:privacy_datasubjectrequest_change", args=[obj.pk])

    def _visible(self, request: HttpRequest, pk: int) -> DataSubjectRequest:
        obj = self.get_queryset(request).select_related("project").filter(pk=pk).first()
        if obj is None:
            raise Http404(f"no data-subject request {pk} in your projects")
        return obj

    # --- the steps -----------------------------------------------------------------------------

    def step_view(self, request: HttpRequest, pk: int, step: str) -> HttpResponse:
        obj = self._visible(request, pk)
        if request.method != "POST":
            return HttpResponseRedirect(self._page(obj))
        if step == "access-package":
            return self._access_package(request, obj)
        spec = STEPS.get(step)
        if spec is None:
            raise Http404(f"no step {step!r}")
        data: dict[str, Any] = {}
        if spec.form is not None:
            form = spec.form(request.POST)
            if not form.is_valid():
                messages.error(request, f"{obj.reference}: {spec.label.lower()}: check the form below; nothing changed")
                return self._render_page(request, obj, bound=(step, form))
            data = form.cleaned_data
        call_service_for_each(
            request, [obj], lambda r: spec.call(request.user, r, data), name=lambda r: r.reference,
            each={DONE: spec.done},
        )  # fmt: skip
        return HttpResponseRedirect(self._page(obj))

    def _access_package(self, request: HttpRequest, obj: DataSubjectRequest) -> HttpResponse:
        try:
            package, digest = services.dsr_access_package(actor=request.user, request=obj)
        except DomainError as exc:
            refusal(request, exc, object_type="privacy.datasubjectrequest", object_id=obj.pk)
            messages.error(request, f"{obj.reference}: {exc.message}")
            return HttpResponseRedirect(self._page(obj))
        body = json.dumps(package, indent=2, ensure_ascii=False).encode()
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="access-package-{obj.reference}.json"'
        response["X-Package-SHA256"] = digest  # of the package's RFC 8785 form, as the ledger records it
        response["Cache-Control"] = "no-store"
        return response

    # --- erasure, after its confirmation page --------------------------------------------------

    def erase_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        obj = self._visible(request, pk)
        try:
            plan = services.dsr_erasure_plan(actor=request.user, request=obj)
        except DomainError as exc:
            refusal(request, exc, object_type="privacy.datasubjectrequest", object_id=obj.pk)
            messages.error(request, f"{obj.reference}: erasure refused: {exc.message}")
            return HttpResponseRedirect(self._page(obj))
        form = EraseConfirmForm(
            request.POST if request.method == "POST" else None, expected=obj.reference, initial={"plan": plan.digest}
        )
        if request.method == "POST" and plan.hold is None and form.is_valid():
            try:
                erased = services.dsr_erase(actor=request.user, request=obj, confirmed_plan=form.cleaned_data["plan"])
            except DomainError as exc:
                refusal(request, exc, object_type="privacy.datasubjectrequest", object_id=obj.pk)
                messages.error(request, f"{obj.reference}: {exc.message}")
                if exc.code != "plan_changed":
                    return HttpResponseRedirect(self._page(obj))
                plan = services.dsr_erasure_plan(actor=request.user, request=obj)
                form = EraseConfirmForm(expected=obj.reference, initial={"plan": plan.digest})
            else:
                done = erased.erasure
                messages.success(
                    request,
                    f"{erased.reference}: erased: {len(done['replaced'])} dataset version(s) replaced, "
                    f"{len(done['model_reviews'])} model review(s) opened, "
                    + (f"{len(done['incidents'])} incident(s) blanked, " if done["incidents"] else "")
                    + (
                        f"{sum(t['turns'] for t in done['transcripts'])} transcript turn(s) erased, "
                        if done.get("transcripts")
                        else ""
                    )
                    + f"{len(done['vault_keys_shredded'])} vault key(s) shredded. The request is now erased: "
                    "complete it once the requester is told.",
                )
                return HttpResponseRedirect(self._page(erased))
        context = {
            **self.admin_site.each_context(request), "title": f"Erase the person of {obj.reference}?",
            "opts": self.opts, "dsr": obj, "plan": plan, "form": form,
            "model_rows": [
                {"label": str(mv), "id": mv.pk, "trained_on": ", ".join(map(str, plan.models[mv.pk]["trained_on"])),
                 "via": display.via(plan.models[mv.pk]["via"]), "open": mv.pk in plan.reviews_open}
                for mv in plan.model_versions
            ],
            "incident_rows": [{"incident": c.incident, "fields": display.incident_fields(c.fields)}
                              for c in plan.incidents],
        }  # fmt: skip
        return TemplateResponse(request, "admin/privacy/datasubjectrequest/erase.html", context)
