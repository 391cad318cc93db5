"""Documents about one AI system (``systems.models.AISystem``): its technical documentation in the
nine points of the EU AI Act's Annex IV, for the system as a whole: its purpose and risk class,
the deployments that make it up and, per model version they serve, what the model version's own
Annex IV derives (``model_documents``); how it is overseen and monitored; its incidents and their
Art. 73 clock; how it changed. And the AI systems and incidents of a governance audit.

As in ``model_documents``, every sentence is derived from the rows and ledger entries it
describes; where a point asks for something the service does not hold, the document says so.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from audits.reports.builders.model_documents import (
    DECLARATION,
    STANDARDS,
    _metric_rows,
    _metrics_appropriateness,
    _rescan_days,
    _waivers,
    development_sections,
    model_version_facts,
)
from audits.reports.builders.shared import Progress, day, entries, first_entries, index_of, model_name, waiver_table
from audits.reports.claims import Claims
from audits.reports.models import ReportRun
from audits.reports.pdf import Digest, Heading, KeyValues, Paragraph, Table
from incidents.models import Incident
from incidents.rules import describe
from serving.models import Deployment, DeploymentAlert, InferenceFeedback
from serving.rules import transparency_effective
from systems.models import AISystem, RiskClass
from systems.rules import QUESTIONS, answer_in_words

NOT_HELD = "not held by this service"


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _list(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return ", ".join(str(v) if not isinstance(v, dict) else _json(v) for v in values) or "none"
    return str(values) if values else "none"


def _latest_entries(size: int, subject_type: str, ids: list[object], **filters: Any) -> dict[str, Any]:
    """The last entry (of ``filters``) about each subject id (as a string) inside the tree: one query."""
    found: dict[str, Any] = {}
    wanted = [str(i) for i in ids]
    if wanted:
        for entry in entries(size, subject_type=subject_type, subject_id__in=wanted, **filters).only(
            "index", "body", "subject_id", "action", "created_at", "actor_name"
        ):
            found[entry.subject_id] = entry
    return found


def _payload_has(entry: Any, key: str) -> bool:
    if entry is None:
        return False
    return key in (json.loads(bytes(entry.body)).get("payload") or {})


def _decisions(subject_type: str, ids: list[object], size: int) -> dict[str, list[Any]]:
    """The approval requests about each subject (by id, as a string), with their decisions inside
    the tree: ``{subject id: [(request, [decisions])]}``."""
    from governance.models import ApprovalDecision, ApprovalRequest

    requests = list(
        ApprovalRequest.objects.filter(subject_type=subject_type, subject_id__in=[str(i) for i in ids])
        .select_related("requester")
        .order_by("created_at")
    )
    decided: dict[int, list[Any]] = {}
    for d in ApprovalDecision.objects.filter(request__in=requests).select_related("approver").order_by("ledger_index"):
        if d.ledger_index < size:
            decided.setdefault(d.request_id, []).append(d)
    found: dict[str, list[Any]] = {}
    for r in requests:
        found.setdefault(r.subject_id, []).append((r, decided.get(r.pk, [])))
    return found


def _decided(decisions: list[Any]) -> str:
    return "; ".join(f"{d.approver.username} ({d.role}) {d.decision}d {day(d.created_at)}" for d in decisions) or (
        "no decision yet"
    )


def _claim_decisions(claims: Claims, what: str, decisions: list[Any]) -> int | None:
    for d in decisions:
        if d.role == "break_glass":
            claims.add(f"{what}: decision by {d.approver.username}", d.ledger_index, "action", "approval.break_glass")
        else:
            claims.many(f"{what}: decision by {d.approver.username}", d.ledger_index,
                        {"payload.decision": d.decision, "subject.digest": d.subject_digest})  # fmt: skip
    return decisions[-1].ledger_index if decisions else None


def incident_clock(incident: Any, now: Any) -> str:
    """Where the incident's Art. 73 clock stands, in words (``incidents.rules.describe``)."""
    if incident.serious is None:
        return "not classified yet: the clock applies once it is found serious"
    if incident.serious is False:
        return "not serious: no report due"
    return describe(incident.report_due_at, incident.authority_reported_at, now)


