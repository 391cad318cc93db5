"""The contents of each report, read from the inventory and the ledger (read-only).

Each builder returns an ``audits.reports.pdf.Report``: tables whose rows cite the ledger index of
the entry they come from (only entries inside the checkpoint the report is built from), charts,
and the checkpoint's signed note. Reads are batched per table, so a report costs a handful of
queries per section, not one per row.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.utils import timezone

from audits.reports.models import ReportKind, ReportRun
from audits.reports.pdf import BarChart, Heading, KeyValues, LineChart, Paragraph, Report, Table

Progress = Callable[[int, str], None]


def _short(digest: str | None, n: int = 19) -> str:
    return (digest or "")[:n]


def _day(moment: dt.datetime | None) -> str:
    return f"{timezone.localtime(moment, dt.UTC):%Y-%m-%d %H:%M}" if moment else ""


def _period(run: ReportRun) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(run.period_start, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(run.period_end + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    return start, end


def _entries(size: int, **filters: Any) -> Any:
    from audits.ledger.models import Entry

    return Entry.objects.filter(index__lt=size, **filters).order_by("index")


def _payload(entry: Any) -> dict[str, Any]:
    return json.loads(bytes(entry.body)).get("payload") or {}


def _scope(run: ReportRun) -> str:
    return f"project {run.project.slug} ({run.project.name})" if run.project else "the whole organisation"


def build(run: ReportRun, *, checkpoint: Any, progress: Progress) -> Report:
    builder = {
        ReportKind.GOVERNANCE_AUDIT: governance_audit,
        ReportKind.RECORDS_OF_PROCESSING: records_of_processing,
        ReportKind.ANNEX_IV: annex_iv,
        ReportKind.DPIA: dpia,
        ReportKind.CCPA_REQUEST_LOG: ccpa_request_log,
    }[ReportKind(run.kind)]
    title, sections = builder(run, checkpoint.tree_size, progress)
    return Report(
        title=title, scope=_scope(run), period_start=run.period_start, period_end=run.period_end,
        generated_at=timezone.now().replace(microsecond=0), checkpoint_text=checkpoint.note, sections=sections,
        kind=run.kind, report_id=str(run.report_id),
    )  # fmt: skip


# --- Governance audit ----------------------------------------------------------------------------


def governance_audit(run: ReportRun, size: int, progress: Progress) -> tuple[str, list[Any]]:
    """Every approval request and decision of the period, separation-of-duties refusals,
    break-glass approvals and their reviews, waivers, role changes, overdue items, and a full
    ledger verification at generation time."""
    from audits.ledger.replay import VerificationFailed
    from audits.ledger.verification import ledger_verify
    from governance.models import ApprovalDecision, ApprovalRequest, ApprovalState, BreakGlassReview

    start, end = _period(run)
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
    for entry in _entries(size, action="approval.requested", created_at__gte=start, created_at__lt=end).only(
        "index", "body"
    ):
        request_pk = _payload(entry).get("request")
        if request_pk in in_period:
            requested_at.setdefault(request_pk, entry.index)
    request_rows = [
        [r.pk, r.project.slug, r.action, f"{r.subject_type} {r.subject_id}", _short(r.subject_digest),
         r.requester.username, r.state, _day(r.created_at), _day(r.closed_at), _short(r.policy_hash)]
        for r in requests
    ]  # fmt: skip
    # The decisions made in the period, whenever their request was opened (one opened before the
    # period and decided in it is in; one decided after the period is not).
    decided = ApprovalDecision.objects.filter(created_at__gte=start, created_at__lt=end)
    if run.project:
        decided = decided.filter(request__project=run.project)
    decisions = list(decided.select_related("approver", "request").order_by("ledger_index"))
    decision_rows = [
        [d.request_id, d.approver.username, d.role, d.decision, d.reason, _short(d.subject_digest),
         _short(d.policy_hash), _day(d.created_at)]
        for d in decisions if d.ledger_index < size
    ]  # fmt: skip

    progress(45, "reading refusals, break-glass approvals and waivers")
    refusals = list(_entries(size, action="separation_of_duties.refused", created_at__gte=start, created_at__lt=end))
    if run.project:  # refusals on the project's requests, whenever those were made
        project_requests = set(ApprovalRequest.objects.filter(project=run.project).values_list("pk", flat=True))
        refusals = [e for e in refusals if _payload(e).get("request") in project_requests]
    refusal_rows = [
        [_payload(e).get("request"), e.actor_name, _payload(e).get("code"), _payload(e).get("message"),
         _day(e.created_at)]
        for e in refusals
    ]  # fmt: skip
    reviews = BreakGlassReview.objects.filter(opened_at__gte=start, opened_at__lt=end).select_related(
        "request__project", "admin", "closed_by"
    )
    if run.project:
        reviews = reviews.filter(request__project=run.project)
    review_rows = []
    for review in reviews.order_by("opened_at"):
        if review.closed_at is None:
            timely = "OPEN, overdue" if review.due_at < now else "open, within time"
        else:
            timely = "closed in time" if review.closed_at <= review.due_at else "closed LATE"
        review_rows.append(
            [review.request_id, review.admin.username, review.justification, _day(review.due_at),
             review.closed_by.username if review.closed_by else "", review.outcome, timely]
        )  # fmt: skip
    waiver_rows = [
        [r.pk, r.action, f"{r.subject_type} {r.subject_id}", r.state, _day(r.closed_at), _day(r.expires_at)]
        for r in requests if r.action.endswith(".waive")
    ]  # fmt: skip

    progress(60, "reading role grants and overdue items")
    role_entries = _entries(
        size, action__in=["project.role_granted", "project.role_revoked"], created_at__gte=start, created_at__lt=end
    )
    if run.project:
        role_entries = role_entries.filter(subject_id=run.project.slug)
    role_rows = []
    role_citations = []
    for e in role_entries:
        p = _payload(e)
        role_rows.append([e.action.rsplit("_", 1)[-1], e.actor_name, p.get("user"), p.get("role"), e.subject_id,
                          p.get("reason"), _day(e.created_at)])  # fmt: skip
        role_citations.append(e.index)
    overdue = ApprovalRequest.objects.filter(state=ApprovalState.PENDING, expires_at__lt=now)
    open_reviews = BreakGlassReview.objects.filter(closed_at__isnull=True, due_at__lt=now)
    if run.project:
        overdue = overdue.filter(project=run.project)
        open_reviews = open_reviews.filter(request__project=run.project)
    from audits.privacy.models import OPEN_STATES, DataSubjectRequest, ModelReview

    late_requests = DataSubjectRequest.objects.filter(state__in=OPEN_STATES, respond_by__lt=now)
    open_model_reviews = ModelReview.objects.filter(closed_at__isnull=True).select_related("model_version__model")
    if run.project:
        late_requests = late_requests.filter(project=run.project)
        open_model_reviews = open_model_reviews.filter(project=run.project)
    overdue_rows = (
        [["approval request", r.pk, r.action, _day(r.expires_at)] for r in overdue]
        + [["break-glass review", b.request_id, "review by a compliance officer", _day(b.due_at)] for b in open_reviews]
        + [["data-subject request", r.pk, f"{r.regime} {r.kind}: answer", _day(r.respond_by)] for r in late_requests]
        + [["model review (open)", m.pk, f"retrain or document: {m.model_version.model.slug} v{m.model_version.number}",
            _day(m.opened_at)] for m in open_model_reviews]
    )  # fmt: skip

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
                   ("waivers", len(waiver_rows)), ("role grants and revocations", len(role_rows)),
                   ("overdue items now", len(overdue_rows))]),
        BarChart("Approval requests by state", sorted(states),
                 {"requests": [float(states[s]) for s in sorted(states)]}),
        BarChart("Approval requests by age (open: until now)", ["under 1 day", "1-7 days", "7-30 days", "over 30 days"],
                 {"requests": [float(ages[a]) for a in ("under 1 day", "1-7 days", "7-30 days", "over 30 days")]}),
    ]  # fmt: skip
    if days:
        sections.append(
            LineChart(
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
        Table(["request", "admin", "justification", "review due", "reviewed by", "outcome", "in time"], review_rows),
        Heading("Waivers"),
        Table(["request", "action", "subject", "state", "decided", "expires"], waiver_rows),
        Heading("Role grants and revocations"),
        Table(["change", "by", "user", "role", "project", "reason", "at"], role_rows, role_citations),
        Heading("Overdue items at generation time"),
        Table(["item", "id", "what", "due"], overdue_rows),
    ]  # fmt: skip
    return "Governance audit report", sections


# --- Records of processing (GDPR Art. 30(1)) -----------------------------------------------------


def _lineage(version_pks: Iterable[int]) -> tuple[dict[int, set[str]], dict[int, set[str]]]:
    """Per dataset version: the model versions trained on it, and their deployments."""
    from registry.models import ModelVersion
    from serving.models import Deployment

    models: dict[int, set[str]] = defaultdict(set)
    deployments: dict[int, set[str]] = defaultdict(set)
    through = ModelVersion.dataset_versions.through.objects.filter(datasetversion_id__in=list(version_pks))
    by_model: dict[int, set[int]] = defaultdict(set)
    names = {mv.pk: f"{mv.model.slug} v{mv.number}" for mv in ModelVersion.objects.filter(
        pk__in=through.values("modelversion_id")).select_related("model")}  # fmt: skip
    for link in through:
        models[link.datasetversion_id].add(names[link.modelversion_id])
        by_model[link.modelversion_id].add(link.datasetversion_id)
    for d in Deployment.objects.filter(model_version_id__in=list(by_model)).only(
        "pk", "name", "environment", "state", "model_version_id"
    ):
        for version in by_model[d.model_version_id]:
            deployments[version].add(f"{d.name} ({d.environment}, {d.state})")
    return models, deployments


def records_of_processing(run: ReportRun, size: int, progress: Progress) -> tuple[str, list[Any]]:
    """One row per processing activity (dataset): Art. 30(1)(a)-(g), with the PII scan results and
    the models and deployments that use the dataset."""
    from registry.models import Dataset, DatasetVersion, PiiScan

    progress(10, "reading datasets")
    datasets = Dataset.objects.select_related("project", "data_steward").order_by("project__slug", "slug")
    if run.project:
        datasets = datasets.filter(project=run.project)
    datasets = list(datasets)
    progress(30, "reading versions and PII scans")
    versions = defaultdict(list)
    for v in DatasetVersion.objects.filter(dataset__in=datasets, erased_at__isnull=True).only(
        "pk", "dataset_id", "number", "pii_verdict", "review"
    ):
        versions[v.dataset_id].append(v)
    entities: dict[int, Counter[str]] = defaultdict(Counter)
    version_dataset = {v.pk: d for d, vs in versions.items() for v in vs}
    for scan in PiiScan.objects.filter(version_id__in=list(version_dataset), status="succeeded").only(
        "version_id", "findings"
    ):
        for entity, found in (scan.findings or {}).items():
            count = found.get("count", 1) if isinstance(found, dict) else 1
            entities[version_dataset[scan.version_id]][entity] += count
    progress(50, "following lineage to models and deployments")
    models, deployments = _lineage(version_dataset)
    created = (
        {(e.subject_id): e.index for e in _entries(size, action="dataset.created").only("index", "subject_id")}
        if len(datasets) < 50_000
        else {}
    )
    rows, citations = [], []
    for d in datasets:
        dvs = versions.get(d.pk, [])
        found = entities.get(d.pk, Counter())
        transfers = "; ".join(f"{t.get('country')}: {t.get('safeguard')}" if isinstance(t, dict) else str(t)
                              for t in d.third_country_transfers) or "none"  # fmt: skip
        rows.append([
            f"{d.project.slug}/{d.slug}", d.purpose, d.get_lawful_basis_display(),
            ", ".join(d.data_subject_categories) or "not recorded",
            ", ".join(sorted(set(d.personal_data_categories) | set(found))) or "none found",
            ", ".join(f"{k} {n}" for k, n in sorted(found.items())) or "no findings",
            ", ".join(d.recipients) or "none outside the controller", transfers,
            f"{d.retention_days} days", d.source,
            ", ".join(sorted({m for v in dvs for m in models.get(v.pk, ())})) or "none",
            ", ".join(sorted({x for v in dvs for x in deployments.get(v.pk, ())})) or "none",
        ])  # fmt: skip
        citations.append(created.get(str(d.pk)))
    progress(70, "laying out")
    lawful = Counter(d.get_lawful_basis_display() for d in datasets)
    sections = [
        Heading("Controller (Art. 30(1)(a))"),
        KeyValues([("controller", settings.REPORTS_CONTROLLER), ("contact", settings.REPORTS_CONTROLLER_CONTACT),
                   ("representative", settings.REPORTS_REPRESENTATIVE),
                   ("data protection officer", settings.REPORTS_DPO)]),
        Heading("Security measures (Art. 30(1)(g), Art. 32)"),
        Paragraph(settings.REPORTS_SECURITY_MEASURES),
        BarChart("Processing activities by lawful basis", sorted(lawful),
                 {"datasets": [float(lawful[k]) for k in sorted(lawful)]}),
        Heading("Processing activities (Art. 30(1)(b)-(f))"),
        Table(["activity", "purpose (b)", "lawful basis", "data subjects (c)", "personal data (c)",
               "PII scan findings", "recipients (d)", "third countries, safeguards (e)", "erasure limit (f)", "source",
               "models trained on it", "deployments"], rows, citations),
    ]  # fmt: skip
    return "Records of processing activities (GDPR Art. 30(1))", sections


# --- EU AI Act Annex IV and DPIA -----------------------------------------------------------------


def _model_facts(run: ReportRun, size: int) -> dict[str, Any]:
    from audits.checks.models import BiasEvaluation, SecurityScan
    from registry.models import ModelVersion
    from serving.models import Deployment

    version = ModelVersion.objects.select_related("model__project", "base__model", "created_by").get(
        pk=run.model_version_id
    )
    return {
        "version": version,
        "datasets": list(version.dataset_versions.select_related("dataset").order_by("dataset__slug", "number")),
        "scans": list(SecurityScan.objects.filter(model_version=version).order_by("created_at")),
        "evaluations": list(BiasEvaluation.objects.filter(model_version=version).order_by("created_at")),
        "deployments": list(Deployment.objects.filter(model_version=version).prefetch_related("log_segments")),
        "history": list(_entries(size, subject_type="model_version", subject_id=str(version.pk))),
    }


def annex_iv(run: ReportRun, size: int, progress: Progress) -> tuple[str, list[Any]]:
    """Technical documentation of one model version, in the order of the EU AI Act's Annex IV."""
    progress(20, "reading the model version, its data, audits and deployments")
    f = _model_facts(run, size)
    v = f["version"]
    scans = [[s.pk, s.profile_name, s.state, s.verdict, "; ".join(map(str, s.reasons)), _short(s.weights_digest),
              _day(s.finished_at)] for s in f["scans"]]  # fmt: skip
    evaluations = [[e.pk, e.profile_name, e.sensitive_feature, e.state, e.verdict,
                    json.dumps(e.results.get("metrics", e.results), sort_keys=True)[:300], _day(e.finished_at)]
                   for e in f["evaluations"]]  # fmt: skip
    segments = [s for d in f["deployments"] for s in d.log_segments.all()]
    verdicts = Counter((kind, a.verdict or a.state) for kind, audits in (("security scans", f["scans"]),
                       ("bias evaluations", f["evaluations"])) for a in audits)  # fmt: skip
    outcomes = sorted({outcome for _, outcome in verdicts}) or ["none yet"]
    sections = [
        BarChart("Security scan and bias evaluation results", outcomes,
                 {k: [float(verdicts[(k, o)]) for o in outcomes] for k in ("security scans", "bias evaluations")}),
        Heading("1. General description"),
        KeyValues([("model", f"{v.model.project.slug}/{v.model.slug} ({v.model.name})"), ("version", v.number),
                   ("weights digest", v.weights_digest), ("size", f"{v.size_bytes} bytes"), ("source", v.source),
                   ("base model", f"{v.base.model.slug} v{v.base.number}" if v.base else "none"),
                   ("registered by", v.created_by.username), ("registered", _day(v.created_at)),
                   ("intended purpose", v.model.description or "not recorded")]),
        Heading("2. Development process and data"),
        KeyValues(sorted((str(k), json.dumps(val, sort_keys=True)[:300]) for k, val in (v.lineage or {}).items())
                  or [("lineage", "none recorded (an imported model)")]),
        Table(["dataset version", "records", "SHA-256", "PII verdict", "review", "purpose", "lawful basis"],
              [[f"{d.dataset.slug} v{d.number}", d.record_count, _short(d.sha256, 16), d.pii_verdict, d.review,
                d.dataset.purpose, d.dataset.lawful_basis] for d in f["datasets"]]),
        Heading("3. Validation and testing: security scans (garak)"),
        Table(["scan", "profile", "state", "verdict", "reasons", "weights", "finished"], scans),
        Heading("3. Validation and testing: bias evaluations (fairlearn)"),
        Table(["evaluation", "profile", "sensitive feature", "state", "verdict", "metrics", "finished"], evaluations),
        Heading("4. Monitoring, functioning and control: deployments and Art. 12 logs"),
        Table(["deployment", "environment", "state", "runtime", "guard", "started", "stopped"],
              [[d.pk, d.environment, d.state, d.runtime, d.guard.get("mode"), _day(d.started_at), _day(d.stopped_at)]
               for d in f["deployments"]]),
        Table(["deployment", "log bytes", "requests", "statuses", "guard", "log SHA-256"],
              [[s.deployment_id, f"{s.start_offset}-{s.end_offset}", s.requests, json.dumps(s.summary.get("statuses")),
                json.dumps(s.summary.get("guard")), _short(s.sha256, 16)] for s in segments],
              [s.ledger_index if s.ledger_index < size else None for s in segments]),
        Heading("5. Risk management"),
        Paragraph("Risks are controlled by approvals under the policies in force (each decision names its policy-set "
                  "hash in the governance audit report), by security scans and bias evaluations bound to these "
                  "weights, and by the runtime PII guard of each deployment. Findings and waivers are listed above."),
        Heading("6. Changes over the lifecycle"),
        Table(["entry", "action", "by", "at"],
              [[e.index, e.action, e.actor_name, _day(e.created_at)] for e in f["history"]],
              [e.index for e in f["history"]]),
        Heading("7. Post-market monitoring plan"),
        Paragraph("Inference logs are summarised into the ledger every "
                  f"{settings.SERVING_LOG_SUMMARY_EVERY_S} s; latency, error rates, prompt-length drift (PSI against "
                  "the first window) and guard hits are watched per deployment, users rate outputs through the "
                  f"feedback endpoint, and baseline scans are re-run every {settings.AUDITS_RESCAN_EVERY_S // 86400} "
                  "days, a regression opening a review."),
    ]  # fmt: skip
    return f"Technical documentation (EU AI Act Annex IV): {v.model.slug} v{v.number}", sections


