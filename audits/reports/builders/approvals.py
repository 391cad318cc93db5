"""The governance audit report: approval requests and decisions, separation-of-duties refusals,
break-glass approvals and their reviews, waivers, role changes, the AI systems and their risk
class, the incidents of the period with their Art. 73 clock, and overdue items, with a full
ledger verification at generation time."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from django.utils import timezone

from audits.reports.builders.ai_systems import overdue_incident_rows, period_incidents, systems_sections
from audits.reports.builders.shared import Progress, day, entries, payload, period, waiver_table
from audits.reports.claims import Claims
from audits.reports.models import ReportRun
from audits.reports.pdf import BarChart, Digest, Heading, KeyValues, Paragraph, Table


def governance_audit(run: ReportRun, size: int, progress: Progress, claims: Claims, org: Any) -> tuple[str, list[Any]]:
    """Every approval request and decision of the period, separation-of-duties refusals,
    break-glass approvals and their reviews, waivers, role changes, overdue items, and a full
    ledger verification at generation time."""
    from audits.ledger.replay import VerificationFailed
    from audits.ledger.verification import ledger_verify
    from governance.models import ApprovalDecision, ApprovalRequest, ApprovalState, BreakGlassReview

    start, end = period(run)
    now = timezone.now()
    progress(10, "verifying the whole ledger")
    try:
        result = ledger_verify()
        verification = [
            ("result", "passed"), ("tree size verified", result.tree_size),
            ("checkpoints checked", result.checkpoints_checked), ("root", result.root.hex()),
        ]  # fmt: skip
    except VerificationFailed as failure:
        verification = [("result", "FAILED"), ("first fault", str(failure))]
    verification.append(("this report cites checkpoint", f"tree size {size}"))

    progress(30, "reading approval requests and decisions")
    requests = ApprovalRequest.objects.filter(created_at__gte=start, created_at__lt=end).select_related(
        "project", "requester"
    )
    if run.project:
        requests = requests.filter(project=run.project)
    requests = list(requests.order_by("created_at"))
    in_period = {r.pk for r in requests}
    requested_at: dict[int, int] = {}  # request -> its approval.requested entry
    for entry in entries(size, action="approval.requested", created_at__gte=start, created_at__lt=end).only(
        "index", "body"
    ):
        request_pk = payload(entry).get("request")
        if request_pk in in_period:
            requested_at.setdefault(request_pk, entry.index)
    request_rows = [
        [r.pk, r.project.slug, r.action, f"{r.subject_type} {r.subject_id}", Digest(r.subject_digest),
         r.requester.username, r.state, day(r.created_at), day(r.closed_at), Digest(r.policy_hash)]
        for r in requests
    ]  # fmt: skip
    # The decisions made in the period, whenever their request was opened (one opened before the
    # period and decided in it is in; one decided after the period is not).
    decided = ApprovalDecision.objects.filter(created_at__gte=start, created_at__lt=end)
    if run.project:
        decided = decided.filter(request__project=run.project)
    decisions = list(decided.select_related("approver", "request").order_by("ledger_index"))
    decisions = [d for d in decisions if d.ledger_index < size]
    decision_rows = [
        [d.request_id, d.approver.username, d.role, d.decision, d.reason, Digest(d.subject_digest),
         Digest(d.policy_hash), day(d.created_at)]
        for d in decisions
    ]  # fmt: skip
    for d in decisions:
        said = f"decision on request {d.request_id} by {d.approver.username}"
        if d.role == "break_glass":  # recorded by the break-glass entry, which carries no decision field
            claims.add(said, d.ledger_index, "action", "approval.break_glass")
        else:
            claims.many(said, d.ledger_index, {"payload.decision": d.decision, "payload.role": d.role,
                                               "subject.digest": d.subject_digest})  # fmt: skip

    progress(45, "reading refusals, break-glass approvals and waivers")
    refusals = list(entries(size, action="separation_of_duties.refused", created_at__gte=start, created_at__lt=end))
    if run.project:  # refusals on the project's requests, whenever those were made
        project_requests = set(ApprovalRequest.objects.filter(project=run.project).values_list("pk", flat=True))
        refusals = [e for e in refusals if payload(e).get("request") in project_requests]
    refusal_rows = [
        [payload(e).get("request"), e.actor_name, payload(e).get("code"), payload(e).get("message"),
         day(e.created_at)]
        for e in refusals
    ]  # fmt: skip
    reviews = BreakGlassReview.objects.filter(opened_at__gte=start, opened_at__lt=end).select_related(
        "request__project", "admin", "closed_by", "request"
    )
    if run.project:
        reviews = reviews.filter(request__project=run.project)
    reviews = list(reviews.order_by("opened_at"))
    subjects = {r.request.subject_id for r in reviews}
    glass = {payload(e).get("request"): e.index
             for e in entries(size, action="approval.break_glass", subject_id__in=subjects)
             .only("index", "body")}  # fmt: skip
    review_rows, review_citations = [], []
    for review in reviews:
        if review.closed_at is None:
            timely = "OPEN, overdue" if review.due_at < now else "open, within time"
        else:
            timely = "closed in time" if review.closed_at <= review.due_at else "closed LATE"
        review_rows.append(
            [review.request_id, review.admin.username, review.justification, day(review.due_at),
             review.closed_by.username if review.closed_by else "", review.outcome, timely]
        )  # fmt: skip
        review_citations.append(glass.get(review.request_id))
        if review.request_id in glass:
            claims.add(f"break-glass approval of request {review.request_id}: justification", glass[review.request_id],
                       "payload.justification", review.justification)  # fmt: skip
    waivers = [r for r in requests if r.action.endswith(".waive")]

    progress(60, "reading role grants, AI systems, incidents and overdue items")
    role_entries = entries(
        size, action__in=["project.role_granted", "project.role_revoked"], created_at__gte=start, created_at__lt=end
    )
    if run.project:
        role_entries = role_entries.filter(subject_id=run.project.slug)
    role_rows = []
    role_citations = []
    for e in role_entries:
        p = payload(e)
        role_rows.append([e.action.rsplit("_", 1)[-1], e.actor_name, p.get("user"), p.get("role"), e.subject_id,
                          p.get("reason"), day(e.created_at)])  # fmt: skip
        role_citations.append(e.index)
    overdue = ApprovalRequest.objects.filter(state=ApprovalState.PENDING, expires_at__lt=now)
    open_reviews = BreakGlassReview.objects.filter(closed_at__isnull=True, due_at__lt=now)
    if run.project:
        overdue = overdue.filter(project=run.project)
        open_reviews = open_reviews.filter(request__project=run.project)
    from audits.privacy.models import OPEN_STATES, DataSubjectRequest, ModelReview

    late_requests = DataSubjectRequest.objects.filter(state__in=OPEN_STATES, respond_by__lt=now)
    open_model_reviews = ModelReview.objects.filter(closed_at__isnull=True).select_related("model_version__model")
    open_model_reviews = open_model_reviews.order_by("opened_at")
    if run.project:
        late_requests = late_requests.filter(project=run.project)
        open_model_reviews = open_model_reviews.filter(project=run.project)
    # Overdue means past due: each item has a due time, and it has passed. Open model reviews have
    # no legal deadline: they are listed apart, with their age, never as overdue.
    overdue_rows = (
        [["approval request", r.pk, r.action, day(r.expires_at)] for r in overdue]
        + [["break-glass review", b.request_id, "review by a compliance officer", day(b.due_at)] for b in open_reviews]
        + [["data-subject request", r.pk, f"{r.regime} {r.kind}: answer", day(r.respond_by)] for r in late_requests]
        + overdue_incident_rows(run, now)
    )  # fmt: skip
    review_opened = {
        e.subject_id: e.index for e in entries(size, action="model_review.opened").only("index", "subject_id")
    }
    open_review_rows = [
        [m.pk, f"retrain or document: {m.model_version.model.slug} v{m.model_version.number}", day(m.opened_at),
         f"{(now - m.opened_at).days} days"]
        for m in open_model_reviews
    ]  # fmt: skip
    open_review_citations = [review_opened.get(str(m.model_version_id)) for m in open_model_reviews]

    states = Counter(r.state for r in requests)
    ages = Counter(
        "under 1 day" if age < 1 else "1-7 days" if age < 7 else "7-30 days" if age < 30 else "over 30 days"
        for age in (((r.closed_at or now) - r.created_at).total_seconds() / 86400 for r in requests)
    )
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for d in decisions:
        per_day[f"{d.created_at:%Y-%m-%d}"][d.decision] += 1
    days = sorted(per_day)
    sections: list[Any] = [
        Heading("Ledger verification at generation time"), KeyValues(verification),
        Heading("Summary"),
        KeyValues([("approval requests", len(requests)), ("decisions", len(decision_rows)),
                   ("separation-of-duties refusals", len(refusal_rows)), ("break-glass approvals", len(review_rows)),
                   ("waivers", len(waivers)), ("role grants and revocations", len(role_rows)),
                   ("overdue items now", len(overdue_rows))]),
        BarChart("Approval requests by state", sorted(states),
                 {"requests": [float(states[s]) for s in sorted(states)]}),
        BarChart("Approval requests by age (open: until now)", ["under 1 day", "1-7 days", "7-30 days", "over 30 days"],
                 {"requests": [float(ages[a]) for a in ("under 1 day", "1-7 days", "7-30 days", "over 30 days")]}),
    ]  # fmt: skip
    if days:
        # Bars, not a line: a period with decisions on one day still shows them.
        sections.append(
            BarChart(
                "Decisions per day", days, {k: [float(per_day[d][k]) for d in days] for k in ("approve", "reject")}
            )
        )
    sections += [
        Heading("Approval requests"),
        Table(["request", "project", "action", "subject", "subject digest", "requester", "state", "opened", "closed",
               "policy set"], request_rows, [requested_at.get(r.pk) for r in requests]),
        Heading("Decisions (actor, role, policy-set hash, subject digest)"),
        Table(["request", "approver", "role", "decision", "reason", "subject digest", "policy set", "at"],
              decision_rows, [d.ledger_index for d in decisions if d.ledger_index < size]),
        Heading("Separation-of-duties refusals"),
        Table(["request", "who", "rule", "message", "at"], refusal_rows, [e.index for e in refusals]),
        Heading("Break-glass approvals and their reviews"),
        Table(["request", "admin", "justification", "review due", "reviewed by", "outcome", "in time"], review_rows,
              review_citations),
        Heading("Waivers"),
        waiver_table(waivers, size, claims),
        Heading("Role grants and revocations"),
        Table(["change", "by", "user", "role", "project", "reason", "at"], role_rows, role_citations),
        *systems_sections(run, size, claims),
        *period_incidents(run, size, claims, start, end, now),
        Heading("Overdue items at generation time (past their due time)"),
        Table(["item", "id", "what", "was due"], overdue_rows),
        Heading("Open model reviews (no deadline applies)"),
        Paragraph("Model versions trained on data that was later erased wait for a decision: retrain or document."),
        Table(["review", "what", "opened", "open for"], open_review_rows, open_review_citations),
    ]  # fmt: skip
    return "Governance audit report", sections