def incident_rows(incidents: list[Any], size: int, claims: Claims, now: Any) -> tuple[list[list[object]], list[Any]]:
    """One row per incident with its classification, its Art. 73 due date and clock, whether and
    when it was reported, its root cause and corrective action; each row cites the incident's last
    ledger entry inside the tree, and the facts the entries hold are claimed against them."""
    ids = [i.pk for i in incidents]
    registered = first_entries(size, "incident.registered", "incident", ids)
    classified = _latest_entries(size, "incident", ids, action="incident.classified")
    reported = _latest_entries(size, "incident", ids, action="incident.reported")
    latest = _latest_entries(size, "incident", ids)
    rows, citations = [], []
    for i in incidents:
        key = str(i.pk)
        claims.add(f"incident {i.reference}: number", index_of(registered.get(key)), "payload.number", i.number)
        if i.serious is not None:
            claims.many(f"incident {i.reference}: classification", index_of(classified.get(key)),
                        {"payload.serious": i.serious, "payload.serious_kind": i.serious_kind})  # fmt: skip
        if i.authority_reported_at is not None:
            claims.add(f"incident {i.reference}: authority's reference", index_of(reported.get(key)),
                       "payload.reference", i.authority_reference)  # fmt: skip
        serious = {None: "not classified yet", False: "not serious"}.get(i.serious) or (
            f"SERIOUS: {i.get_serious_kind_display()}" if i.serious_kind else "SERIOUS"
        )
        report = (f"{day(i.authority_reported_at)}" + (f" ({i.authority_reference})" if i.authority_reference else "")
                  if i.authority_reported_at else "not reported")  # fmt: skip
        rows.append([i.reference, i.title, serious, day(i.occurred_at) or "not known", day(i.aware_at),
                     day(i.report_due_at) or "no clock", report, incident_clock(i, now), i.get_state_display(),
                     i.root_cause or "not established yet", i.corrective_action or "none recorded yet"])  # fmt: skip
        citations.append(index_of(latest.get(key)))
    return rows, citations


INCIDENT_COLUMNS = ["incident", "title", "classification", "occurred", "aware", "report due (Art. 73)",
                    "reported to the authority", "clock", "state", "root cause", "corrective action"]  # fmt: skip


def _marking(deployment: Any) -> str:
    """How the deployment marks its output as AI-generated (Art. 50(2)), the defaults applied."""
    effective = transparency_effective(deployment.transparency)
    said = ", ".join(f"{k}: {v}" for k, v in sorted(effective.items()))
    if not effective:
        return "NOT MARKED: no marking of AI-generated output is configured"
    if effective.get("mark") is False:
        return f"NOT MARKED: marking switched off ({said})"
    return f"marked ({said})"


def _system(run: ReportRun) -> Any:
    return AISystem.objects.select_related("project", "owner", "created_by", "classification__created_by").get(
        pk=run.ai_system_id
    )


def _monitoring(deployments: list[Any], size: int) -> tuple[str, list[list[object]], list[Any]]:
    """The monitoring reviews (alerts) opened on the deployments: each crossing of a bound of the
    monitoring policy (``deployment.monitor``), cited by the entry that opened it."""
    found = list(DeploymentAlert.objects.filter(deployment__in=deployments).order_by("opened_at", "pk"))
    rows = [[a.pk, a.deployment_id, a.metric, f"{a.observed:g}", f"{a.threshold:g}", a.get_state_display(),
             "yes" if a.paused else "no", day(a.opened_at)] for a in found]  # fmt: skip
    citations = [a.ledger_index if a.ledger_index < size else None for a in found]
    paused = sum(1 for a in found if a.paused)
    said = (f"Monitoring: each summarised stretch of a deployment's inference log is checked against the bounds of "
            f"the monitoring policy (deployment.monitor) for its environment; {len(found)} review(s) opened on these "
            f"deployments, {paused} of which paused a deployment.")  # fmt: skip
    return said, rows, citations


ALERT_COLUMNS = ["alert", "deployment", "metric", "observed", "bound", "state", "paused", "opened"]


