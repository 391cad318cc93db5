"""The admin's home page: what waits for the person signed in, above Django's list of pages.

Panels: the decisions waiting for them (the requests they may decide now, by the decision
service's own rules), data-subject requests near or past their deadline (for compliance
officers), open incidents by their Art. 73 clock, open monitoring alerts, open model reviews and
break-glass reviews, failed or stuck jobs of their projects, and the ledger's last signed
checkpoint and last verification.

Each panel reads its rows through the admin page that lists them (``has_view_permission`` and that
page's ``get_queryset``), so it shows a person exactly the rows that page would show them, and
each link opens. A panel whose page the person may not open is not shown.

This reads governance, the registry, training, serving, incidents, the audits, privacy, reports
and the ledger: no app may import all of them, so it lives on the top floor. ``home_context`` (a template
context processor) hands it to the index template (config/templates/admin/home.html) only on the
admin's index, and lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince, timeuntil

# Data-subject requests due within this many days are shown (and those past their deadline).
DEADLINE_WINDOW_DAYS = 7
# A failed job is shown for this long after it failed.
FAILED_WINDOW_DAYS = 14
# Rows per panel; the panel links the whole list.
PANEL_ROWS = 10


@dataclass(frozen=True)
class Row:
    text: str
    href: str = ""
    note: str = ""
    # A word a reader should notice ("overdue", "failed", "stuck"), shown as a badge, and its tone.
    flag: str = ""
    tone: str = ""


@dataclass
class Panel:
    id: str
    title: str
    rows: list[Row] = field(default_factory=list)
    count: int = 0
    empty: str = "Nothing."
    more_href: str = ""
    more_text: str = ""


def _visible(request: HttpRequest, model: type[Model]) -> QuerySet[Any] | None:
    """The rows of ``model`` its admin page shows this user; ``None`` when they may not open it."""
    try:
        model_admin = admin.site.get_model_admin(model)
    except admin.sites.NotRegistered:
        return None
    if not model_admin.has_view_permission(request):
        return None
    return model_admin.get_queryset(request)


def _change(obj: Model) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def _changelist(model: type[Model], query: str = "") -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist") + query


def _ago(moment: datetime | None) -> str:
    return f"{timesince(moment)} ago" if moment else "at an unknown time"


# --- Decisions -----------------------------------------------------------------------------------


def decisions_panel(request: HttpRequest) -> Panel | None:
    from governance.models import ApprovalRequest
    from governance.selectors import approvals_waiting_for
    from governance.subjects import request_in_words

    if _visible(request, ApprovalRequest) is None:
        return None
    waiting = list(approvals_waiting_for(user=request.user))
    soon = timezone.now() + timedelta(days=2)
    rows = [
        Row(
            text=f"#{approval.pk} {request_in_words(approval.action, approval.subject_type, approval.subject_id)}",
            href=_change(approval),
            note=f"{approval.project.slug}; asked by {approval.requester.get_username()} {_ago(approval.created_at)}"
            + (f"; expires in {timeuntil(approval.expires_at)}" if approval.expires_at else ""),
            flag="expires soon" if approval.expires_at and approval.expires_at < soon else "",
            tone="warning",
        )
        for approval in waiting[:PANEL_ROWS]
    ]
    return Panel(
        id="decisions", title="Decisions waiting for me", rows=rows, count=len(waiting),
        empty="Nothing waits for your decision.", more_href=_changelist(ApprovalRequest),
        more_text="All requests waiting for me",
    )  # fmt: skip


# --- Data-subject requests -----------------------------------------------------------------------


def deadlines_panel(request: HttpRequest) -> Panel | None:
    """For compliance officers: open requests due within ``DEADLINE_WINDOW_DAYS`` or overdue."""
    from audits.privacy.models import OPEN_STATES, DataSubjectRequest
    from governance.roles import Role
    from governance.selectors import project_list

    officer_of = project_list(user=request.user, roles=[Role.COMPLIANCE_OFFICER])
    visible = _visible(request, DataSubjectRequest)
    if visible is None or not officer_of.exists():
        return None
    now = timezone.now()
    due = visible.filter(
        project__in=officer_of, state__in=OPEN_STATES, respond_by__lte=now + timedelta(days=DEADLINE_WINDOW_DAYS)
    ).order_by("respond_by", "pk")
    rows = []
    for subject_request in due.select_related("project")[:PANEL_ROWS]:
        late = subject_request.respond_by < now
        when = (
            f"overdue by {timesince(subject_request.respond_by, now)}"
            if late
            else f"due in {timeuntil(subject_request.respond_by, now)}"
        )
        rows.append(
            Row(
                text=f"Request {subject_request.pk}: {subject_request.get_regime_display()} "
                f"{subject_request.get_kind_display()}",
                href=_change(subject_request),
                note=f"{subject_request.project.slug}; {subject_request.get_state_display()}; {when} "
                f"({subject_request.respond_by:%Y-%m-%d})",
                flag="overdue" if late else "due soon",
                tone="bad" if late else "warning",
            )
        )
    return Panel(
        id="deadlines", title="Data-subject requests near their deadline", rows=rows, count=due.count(),
        empty=f"No open request is due within {DEADLINE_WINDOW_DAYS} days.",
        more_href=_changelist(DataSubjectRequest), more_text="All data-subject requests",
    )  # fmt: skip


# --- Incidents and monitoring alerts ------------------------------------------------------------


def incidents_panel(request: HttpRequest) -> Panel | None:
    """Open incidents, the serious ones first by their EU AI Act Art. 73 deadline (overdue first),
    then those not classified yet (their clock cannot start until they are)."""
    from incidents.models import Incident, IncidentState
    from incidents.rules import describe, is_overdue

    visible = _visible(request, Incident)
    if visible is None:
        return None
    now = timezone.now()
    open_ = visible.exclude(state=IncidentState.CLOSED).exclude(serious=False).select_related("project")
    ordered = sorted(open_, key=lambda i: (i.report_due_at is None, i.report_due_at or now, i.pk))
    rows = []
    for incident in ordered[:PANEL_ROWS]:
        late = is_overdue(incident.report_due_at, incident.authority_reported_at, now)
        unclassified = incident.serious is None
        rows.append(
            Row(
                text=f"Incident {incident.project.slug}#{incident.number}: {incident.title}",
                href=_change(incident),
                note=f"{incident.get_state_display()}; "
                + ("not classified yet: is it serious?" if unclassified else describe(
                    incident.report_due_at, incident.authority_reported_at, now)),
                flag="overdue" if late else ("to classify" if unclassified else ""),
                tone="bad" if late else "warning",
            )
        )  # fmt: skip
    return Panel(
        id="incidents", title="Open incidents", rows=rows, count=len(ordered),
        empty="No incident is open that is serious or waits for its classification.",
        more_href=_changelist(Incident), more_text="All incidents",
    )  # fmt: skip


def alerts_panel(request: HttpRequest) -> Panel | None:
    """Monitoring reviews a crossed threshold opened and nobody has resolved yet."""
    from serving.models import AlertState, DeploymentAlert

    visible = _visible(request, DeploymentAlert)
    if visible is None:
        return None
    open_ = visible.exclude(state=AlertState.RESOLVED).select_related("deployment__project").order_by("opened_at")
    rows = [
        Row(
            text=f"{alert.deployment}: {alert.metric.replace('_', ' ')} {alert.observed:g} above {alert.threshold:g}",
            href=_change(alert),
            note=f"{alert.get_state_display()}; opened {_ago(alert.opened_at)}",
            flag="deployment paused" if alert.paused else "",
            tone="bad" if alert.paused else "warning",
        )
        for alert in open_[:PANEL_ROWS]
    ]
    return Panel(
        id="alerts", title="Monitoring alerts to review", rows=rows, count=open_.count(),
        empty="No monitoring alert is open.", more_href=_changelist(DeploymentAlert),
        more_text="All monitoring alerts",
    )  # fmt: skip


# --- Reviews -------------------------------------------------------------------------------------


def reviews_panel(request: HttpRequest) -> Panel | None:
    """Open model reviews (a model trained on data an erasure replaced) and break-glass approvals
    awaiting a compliance officer's review. A break-glass approval links its request's decision
    page, whose history shows the justification and the review."""
    from audits.privacy.models import ModelReview
    from governance.models import ApprovalRequest
    from governance.selectors import break_glass_reviews

    models = _visible(request, ModelReview)
    requests = _visible(request, ApprovalRequest)
    if models is None and requests is None:
        return None
    now = timezone.now()
    rows, count = [], 0
    if requests is not None:
        open_glass = break_glass_reviews(user=request.user).filter(closed_at__isnull=True)
        count += open_glass.count()
        for review in open_glass[:PANEL_ROWS]:
            late = review.due_at < now
            when = f"overdue by {timesince(review.due_at, now)}" if late else f"due in {timeuntil(review.due_at, now)}"
            rows.append(
                Row(
                    text=f"Break-glass approval of request #{review.request_id} ({review.request.action})",
                    href=_change(review.request),
                    note=f"{review.request.project.slug}; by {review.admin.get_username()} {_ago(review.opened_at)}; "
                    f"review {when}",
                    flag="overdue" if late else "to review", tone="bad" if late else "warning",
                )
            )  # fmt: skip
    if models is not None:
        open_models = models.filter(closed_at__isnull=True).order_by("opened_at")
        count += open_models.count()
        for review in open_models.select_related("model_version__model")[:PANEL_ROWS]:
            rows.append(
                Row(
                    text=f"Model review of {review.model_version} after data-subject request {review.request_id}",
                    href=_change(review), note=f"opened {_ago(review.opened_at)}: retrain, retire or keep with a note",
                    flag="to review", tone="warning",
                )
            )  # fmt: skip
    return Panel(
        id="reviews", title="Reviews awaiting a decision", rows=rows[:PANEL_ROWS], count=count,
        empty="No model review or break-glass review is open.",
    )  # fmt: skip


# --- Jobs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A kind of work a worker does, and how to tell it failed or stuck: ``failed`` states (shown
    for ``FAILED_WINDOW_DAYS`` after ``ended``, or ``created`` when it never ended), and per
    waiting state the times that must all be older than the lease (the setting ``lease``), the
    first of them set."""

    model: str
    label: str
    state: str
    failed: tuple[str, ...]
    waiting: dict[str, tuple[str, ...]]
    lease: str
    ended: str
    created: str
    why: str

    def model_class(self) -> type[Model]:
        from django.apps import apps

        return apps.get_model(self.model)

    def failed_or_stuck(self, now: datetime) -> Q:
        since = now - timedelta(days=FAILED_WINDOW_DAYS)
        recent = Q(**{f"{self.ended}__gte": since}) | Q(
            **{f"{self.ended}__isnull": True, f"{self.created}__gte": since}
        )
        wanted = Q(**{f"{self.state}__in": self.failed}) & recent
        cutoff = now - timedelta(seconds=float(getattr(settings, self.lease)))
        for state, times in self.waiting.items():
            old = Q(**{self.state: state, f"{times[0]}__lt": cutoff})
            for later in times[1:]:
                old &= Q(**{f"{later}__isnull": True}) | Q(**{f"{later}__lt": cutoff})
            wanted |= old
        return wanted


