"""Dataset versions: the list, and each version's page, where its PII scan is watched, its findings
reviewed (a data steward sees the record behind a finding, its span highlighted) and marked, the
version's review recorded, a new scan or an approval to train on it requested.

Every command is a POST to its own URL that calls one service (``pii_finding_view``,
``pii_finding_mark``, ``dataset_version_review``, ``pii_scan_request``,
``approval_request_submit``) and goes back to the version's page with the service's answer, or
its refusal, as a message. The record shown by a preview is in that one response alone, which
browsers are told not to keep (``never_cache``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from common.admin import readable_field
from common.errors import DomainError
from governance.admin import ProjectScopedAdmin
from governance.models import ApprovalState
from governance.roles import Role
from governance.rules import REQUESTER_ROLES
from governance.selectors import approval_list
from governance.services import approval_request_submit
from registry.admin.forms import MarkForm, ReviewForm, SubmitForm
from registry.admin.shared import created, refused, roles_in
from registry.models import DatasetVersion, FindingState, PiiFindingMark, PiiScan, PiiVerdict, ScanStatus
from registry.rules import scan_findings, unlisted_findings, use_status
from registry.selectors import latest_completed_scan, latest_scan
from registry.services import WRITERS, dataset_version_review, pii_finding_mark, pii_finding_view, pii_scan_request

# The three steps a scan goes through, shown as a progress bar: queued, running, finished.
STEPS = {ScanStatus.QUEUED: 1, ScanStatus.RUNNING: 2, ScanStatus.SUCCEEDED: 3, ScanStatus.FAILED: 3}
# Characters of a record's text shown around a flagged span, and of its other fields.
CONTEXT_CHARS = 300
TRAINING = "dataset_version.use_for_training"


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ProjectScopedAdmin):
    project_path = "dataset__project"
    list_display = ["__str__", "format", "records", "pii_verdict", "review", "usable", "created"]
    list_filter = ["pii_verdict", "review", "format"]
    list_select_related = ["dataset__project"]
    fields = [
        "dataset", "number", "original_name", "format", "size_bytes", "sha256", "record_count", "duplicate_count",
        "pii_verdict", "review", "reviewed_by", "reviewed_at", "review_note", "parent", "derivation", "erased_at",
        "erased_reason", "created_by", "created_at",
    ]  # fmt: skip

    created = created

    @admin.display(description="records", ordering="record_count")
    def records(self, obj: DatasetVersion) -> str:
        duplicates = f" ({obj.duplicate_count} duplicate{'s' if obj.duplicate_count != 1 else ''})"
        return f"{obj.record_count}{duplicates if obj.duplicate_count else ''}"

    @admin.display(description="usable")
    def usable(self, obj: DatasetVersion) -> str:
        allowed, reason = use_status(obj)
        return format_html(
            '<span class="use use-{}">{}</span> <span class="use-reason">{}</span>',
            "yes" if allowed else "no", "yes" if allowed else "no", reason,
        )  # fmt: skip

    def get_urls(self) -> list[Any]:
        def command(route: str, view: Any, name: str) -> Any:
            return path(route, self.admin_site.admin_view(require_POST(view)), name=f"registry_datasetversion_{name}")

        own = [
            command("<int:pk>/scan/", self.scan_view, "scan"),
            command("<int:pk>/review/", self.review_view, "review"),
            command("<int:pk>/submit/", self.submit_view, "submit"),
            command("<int:pk>/findings/<int:scan>/<int:number>/preview/", never_cache(self.preview_view), "preview"),
            command("<int:pk>/findings/<int:scan>/<int:number>/mark/", self.mark_view, "mark"),
        ]
        return own + super().get_urls()

    def _version(self, request: HttpRequest, pk: int) -> DatasetVersion:
        queryset = self.get_queryset(request).select_related("dataset__project")
        return get_object_or_404(queryset, pk=pk)

    def _page(self, version: DatasetVersion) -> str:
        return reverse("admin:registry_datasetversion_change", args=[version.pk])

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        version = self.get_object(request, object_id)
        if version is not None:
            extra_context = {**(extra_context or {}), **self._version_context(request, version)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _version_context(self, request: HttpRequest, version: DatasetVersion) -> dict[str, Any]:
        roles = roles_in(request, version.dataset.project)
        scan, completed = latest_scan(version), latest_completed_scan(version)
        findings = scan_findings(completed.findings or {}) if completed else []
        marks = {m.finding: m for m in PiiFindingMark.objects.filter(scan=completed).select_related("marked_by")}
        allowed, reason = use_status(version)
        steward = Role.DATA_STEWARD in roles
        requests = approval_list(user=request.user).filter(subject_type="dataset_version", subject_id=str(version.pk))
        approvals = list(requests.order_by("-created_at")[:20])
        pending = any(a.action == TRAINING and a.state == ApprovalState.PENDING for a in approvals)
        return {
            "version": version,
            "usable": allowed,
            "usable_reason": reason,
            "scan": scan,
            "scan_step": STEPS.get(scan.status, 0) if scan else 0,
            "scan_pending": scan is not None and scan.status in (ScanStatus.QUEUED, ScanStatus.RUNNING),
            "scan_seconds": _seconds(scan),
            "scan_progress": progress_text(scan) if scan else "",
            "completed": completed,
            "findings": [(f, marks.get(f.number)) for f in findings],
            "unlisted": unlisted_findings(completed.findings or {}) if completed else 0,
            "steward": steward,
            "may_rescan": bool(roles & WRITERS) and not version.erased_at,
            "may_review": steward and version.pii_verdict == PiiVerdict.FOUND,
            "review_form": ReviewForm(initial={"decision": version.review}),
            "states": FindingState.choices,
            "approval_requests": approvals,
            # One open request per action: a second would be refused, so it is not offered.
            "may_request": bool(roles & REQUESTER_ROLES) and allowed and not pending,
            "submit_form": SubmitForm(),
        }

    def scan_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = self._version(request, pk)
        try:
            scan = pii_scan_request(actor=request.user, version=version)
        except DomainError as exc:
            return refused(request, exc, self._page(version), dataset_version=version.pk)
        messages.success(request, f"Scan {scan.pk} of {version} queued; its progress shows below.")
        return HttpResponseRedirect(self._page(version))

    def review_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = self._version(request, pk)
        form = ReviewForm(request.POST)
        if not form.is_valid():
            problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())
            messages.error(request, f"No review recorded: {problems}")
            return HttpResponseRedirect(self._page(version))
        try:
            version = dataset_version_review(actor=request.user, version=version, **form.cleaned_data)
        except DomainError as exc:
            return refused(request, exc, self._page(version), dataset_version=version.pk)
        allowed, reason = use_status(version)
        usable = "it may be used" if allowed else "it may not be used"
        messages.success(request, f"Review of {version} recorded: {version.review}; {usable} ({reason}).")
        return HttpResponseRedirect(self._page(version))

    def submit_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = self._version(request, pk)
        form = SubmitForm(request.POST)
        comment = form.cleaned_data["comment"] if form.is_valid() else ""
        try:
            approval = approval_request_submit(
                actor=request.user, subject_type="dataset_version", subject_id=str(version.pk), action=TRAINING,
                comment=comment,
            )  # fmt: skip
        except DomainError as exc:
            return refused(request, exc, self._page(version), dataset_version=version.pk)
        slots = ", ".join(f"{slot['count']} {slot['role']}" for slot in approval.rule["approvals"])
        messages.success(request, f"Approval request #{approval.pk} opened: it waits for {slots}.")
        return HttpResponseRedirect(self._page(version))

    def _scan(self, version: DatasetVersion, scan: int) -> PiiScan:
        return get_object_or_404(PiiScan.objects.select_related("version__dataset__project"), pk=scan, version=version)

    def preview_view(self, request: HttpRequest, pk: int, scan: int, number: int) -> HttpResponse:
        """The record behind one finding, for a data steward: read from the stored file now, its
        span highlighted, the viewing recorded in the ledger by the service. Shown in this
        response only (not cached, not put in a message or a log)."""
        version = self._version(request, pk)
        pii_scan = self._scan(version, scan)
        try:
            preview = pii_finding_view(actor=request.user, scan=pii_scan, number=number)
        except DomainError as exc:
            return refused(request, exc, self._page(version), dataset_version=version.pk, finding=number)
        flagged_field = preview.finding.field
        fields = [
            (name, None if name == flagged_field else _clip(text)) for name, text in preview.fields
        ]  # the flagged field is shown cut around its span, below
        mark = PiiFindingMark.objects.filter(scan=pii_scan, finding=number).select_related("marked_by").first()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Finding {number} of scan {pii_scan.pk}: {preview.finding.entity}",
            "version": version,
            "scan": pii_scan,
            "finding": preview.finding,
            "fields": fields,
            "before": ("…" if len(preview.before) > CONTEXT_CHARS else "") + preview.before[-CONTEXT_CHARS:],
            "flagged": preview.flagged,
            "after": preview.after[:CONTEXT_CHARS] + ("…" if len(preview.after) > CONTEXT_CHARS else ""),
            "mark": mark,
            "states": FindingState.choices,
            "mark_form": MarkForm(),
            "latest": latest_completed_scan(version) == pii_scan,
            "ledger_index": preview.ledger_index,
        }
        return TemplateResponse(request, "admin/registry/datasetversion/finding.html", context)

    def mark_view(self, request: HttpRequest, pk: int, scan: int, number: int) -> HttpResponse:
        version = self._version(request, pk)
        pii_scan = self._scan(version, scan)
        form = MarkForm(request.POST)
        back = f"{self._page(version)}#finding-{number}"
        if not form.is_valid():
            messages.error(request, f"Finding {number} not marked: choose {' or '.join(FindingState.values)}.")
            return HttpResponseRedirect(back)
        state, allow = form.cleaned_data["state"], form.cleaned_data["allow"]
        try:
            _, changed = pii_finding_mark(
                actor=request.user, scan=pii_scan, number=number, state=state,
                allow=allow, allow_pattern=form.cleaned_data["allow_pattern"],
            )  # fmt: skip
        except DomainError as exc:
            return refused(request, exc, back, dataset_version=version.pk, finding=number)
        label = FindingState(state).label
        allowed = {
            "value": "; its value is on the project's allow-list",
            "pattern": "; the pattern is on the project's allow-list",
        }
        if changed:
            messages.success(request, f"Finding {number} marked {label}{allowed.get(allow, '')}.")
        else:
            messages.info(request, f"Finding {number} was already marked {label}.")
        return HttpResponseRedirect(back)


def _clip(text: str) -> str:
    return text if len(text) <= CONTEXT_CHARS else text[:CONTEXT_CHARS] + "…"


def progress_text(scan: PiiScan) -> str:
    """Records done of total, rate and time left, in words (empty before the scan starts)."""
    if not scan.records_total or scan.status == ScanStatus.QUEUED:
        return ""
    done = scan.records_scanned if scan.status == ScanStatus.SUCCEEDED else scan.records_done
    words = f"{done:,} of {scan.records_total:,} records ({100 * done // scan.records_total}%)"
    if scan.rate:
        words += f", {scan.rate:,.0f} records/s"
    if scan.eta_s is not None:
        words += f", about {int(scan.eta_s):,} s left"
    if scan.shard_count > 1:
        words += f"; {scan.shard_count} shards"
    return words


def _seconds(scan: PiiScan | None) -> int | None:
    """How long the scan has been waiting or running, or took, in whole seconds."""
    if scan is None:
        return None
    start = scan.started_at or scan.requested_at
    end = scan.finished_at or timezone.now()
    return max(0, int((end - start).total_seconds()))


@admin.register(PiiScan)
class PiiScanAdmin(ProjectScopedAdmin):
    project_path = "version__dataset__project"
    list_display = ["id", "version", "status", "requested_at", "finished_at", "records_scanned"]
    list_filter = ["status"]
    list_select_related = ["version__dataset__project"]
    fields = ["version", "status", "requested_at", "started_at", "finished_at", "records_scanned", "progress",
              "error", "engine_shown", "findings_shown"]  # fmt: skip
    readonly_fields = ["progress", "engine_shown", "findings_shown"]
    engine_shown = readable_field("engine", "engine")
    findings_shown = readable_field("findings", "findings (types, counts, locations; never the values)")

    @admin.display(description="progress")
    def progress(self, scan: PiiScan) -> str:
        return progress_text(scan)