def system_annex_iv(run: ReportRun, size: int, progress: Progress, claims: Claims, org: Any) -> tuple[str, list[Any]]:
    """Technical documentation of one AI system, in the nine points of the EU AI Act's Annex IV."""
    progress(15, "reading the AI system, its classification and deployments")
    system = _system(run)
    now = timezone.now()
    deployments = list(
        Deployment.objects.filter(ai_system=system)
        .select_related("model_version__model", "previous", "requested_by")
        .prefetch_related("log_segments")
        .order_by("created_at", "pk")
    )
    versions = list({d.model_version_id: d.model_version for d in deployments}.values())
    classifications = list(system.classifications.select_related("created_by").order_by("number"))
    current = system.classification

    # Point 1: the system, its class and the classification that gave it, cited.
    registered = first_entries(size, "ai_system.registered", "ai_system", [system.pk]).get(str(system.pk))
    if registered is not None:
        claims.add(f"AI system {system.slug}: registered", registered.index, "action", "ai_system.registered")
    verdicts = _decisions("ai_system_classification", [c.pk for c in classifications], size)
    last_entry = _latest_entries(size, "ai_system_classification", [c.pk for c in classifications])
    classification_cited: dict[int, int | None] = {}
    for c in classifications:
        decisions = [d for _, ds in verdicts.get(str(c.pk), []) for d in ds]
        cited = _claim_decisions(claims, f"classification {c.number} of {system.slug}", decisions)
        entry = last_entry.get(str(c.pk))
        if _payload_has(entry, "risk_class"):
            claims.add(f"classification {c.number} of {system.slug}: risk class", entry.index, "payload.risk_class",
                       c.risk_class)  # fmt: skip
        classification_cited[c.pk] = cited if cited is not None else index_of(entry)
    if current is None:
        claims.missing.append(f"an approved risk classification of AI system {system.slug}")
    purpose = system.purpose.strip()
    if not purpose:
        claims.missing.append(f"the intended purpose of AI system {system.slug}")
    provider = getattr(org, "controller_name", "") or "MISSING (see the draft notice)"
    answers = (current.answers or {}) if current else {}
    answer_rows = [[q.text, answer_in_words(q, answers[q.id]) if q.id in answers else "not answered"]
                   for q in QUESTIONS]  # fmt: skip
    reasons = [f"{r['article']}: {r['text']}" for r in ((current.reasons or []) if current else [])]
    deployment_requested = first_entries(size, "deployment.requested", "deployment", [d.pk for d in deployments])
    deployment_rows, deployment_citations = [], []
    for d in deployments:
        entry = deployment_requested.get(str(d.pk))
        claims.add(f"deployment {d.name} #{d.pk}: weights", index_of(entry), "payload.weights",
                   d.model_version.weights_digest)  # fmt: skip
        deployment_rows.append([d.pk, d.name, d.environment, model_name(d.model_version), d.get_state_display(),
                                d.runtime, (d.guard or {}).get("mode", "off"), d.device or "not started",
                                day(d.started_at), day(d.stopped_at)])  # fmt: skip
        deployment_citations.append(index_of(entry))
    live = [d for d in deployments if d.state == "live"]
    classified = (f"{system.get_risk_class_display()}, by classification {current.number} approved "
                  f"{day(current.decided_at)}" if current else
                  f"{RiskClass(system.risk_class).label}: no classification approved")  # fmt: skip

    progress(30, "reading each model version's development, audits and approvals")
    facts = {v.pk: model_version_facts(v, size) for v in versions}
    development: list[Any] = []
    for v in versions:
        f = facts[v.pk]
        names = ", ".join(f"{d.name} #{d.pk}" for d in deployments if d.model_version_id == v.pk)
        development += [
            Paragraph(f"Model version {v.model.project.slug}/{v.model.slug} v{v.number} ({v.model.name}), served by "
                      f"deployment {names}; weights:"),
            KeyValues([("weights digest", Digest(v.weights_digest)), ("registered",
                       f"{day(v.created_at)} by {v.created_by.username}")]),
            *development_sections(f, size, claims),
        ]  # fmt: skip
    evaluations = [e for v in versions for e in facts[v.pk]["evaluations"]]
    scans = [s for v in versions for s in facts[v.pk]["scans"]]
    waivers = [w for v in versions for w in _waivers(facts[v.pk])]

    progress(50, "reading oversight, monitoring, feedback and incidents")
    approvals = _decisions("deployment", [d.pk for d in deployments], size)
    oversight_rows, oversight_citations = [], []
    for d in deployments:
        for request, decisions in approvals.get(str(d.pk), []):
            cited = _claim_decisions(claims, f"{request.action} of deployment {d.name} #{d.pk}", decisions)
            oversight_rows.append([f"{d.name} #{d.pk}", request.action, request.requester.username,
                                   request.get_state_display(), _decided(decisions),
                                   Digest(request.policy_hash)])  # fmt: skip
            oversight_citations.append(cited)
    monitoring_said, alert_rows, alert_citations = _monitoring(deployments, size)
    transparency_rows = [[f"{d.name} #{d.pk}", _marking(d),
                          "kept" if getattr(d, "keep_transcripts", False) else "not kept (hashes only)"]
                         for d in deployments]  # fmt: skip
    feedback = Counter()
    ratings: dict[int, list[int]] = {}
    for deployment_id, rating, category in InferenceFeedback.objects.filter(deployment__in=deployments).values_list(
        "deployment_id", "rating", "category"
    ):
        feedback[(deployment_id, category)] += 1
        ratings.setdefault(deployment_id, []).append(rating)
    feedback_rows = [[f"{d.name} #{d.pk}", len(ratings.get(d.pk, [])),
                      f"{sum(ratings[d.pk]) / len(ratings[d.pk]):.2f}" if ratings.get(d.pk) else "no ratings",
                      ", ".join(f"{c} ({n})" for (i, c), n in sorted(feedback.items()) if i == d.pk) or "none"]
                     for d in deployments]  # fmt: skip
    segments = [s for d in deployments for s in d.log_segments.all()]
    incidents = list(Incident.objects.filter(ai_systems=system).order_by("aware_at", "pk").distinct())
    more = Incident.objects.filter(deployments__in=deployments).exclude(pk__in=[i.pk for i in incidents])
    incidents += list(more.order_by("aware_at", "pk").distinct())
    serious = [i for i in incidents if i.serious]
    overdue = [i for i in serious if i.authority_reported_at is None and i.report_due_at and i.report_due_at < now]
    incidents_said = (f"Incidents concerning this system or its deployments: {len(incidents)}, of which "
                      f"{len(serious)} serious (Art. 3(49)); {len(overdue)} serious incident(s) past their "
                      "Art. 73 deadline unreported.")  # fmt: skip
    rows, citations = incident_rows(incidents, size, claims, now)

    progress(65, "reading the system's changes")
    replaced = [d for d in deployments if d.previous_id is not None]
    history = list(entries(size, subject_type="ai_system", subject_id=str(system.pk)))
    history += list(entries(size, subject_type="ai_system_classification",
                            subject_id__in=[str(c.pk) for c in classifications]))  # fmt: skip
    history.sort(key=lambda e: e.index)
    superseded = [c for c in classifications if c.state == "approved" and current is not None and c.pk != current.pk]

    deployers = system.deployers or []
    sections = [
        Heading("1. General description of the AI system"),
        KeyValues([("(a) intended purpose", purpose or "NOT RECORDED: the system's purpose is empty"),
                   ("(a) AI system", f"{system.project.slug}/{system.slug} ({system.name})"),
                   ("(a) description", system.description.strip() or "none given"),
                   ("(a) provider", provider), ("(a) owner", system.owner.username),
                   ("(a) deployers", _list(deployers) if deployers else "none recorded"),
                   ("(a) registered", f"{day(system.created_at)} by {system.created_by.username}"),
                   ("(a) risk class", classified),
                   ("(a) versions", f"{len(deployments)} deployments ({len(live)} live) of {len(versions)} model "
                    "versions, in the table below"),
                   ("(b) interaction with other systems", "served over HTTP by the project's model server "
                    "(OpenAI-style completions) behind a runtime PII guard; see point 3"),
                   ("(d) forms in which it is put into service",
                    ", ".join(sorted({f"{d.runtime} in {d.environment}" for d in deployments})) or "not deployed"),
                   ("(e) hardware", ", ".join(sorted({d.device for d in deployments if d.device}))
                    or "no deployment has started"),
                   ("(g) user interface for deployers", "the model server's HTTP API; no end-user interface is "
                    "provided by this service"),
                   ("(h) instructions for use", f"{NOT_HELD}: the provider attaches them")]),
        Paragraph(f"Risk classification {current.number} (approved {day(current.decided_at)}), its answers to the "
                  "classification questionnaire:" if current else
                  "No risk classification of this system has been approved: its class is not established."),
        Table(["question", "answer"], answer_rows),
        Paragraph("Why the answers give this class: " + ("; ".join(reasons) if reasons else "no reasons recorded")
                  + "." if current else "Classifications on record are listed in point 6."),
        Table(["classification", "risk class", "state", "drafted by", "decided", "approvals"],
              [[c.number, c.get_risk_class_display(), c.get_state_display(), c.created_by.username,
                day(c.decided_at) or "not decided",
                _decided([d for _, ds in verdicts.get(str(c.pk), []) for d in ds])] for c in classifications],
              [classification_cited.get(c.pk) for c in classifications]),
        Paragraph(f"Deployments that make up the system: {len(deployments)}."),
        Table(["deployment", "name", "environment", "model version", "state", "runtime", "guard", "device",
               "started", "stopped"], deployment_rows, deployment_citations),
        Heading("2. Elements of the AI system and its development"),
        Paragraph(f"Per model version the system serves ({len(versions)}), as its own Annex IV documents it."
                  if versions else "The system serves no model version yet: no deployment names it."),
        *development,
        Heading("3. Monitoring, functioning and control"),
        Paragraph("Human oversight measures the owner describes: "
                  + (getattr(system, "human_oversight", "").strip() or "none described")
                  + "."),
        Paragraph("(e) Human oversight: each deployment starts only once the approvals its environment's policy "
                  f"asks for are given to its digest, under separation of duties; {len(oversight_rows)} approval "
                  "requests govern these deployments:"),
        Table(["deployment", "action", "requested by", "state", "decisions", "policy set"], oversight_rows,
              oversight_citations),
        Paragraph(monitoring_said),
        Table(ALERT_COLUMNS, alert_rows, alert_citations),
        Paragraph("Fairness across groups, per metric, of the model versions' bias evaluations:"),
        Table(["evaluation", "sensitive feature", "metric", "value", "confidence interval", "bound", "verdict"],
              _metric_rows(evaluations)),
        Heading("4. Appropriateness of the performance metrics"),
        *[Paragraph(f"{model_name(v)}: {_metrics_appropriateness(facts[v.pk])}") for v in versions],
        *([] if versions else [Paragraph("No model version: no metric is measured.")]),
        Heading("5. Risk management system (Art. 9)"),
        Paragraph(f"Risks are controlled by the system's classification ({system.get_risk_class_display()}), by "
                  f"approvals under the policies in force, by {len(scans)} security scans and {len(evaluations)} "
                  f"bias evaluations of its model versions and by the runtime PII guard of each deployment. "
                  f"Waivers asked for on those findings ({len(waivers)}):"),
        waiver_table(waivers, size, claims),
        Paragraph(incidents_said),
        Table(INCIDENT_COLUMNS, rows, citations),
        Heading("6. Changes over the lifecycle"),
        Paragraph(f"Deployments replaced by a newer one: {len(replaced)}; classifications superseded by a later "
                  f"approved one: {len(superseded)}."),
        Table(["deployment", "replaced", "state of the replaced one"],
              [[f"{d.name} #{d.pk}", f"{d.previous.name} #{d.previous_id}", d.previous.get_state_display()]
               for d in replaced]),
        Table(["classification", "risk class", "state", "superseded by"],
              [[c.number, c.get_risk_class_display(), c.get_state_display(),
                f"classification {current.number}" if c in superseded else ""] for c in classifications]),
        Table(["action", "subject", "by", "at"],
              [[e.action, f"{e.subject_type} {e.subject_id}", e.actor_name, day(e.created_at)] for e in history],
              [e.index for e in history]),
        Heading("7. Harmonised standards applied"),
        Paragraph(STANDARDS),
        Heading("8. EU declaration of conformity (Art. 47)"),
        Paragraph(DECLARATION),
        Heading("9. Post-market monitoring (Art. 72)"),
        Paragraph(f"Inference logs are summarised into the ledger every {settings.SERVING_LOG_SUMMARY_EVERY_S} s "
                  f"({len(segments)} summaries so far for this system's deployments); users rate outputs through "
                  f"the feedback endpoint; baseline audits are re-run: {_rescan_days()}. {monitoring_said} "
                  f"{incidents_said}"),
        Table(["deployment", "ratings", "mean rating (1-5)", "categories"], feedback_rows),
        Paragraph("Marking of AI-generated output (Art. 50(2)) and transcripts, per deployment:"),
        Table(["deployment", "marking", "transcripts"], transparency_rows),
        Table(["deployment", "log bytes", "requests", "statuses", "guard", "log SHA-256"],
              [[s.deployment_id, f"{s.start_offset}-{s.end_offset}", s.requests, _json(s.summary.get("statuses")),
                _json(s.summary.get("guard")), Digest(s.sha256)] for s in segments],
              [s.ledger_index if s.ledger_index < size else None for s in segments]),
    ]  # fmt: skip
    return f"Technical documentation (EU AI Act Annex IV): AI system {system.project.slug}/{system.slug}", sections