JOBS = (
    Job("registry.PiiScan", "PII scan", "status", ("failed",), {"queued": ("requested_at", "claimed_at"),
        "running": ("claimed_at",)}, "PII_SCAN_LEASE_S", "finished_at", "requested_at", "error"),
    Job("training.FineTuneRun", "Fine-tune run", "state", ("failed",), {"queued": ("queued_at", "heartbeat_at"),
        "running": ("heartbeat_at",)}, "TRAINING_HEARTBEAT_TIMEOUT_S", "finished_at", "created_at", "failure_reason"),
    Job("training.OptimisationRun", "Optimisation run", "state", ("failed",), {"queued": ("queued_at",),
        "running": ("started_at",)}, "OPTIMISATION_RUN_LEASE_S", "finished_at", "created_at", "failure_reason"),
    Job("checks.SecurityScan", "Security scan", "state", ("failed",), {"queued": ("created_at", "heartbeat_at"),
        "running": ("heartbeat_at",)}, "TRAINING_HEARTBEAT_TIMEOUT_S", "finished_at", "created_at", "failure_reason"),
    Job("checks.BiasEvaluation", "Bias evaluation", "state", ("failed",), {"queued": ("created_at", "heartbeat_at"),
        "running": ("heartbeat_at",)}, "TRAINING_HEARTBEAT_TIMEOUT_S", "finished_at", "created_at", "failure_reason"),
    Job("reports.ReportRun", "Report", "state", ("failed",), {"queued": ("created_at", "claimed_at"),
        "running": ("claimed_at",)}, "REPORTS_LEASE_S", "finished_at", "created_at", "error"),
    Job("serving.Deployment", "Deployment", "state", ("failed", "refused"), {"starting": ("claimed_at",)},
        "SERVING_START_TIMEOUT_S", "stopped_at", "created_at", "refusal_reason"),
)  # fmt: skip