def dpia(run: ReportRun, size: int, progress: Progress) -> tuple[str, list[Any]]:
    """A draft DPIA for one model version, in the four parts of GDPR Art. 35(7)."""
    progress(20, "reading the model version and its data")
    f = _model_facts(run, size)
    v = f["version"]
    personal = [d for d in f["datasets"] if d.pii_verdict != "none"]
    sections = [
        Paragraph("DRAFT for the controller's assessment: filled from the registry and the ledger; the judgement "
                  "of necessity, proportionality and residual risk is the controller's."),
        Heading("(a) Systematic description of the processing and its purposes"),
        Table(["dataset version", "purpose", "lawful basis", "data subjects", "personal data", "retention"],
              [[f"{d.dataset.slug} v{d.number}", d.dataset.purpose, d.dataset.lawful_basis,
                ", ".join(d.dataset.data_subject_categories) or "not recorded",
                ", ".join(d.dataset.personal_data_categories) or d.pii_verdict, f"{d.dataset.retention_days} days"]
               for d in f["datasets"]]),
        Heading("(b) Necessity and proportionality"),
        Paragraph(f"{len(personal)} of {len(f['datasets'])} training dataset versions hold personal data found by "
                  "PII scans; each was reviewed by a data steward before use. Consider whether anonymised derived "
                  "versions would serve the purpose."),
        Heading("(c) Risks to the rights and freedoms of data subjects"),
        Table(["risk", "evidence"], [
            ["memorisation and disclosure of training data", f"{len(f['scans'])} security scans, verdicts: "
             + (", ".join(s.verdict or s.state for s in f["scans"]) or "none yet")],
            ["unfair outcomes across groups", f"{len(f['evaluations'])} bias evaluations, verdicts: "
             + (", ".join(e.verdict or e.state for e in f["evaluations"]) or "none yet")],
            ["personal data in prompts and completions", ", ".join(
                f"deployment {d.pk}: guard {d.guard.get('mode')}" for d in f["deployments"]) or "not deployed"],
        ]),
        Heading("(d) Measures envisaged to address the risks"),
        Paragraph("Approvals under separation of duties for every use; data-subject requests honoured through "
                  "lineage (erasure produces new dataset versions and opens retraining reviews); the runtime PII "
                  "guard; inference logs holding hashes, not text; a signed, append-only ledger. "
                  + settings.REPORTS_SECURITY_MEASURES),
    ]  # fmt: skip
    return f"Data protection impact assessment (draft): {v.model.slug} v{v.number}", sections


# --- CCPA request log ----------------------------------------------------------------------------


def ccpa_request_log(run: ReportRun, size: int, progress: Progress) -> tuple[str, list[Any]]:
    """The §7101 record of consumer requests of the period: date, nature and manner of the request,
    date and nature of the response, and the basis for any denial."""
    from audits.privacy.models import DataSubjectRequest

    progress(20, "reading consumer requests")
    start, end = _period(run)
    requests = DataSubjectRequest.objects.filter(regime="ccpa", received_at__gte=start, received_at__lt=end)
    if run.project:
        requests = requests.filter(project=run.project)
    rows = [
        [_day(r.received_at), r.get_kind_display(), r.channel, _day(r.responded_at), r.response_nature or r.state,
         r.denial_basis]
        for r in requests.order_by("received_at", "pk")
    ]  # fmt: skip
    return "CCPA consumer request log (Cal. Code Regs. tit. 11, §7101)", [
        Table(["received", "nature", "manner", "responded", "response", "basis for denial"], rows),
    ]