# --- The governance audit's sections (builders/approvals.py) ------------------------------------


def systems_sections(run: ReportRun, size: int, claims: Claims) -> list[Any]:
    """The AI systems in the report's scope with their risk class and the classification that
    gave it (cited by its approving decision), their deployments and incidents."""
    systems = AISystem.objects.select_related("project", "owner", "classification").annotate(
        deployed=Count("deployments", distinct=True)
    )
    if run.project:
        systems = systems.filter(project=run.project)
    systems = list(systems.order_by("project__slug", "slug"))
    current = [s.classification for s in systems if s.classification is not None]
    verdicts = _decisions("ai_system_classification", [c.pk for c in current], size)
    counts: Counter[int] = Counter()
    for system_id in Incident.objects.filter(ai_systems__in=systems).values_list("ai_systems", flat=True):
        counts[system_id] += 1
    rows, citations = [], []
    for s in systems:
        c = s.classification
        decisions = [d for _, ds in verdicts.get(str(c.pk), []) for d in ds] if c else []
        citations.append(_claim_decisions(claims, f"classification {c.number} of {s.slug}", decisions) if c else None)
        rows.append([f"{s.project.slug}/{s.slug}", s.name, s.owner.username, s.get_risk_class_display(),
                     f"{c.number}, approved {day(c.decided_at)}" if c else "none approved", s.deployed,
                     counts[s.pk]])  # fmt: skip
    classes = Counter(s.get_risk_class_display() for s in systems)
    return [
        Heading("AI systems and their risk class"),
        Paragraph(f"{len(systems)} AI systems registered: "
                  + (", ".join(f"{n} {label}" for label, n in sorted(classes.items())) or "none") + "."),
        Table(["AI system", "name", "owner", "risk class", "classification", "deployments", "incidents"], rows,
              citations),
    ]  # fmt: skip