def _job_row(job: Job, obj: Any) -> Row:
    state = getattr(obj, job.state)
    if state in job.failed:
        why = (getattr(obj, job.why) or "no reason recorded").strip().splitlines()[0][:200]
        return Row(
            f"{job.label}: {obj}", _change(obj), f"{state} {_ago(getattr(obj, job.ended))}: {why}", "failed", "bad"
        )
    times = [getattr(obj, name) for name in job.waiting[state] if getattr(obj, name)]
    last = max(times) if times else None
    return Row(f"{job.label}: {obj}", _change(obj), f"{state}, no progress for {timesince(last) if last else 'long'}",
               "stuck", "warning")  # fmt: skip


def jobs_panel(request: HttpRequest) -> Panel | None:
    """Failed (lately) or stuck (waiting past their lease) jobs of the user's projects."""
    now = timezone.now()
    found: list[tuple[datetime, Row]] = []
    count, shown_any = 0, False
    for job in JOBS:
        visible = _visible(request, job.model_class())
        if visible is None:
            continue
        shown_any = True
        matching = visible.filter(job.failed_or_stuck(now)).order_by(f"-{job.created}")
        count += matching.count()
        found += [(getattr(obj, job.created), _job_row(job, obj)) for obj in matching[:PANEL_ROWS]]
    if not shown_any:
        return None
    found.sort(key=lambda pair: pair[0], reverse=True)
    return Panel(
        id="jobs", title="Failed or stuck jobs", rows=[row for _, row in found[:PANEL_ROWS]], count=count,
        empty=f"No job failed in the last {FAILED_WINDOW_DAYS} days, and none is stuck.",
    )  # fmt: skip


