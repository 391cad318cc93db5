"""Documents about one model version: its technical documentation in the order of the EU AI Act's
Annex IV, and a draft DPIA in the four parts of GDPR Art. 35(7)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from django.conf import settings

from audits.reports.builders.shared import Progress, day, entries, short
from audits.reports.models import ReportRun
from audits.reports.pdf import BarChart, Heading, KeyValues, Paragraph, Table


def _model_facts(run: ReportRun, size: int) -> dict[str, Any]:
    from registry.models import ModelVersion

    version = ModelVersion.objects.select_related("model__project", "base__model", "created_by").get(
        pk=run.model_version_id
    )
    return model_version_facts(version, size)


def model_version_facts(version: Any, size: int | None = None) -> dict[str, Any]:
    """What the documents say about one model version: the dataset versions it was trained on, its
    security scans and bias evaluations, its deployments and the ledger entries about it. ``size``
    bounds the entries to a checkpoint's tree (a report); ``None`` reads the ledger as it is now
    (the factsheet page, audits/reports/factsheet.py)."""
    from audits.checks.models import BiasEvaluation, SecurityScan
    from serving.models import Deployment

    history = entries(size, subject_type="model_version", subject_id=str(version.pk))
    return {
        "version": version,
        "datasets": list(version.dataset_versions.select_related("dataset").order_by("dataset__slug", "number")),
        "scans": list(SecurityScan.objects.filter(model_version=version).order_by("created_at")),
        "evaluations": list(BiasEvaluation.objects.filter(model_version=version).order_by("created_at")),
        "deployments": list(Deployment.objects.filter(model_version=version).prefetch_related("log_segments")),
        "history": list(history),
    }


def annex_iv(run: ReportRun, size: int, progress: Progress) -> tuple[str, list[Any]]:
    """Technical documentation of one model version, in the order of the EU AI Act's Annex IV."""
    progress(20, "reading the model version, its data, audits and deployments")
    f = _model_facts(run, size)
    v = f["version"]
    scans = [[s.pk, s.profile_name, s.state, s.verdict, "; ".join(map(str, s.reasons)), short(s.weights_digest),
              day(s.finished_at)] for s in f["scans"]]  # fmt: skip
    evaluations = [[e.pk, e.profile_name, e.sensitive_feature, e.state, e.verdict,
                    json.dumps(e.results.get("metrics", e.results), sort_keys=True)[:300], day(e.finished_at)]
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
                   ("registered by", v.created_by.username), ("registered", day(v.created_at)),
                   ("intended purpose", v.model.description or "not recorded")]),
        Heading("2. Development process and data"),
        KeyValues(sorted((str(k), json.dumps(val, sort_keys=True)[:300]) for k, val in (v.lineage or {}).items())
                  or [("lineage", "none recorded (an imported model)")]),
        Table(["dataset version", "records", "SHA-256", "PII verdict", "review", "purpose", "lawful basis"],
              [[f"{d.dataset.slug} v{d.number}", d.record_count, short(d.sha256, 16), d.pii_verdict, d.review,
                d.dataset.purpose, d.dataset.lawful_basis] for d in f["datasets"]]),
        Heading("3. Validation and testing: security scans (garak)"),
        Table(["scan", "profile", "state", "verdict", "reasons", "weights", "finished"], scans),
        Heading("3. Validation and testing: bias evaluations (fairlearn)"),
        Table(["evaluation", "profile", "sensitive feature", "state", "verdict", "metrics", "finished"], evaluations),
        Heading("4. Monitoring, functioning and control: deployments and Art. 12 logs"),
        Table(["deployment", "environment", "state", "runtime", "guard", "started", "stopped"],
              [[d.pk, d.environment, d.state, d.runtime, d.guard.get("mode"), day(d.started_at), day(d.stopped_at)]
               for d in f["deployments"]]),
        Table(["deployment", "log bytes", "requests", "statuses", "guard", "log SHA-256"],
              [[s.deployment_id, f"{s.start_offset}-{s.end_offset}", s.requests, json.dumps(s.summary.get("statuses")),
                json.dumps(s.summary.get("guard")), short(s.sha256, 16)] for s in segments],
              [s.ledger_index if s.ledger_index < size else None for s in segments]),
        Heading("5. Risk management"),
        Paragraph("Risks are controlled by approvals under the policies in force (each decision names its policy-set "
                  "hash in the governance audit report), by security scans and bias evaluations bound to these "
                  "weights, and by the runtime PII guard of each deployment. Findings and waivers are listed above."),
        Heading("6. Changes over the lifecycle"),
        Table(["entry", "action", "by", "at"],
              [[e.index, e.action, e.actor_name, day(e.created_at)] for e in f["history"]],
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