def period_incidents(run: ReportRun, size: int, claims: Claims, start: Any, end: Any, now: Any) -> list[Any]:
    """Incidents the provider became aware of, that fell due or were reported in the period, with
    their Art. 73 clock: due, reported (in time or late), overdue."""
    found = Incident.objects.filter(
        Q(aware_at__gte=start, aware_at__lt=end)
        | Q(report_due_at__gte=start, report_due_at__lt=end)
        | Q(authority_reported_at__gte=start, authority_reported_at__lt=end)
    ).select_related("project")
    if run.project:
        found = found.filter(project=run.project)
    incidents = list(found.order_by("aware_at", "pk"))
    rows, citations = incident_rows(incidents, size, claims, now)
    serious = [i for i in incidents if i.serious]
    late = [
        i for i in serious if i.authority_reported_at and i.report_due_at and i.authority_reported_at > i.report_due_at
    ]
    overdue = [i for i in serious if i.authority_reported_at is None and i.report_due_at and i.report_due_at < now]
    return [
        Heading("Incidents in the period"),
        Paragraph(f"{len(incidents)} incidents; {len(serious)} serious; reported late: {len(late)}; past their "
                  f"Art. 73 deadline unreported now: {len(overdue)}."),
        Table(["project", *INCIDENT_COLUMNS[:-2]], [[i.project.slug, *row[:-2]] for i, row in zip(incidents, rows,
              strict=True)], citations),
    ]  # fmt: skip


def overdue_incident_rows(run: ReportRun, now: Any) -> list[list[object]]:
    """Serious incidents whose Art. 73 report is past due and not made, for the overdue items."""
    found = Incident.objects.filter(serious=True, authority_reported_at__isnull=True, report_due_at__lt=now)
    if run.project:
        found = found.filter(project=run.project)
    return [["incident (Art. 73 report)", i.reference, i.title, day(i.report_due_at)] for i in found.order_by("pk")]