# --- The ledger ----------------------------------------------------------------------------------


def ledger_panel(request: HttpRequest) -> Panel | None:
    from audits.ledger.models import Checkpoint, VerificationRun

    checkpoints = _visible(request, Checkpoint)
    runs = _visible(request, VerificationRun)
    if checkpoints is None and runs is None:
        return None
    rows = []
    if checkpoints is not None:
        last = checkpoints.order_by("-tree_size", "-id").first()
        if last is None:
            rows.append(Row("No checkpoint signed yet", flag="unsigned", tone="warning"))
        else:
            rows.append(Row(f"Last signed checkpoint: size {last.tree_size}", _change(last),
                            f"signed {last.created_at:%Y-%m-%d %H:%M} ({_ago(last.created_at)})"))  # fmt: skip
    if runs is not None:
        run = runs.order_by("-started_at", "-id").first()
        if run is None:
            rows.append(Row("The ledger has not been verified yet", note="manage.py ledger verify", flag="never",
                            tone="warning"))  # fmt: skip
        else:
            outcome = "passed" if run.ok else f"FAILED: {run.failure[:200]}"
            rows.append(Row(
                f"Last verification: {'passed' if run.ok else 'failed'} at size {run.tree_size}", _change(run),
                f"{outcome}; {run.checkpoints_checked} checkpoints checked, {run.finished_at:%Y-%m-%d %H:%M} "
                f"({_ago(run.finished_at)})", "" if run.ok else "failed", "" if run.ok else "bad",
            ))  # fmt: skip
    return Panel(id="ledger", title="The ledger", rows=rows, count=len(rows))


class Home:
    """The panels of one person's home page, computed when the template first asks."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request

    @cached_property
    def panels(self) -> list[Panel]:
        makers = (
            decisions_panel,
            deadlines_panel,
            incidents_panel,
            alerts_panel,
            reviews_panel,
            jobs_panel,
            ledger_panel,
        )
        return [panel for make in makers if (panel := make(self.request)) is not None]


def home_context(request: HttpRequest) -> dict[str, Any]:
    """Template context processor: ``home`` on the admin's index, nothing elsewhere."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.view_name != "admin:index":
        return {}
    return {"home": Home(request)}
