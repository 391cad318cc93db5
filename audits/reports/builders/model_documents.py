"""Documents about one model version: its technical documentation in the nine points of the EU AI
Act's Annex IV, and a DPIA in the four parts of GDPR Art. 35(7).

Every sentence is derived from the state it describes: a count, a verdict, a list read from the
registry and the ledger, never a stock assurance. Where a point asks for something this service
does not hold, the document says so and why, instead of leaving it out.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from django.conf import settings

from audits.reports.builders.shared import (
    Progress,
    day,
    entries,
    first_entries,
    index_of,
    model_name,
    waiver_table,
)
from audits.reports.claims import Claims
from audits.reports.models import ReportRun
from audits.reports.pdf import BarChart, Digest, Heading, KeyValues, Paragraph, Table

SPECIAL_CATEGORY_HINTS = ("health", "ethnic", "racial", "religio", "political", "union", "genetic", "biometric",
                          "sexual", "sex life")  # fmt: skip


def _model_facts(run: ReportRun, size: int) -> dict[str, Any]:
    from registry.models import ModelVersion

    version = ModelVersion.objects.select_related("model__project", "model__owner", "base__model", "created_by").get(
        pk=run.model_version_id
    )
    return model_version_facts(version, size)


def _ancestry(version: Any) -> list[Any]:
    """The base models ``version`` was built on, nearest first."""
    chain, seen, current = [], {version.pk}, version.base
    while current is not None and current.pk not in seen:
        chain.append(current)
        seen.add(current.pk)
        current = current.base
    return chain


def model_version_facts(version: Any, size: int | None = None) -> dict[str, Any]:
    """What the documents say about one model version: the dataset versions it was trained on and
    those its base models were trained on, its security scans and bias evaluations, its
    deployments, the fine-tune run that made it and the ledger entries about it. ``size`` bounds
    the entries to a checkpoint's tree (a report); ``None`` reads the ledger as it is now (the
    factsheet page, audits/reports/factsheet.py)."""
    from audits.checks.models import BiasEvaluation, SecurityScan
    from registry.models import DatasetVersion
    from serving.models import Deployment
    from training.models import FineTuneRun

    ancestors = _ancestry(version)
    inherited = []
    for base in ancestors:
        for dv in base.dataset_versions.select_related("dataset__project").order_by("dataset__slug", "number"):
            inherited.append((dv, base))
    run_pk = (version.lineage or {}).get("fine_tune_run")
    run = FineTuneRun.objects.filter(pk=run_pk).select_related("base__model").first() if run_pk else None
    history = entries(size, subject_type="model_version", subject_id=str(version.pk))
    return {
        "version": version,
        "datasets": list(
            DatasetVersion.objects.filter(model_versions=version)
            .select_related("dataset__project")
            .order_by("dataset__slug", "number")
        ),
        "inherited": inherited,
        "ancestors": ancestors,
        "run": run,
        "scans": list(SecurityScan.objects.filter(model_version=version).order_by("created_at")),
        "evaluations": list(BiasEvaluation.objects.filter(model_version=version).order_by("created_at")),
        "deployments": list(Deployment.objects.filter(model_version=version).prefetch_related("log_segments")),
        "history": list(history),
    }


def _architecture(version: Any) -> list[tuple[str, object]]:
    """The architecture as the weights' own config.json states it (Hugging Face layout)."""
    from common import artifacts

    digest = (version.files or {}).get("config.json")
    if not digest:
        return [("architecture", "not stated: the weights hold no config.json (an imported model of another layout)")]
    try:
        config = json.loads(artifacts.open_blob(digest).read_bytes())
    except (OSError, ValueError) as exc:
        return [("architecture", f"config.json unreadable: {exc}")]
    keys = ("model_type", "architectures", "num_hidden_layers", "n_layer", "hidden_size", "n_embd",
            "num_attention_heads", "n_head", "vocab_size", "max_position_embeddings", "n_positions",
            "torch_dtype")  # fmt: skip
    return [(f"config.json {k}", json.dumps(config[k]) if isinstance(config[k], list) else config[k])
            for k in keys if k in config] or [("architecture", "config.json names no architecture")]  # fmt: skip


HEADLINE_METRICS = ("demographic_parity_difference", "equalized_odds_difference")


def _interval(results: dict[str, Any], name: str) -> str:
    metric = (results.get("metrics") or {}).get(name)
    if isinstance(metric, dict) and metric.get("ci_low") is not None:
        level = metric.get("level", 0.95)
        return f"[{metric['ci_low']}, {metric['ci_high']}] ({level:.0%}, {metric.get('resamples', '?')} resamples)"
    return "not computed"


def _metric_rows(evaluations: list[Any]) -> list[list[object]]:
    """One row per fairness metric of each evaluation, in full: the value, its confidence
    interval where the evaluation computed one, and the bound the profile sets."""
    rows: list[list[object]] = []
    for e in evaluations:
        results = e.results or {}
        bounds = (e.profile or {}).get("bounds", {})
        names = [n for n in HEADLINE_METRICS if n in results or n in bounds]
        names += sorted(n for n in (results.get("metrics") or {}) if n not in names)
        if not names:
            rows.append([e.pk, e.sensitive_feature, "none recorded", "", "", "", e.verdict or e.state])
        for name in names:
            metric = (results.get("metrics") or {}).get(name)
            value = metric.get("value") if isinstance(metric, dict) else results.get(name)
            bound = bounds.get(name)
            rows.append([e.pk, e.sensitive_feature, name, "not measured" if value is None else value,
                         _interval(results, name), f"at most {bound}" if bound is not None else "no bound",
                         e.verdict or e.state])  # fmt: skip
    return rows


def _group_rows(evaluations: list[Any]) -> list[list[object]]:
    rows: list[list[object]] = []
    for e in evaluations:
        results = e.results or {}
        minimum = results.get("min_group_size", (e.profile or {}).get("min_group_size"))
        sizes = results.get("group_sizes") or {g: {"records": n} for g, n in (results.get("counts") or {}).items()}
        for group, facts in sorted(sizes.items()):
            count = facts.get("records") if isinstance(facts, dict) else facts
            small = facts.get("too_small") if isinstance(facts, dict) and "too_small" in facts else (
                isinstance(count, int) and isinstance(minimum, int) and count < minimum)  # fmt: skip
            verdict = "NO: too small to conclude" if small else "yes" if minimum is not None else "no minimum set"
            rows.append([e.pk, group, count, minimum if minimum is not None else "not set", verdict])
    return rows


def _legal_basis_rows(evaluations: list[Any]) -> list[list[object]]:
    """Special-category data processed for bias detection (EU AI Act Art. 10(5)): the category,
    the legal basis recorded and the safeguards confirmed, per evaluation."""
    rows: list[list[object]] = []
    for e in evaluations:
        if not getattr(e, "special_category", ""):
            continue
        rows.append([e.pk, e.sensitive_feature, e.get_special_category_display(), e.get_legal_basis_display(),
                     ", ".join(f"({s})" for s in e.safeguards_confirmed or []) or "none confirmed"])  # fmt: skip
    return rows


def _owasp(scan: Any) -> str:
    from audits.checks.owasp import probe_categories

    categories: Counter[str] = Counter()
    for finding in scan.findings or []:
        if not isinstance(finding, dict):
            continue
        for category in finding.get("owasp") or probe_categories(str(finding.get("probe", ""))):
            categories[category] += 1
    return ", ".join(f"{k} ({n})" for k, n in sorted(categories.items())) or "no findings"


def _rescan_days() -> str:
    from audits.checks.profiles import profiles

    parts = []
    for kind, label in (("security", "security scans"), ("bias", "bias evaluations")):
        for name, profile in sorted(profiles(kind).items()):
            days = profile.get("rescan_every_days")
            parts.append(
                f"{label} of profile {name}: " + (f"every {days} days" if days else "not re-run on a schedule")
            )
    return "; ".join(parts) or "no audit profiles are configured"


def _waivers(f: dict[str, Any]) -> list[Any]:
    from governance.models import ApprovalRequest

    subjects = [("security_scan", str(s.pk)) for s in f["scans"]] + [
        ("bias_evaluation", str(e.pk)) for e in f["evaluations"]
    ]
    found = []
    for subject_type, subject_id in subjects:
        found += list(ApprovalRequest.objects.filter(subject_type=subject_type, subject_id=subject_id,
                                                     action__endswith=".waive").order_by("created_at"))  # fmt: skip
    return found


def _datasets_table(f: dict[str, Any], size: int, claims: Claims) -> Table:
    registered = first_entries(size, "dataset_version.registered", "dataset_version",
                               [d.pk for d in f["datasets"]] + [d.pk for d, _ in f["inherited"]])  # fmt: skip
    rows, citations = [], []
    for dv, how in [(d, "trained on it") for d in f["datasets"]] + [
        (d, f"through base model {model_name(b)}") for d, b in f["inherited"]
    ]:
        entry = registered.get(str(dv.pk))
        claims.add(f"{dv.dataset.slug} v{dv.number}: content digest", index_of(entry), "payload.content_sha256",
                   dv.sha256)  # fmt: skip
        state = f"ERASED {day(dv.erased_at)}" if dv.erased_at else dv.review
        rows.append([f"{dv.dataset.project.slug}/{dv.dataset.slug} v{dv.number}", how, dv.record_count,
                     Digest(dv.sha256), dv.pii_verdict, state, dv.dataset.purpose,
                     dv.dataset.lawful_basis])  # fmt: skip
        citations.append(index_of(entry))
    return Table(["dataset version", "how the model holds it", "records", "SHA-256", "PII verdict", "review",
                  "purpose", "lawful basis"], rows, citations)  # fmt: skip


def scan_rows(f: dict[str, Any]) -> list[list[object]]:
    """One row per security scan of the model version: profile, verdict, reasons, OWASP categories."""
    return [[s.pk, s.profile_name, s.state, s.verdict or "none yet", "; ".join(map(str, s.reasons)) or "none",
             _owasp(s), Digest(s.weights_digest), day(s.finished_at)] for s in f["scans"]]  # fmt: skip


SCAN_COLUMNS = ["scan", "profile", "state", "verdict", "reasons", "OWASP LLM 2025", "weights", "finished"]


def development_method(f: dict[str, Any], size: int, claims: Claims) -> list[tuple[str, object]]:
    """How the model version was made (Annex IV 2(a)-(c)): the fine-tune run that trained it, or
    the source it was registered from; claims its weights digest, its base and the run's
    hyperparameters against their entries."""
    v, ft = f["version"], f["run"]
    registration = first_entries(size, "model_version.registered", "model_version", [v.pk]).get(str(v.pk))
    claims.add(f"{model_name(v)}: weights digest", index_of(registration), "subject.digest", v.weights_digest)
    if v.base is not None:
        claims.add(f"{model_name(v)}: base model", index_of(registration), "payload.base", v.base.weights_digest)
    run_entry = first_entries(size, "fine_tune_run.requested", "fine_tune_run", [ft.pk]).get(str(ft.pk)) if ft else None
    if ft is None:
        return [("method", f"not trained by this service: registered from {v.source}; the provider's own "
                 "documentation of its training applies")]  # fmt: skip
    claims.add(f"fine-tune run {ft.pk}: hyperparameters", index_of(run_entry), "payload.hyperparameters",
               ft.hyperparameters)  # fmt: skip
    return [("method", f"supervised fine-tune (causal language modelling) of {model_name(ft.base)} by fine-tune "
             f"run {ft.pk} ({ft.name}), trained on the record field {ft.text_field!r}"),
            ("hyperparameters", json.dumps(ft.hyperparameters, sort_keys=True)),
            ("training code version", ft.code_version or "not recorded"),
            ("computational resources", f"{ft.device or 'device not recorded'}"
             + (f", {ft.gpu_count} x {ft.gpu_type}" if ft.gpu_count else ", CPU only")
             + f", estimated {ft.gpu_hours_estimate} GPU hours"),
            ("training metrics",
             json.dumps(ft.metrics, sort_keys=True) if ft.metrics else "none recorded")]  # fmt: skip


def development_sections(f: dict[str, Any], size: int, claims: Claims) -> list[Any]:
    """Annex IV point 2 of one model version, as the system document repeats it per version: the
    lineage and method, the architecture, the training data and the security scans."""
    lineage = ", ".join(model_name(b) for b in f["ancestors"]) or "none: registered from its source"
    return [
        KeyValues([("(a) base models (nearest first)", lineage), *development_method(f, size, claims)]),
        KeyValues(_architecture(f["version"])),
        Paragraph("(d) Training data: the dataset versions this model holds, directly or through its base models."),
        _datasets_table(f, size, claims),
        Paragraph("(g) Validation and testing: security scans (garak probes by OWASP Top 10 for LLM Applications "
                  f"2025 category): {len(f['scans'])}; bias evaluations: {len(f['evaluations'])} (point 3)."),
        Table(SCAN_COLUMNS, scan_rows(f)),
    ]  # fmt: skip


STANDARDS = ("None applied: this document does not claim conformity with a harmonised standard published in the "
             "Official Journal under Regulation (EU) 2024/1689. The technical specifications this service "
             "applies to its own evidence: RFC 9162 (Merkle tree of the ledger), C2SP signed notes and "
             "tlog-checkpoint (its checkpoints), ETSI EN 319 142 PAdES (this document's signature), RFC 3161 "
             "(signature timestamps, where configured), OWASP Top 10 for LLM Applications 2025 (scan "
             "categories).")  # fmt: skip
DECLARATION = ("Not held by this service: the provider draws up and signs the declaration after the conformity "
               "assessment; this document is part of the technical documentation that assessment reads.")  # fmt: skip


def annex_iv(run: ReportRun, size: int, progress: Progress, claims: Claims, org: Any) -> tuple[str, list[Any]]:
    """Technical documentation of one model version, in the nine points of the EU AI Act's Annex IV."""
    progress(20, "reading the model version, its data, audits and deployments")
    f = _model_facts(run, size)
    v, ft = f["version"], f["run"]
    scans = scan_rows(f)
    segments = [s for d in f["deployments"] for s in d.log_segments.all()]
    verdicts = Counter((kind, a.verdict or a.state) for kind, audits in (("security scans", f["scans"]),
                       ("bias evaluations", f["evaluations"])) for a in audits)  # fmt: skip
    outcomes = sorted({outcome for _, outcome in verdicts}) or ["none yet"]
    waivers = _waivers(f)
    legal_bases = _legal_basis_rows(f["evaluations"])
    lineage = ", ".join(model_name(b) for b in f["ancestors"]) or "none: registered from its source"
    method = development_method(f, size, claims)
    deployments = [[d.pk, d.name, d.environment, d.state, d.runtime, d.device or "not started",
                    (d.guard or {}).get("mode", "off"), day(d.started_at), day(d.stopped_at)]
                   for d in f["deployments"]]  # fmt: skip
    provider = getattr(org, "controller_name", "") or "MISSING (see the draft notice)"
    purpose = v.model.description.strip()
    if not purpose:
        claims.missing.append(f"the intended purpose of {v.model.slug} (the model's description)")
    chart = [BarChart("Security scan and bias evaluation results", outcomes,
                      {k: [float(verdicts[(k, o)]) for o in outcomes] for k in ("security scans", "bias evaluations")})
             ] if verdicts else []  # fmt: skip
    sections = [
        Heading("1. General description of the AI system"),
        KeyValues([("(a) intended purpose", purpose or "NOT RECORDED: the model's description is empty"),
                   ("(a) provider", provider),
                   ("(a) model and version",
                    f"{v.model.project.slug}/{v.model.slug} ({v.model.name}) version {v.number}"),
                   ("(a) weights digest", Digest(v.weights_digest)), ("size", f"{v.size_bytes} bytes"),
                   ("(a) registered", f"{day(v.created_at)} by {v.created_by.username}"),
                   ("(b) interaction with other systems", "served over HTTP by the project's model server "
                    "(OpenAI-style completions) behind a runtime PII guard; see point 3 for each deployment"),
                   ("(c) software", f"weights in {len(v.files or {})} files; trained with training code "
                    f"{ft.code_version if ft and ft.code_version else 'not recorded'}"),
                   ("(d) forms in which it is made available",
                    ", ".join(sorted({f'{d.runtime} in {d.environment}' for d in f['deployments']})) or "not deployed"),
                   ("(e) hardware", ", ".join(sorted({d.device for d in f["deployments"] if d.device})) or
                    "no deployment has started"),
                   ("(f) photographs or illustrations", "not applicable: a text model with no physical product"),
                   ("(g) user interface for deployers", "the model server's HTTP API; no end-user interface is "
                    "provided by this service"),
                   ("(h) instructions for use", "not held by this service: the provider attaches them")]),
        Heading("2. Elements of the AI system and its development"),
        KeyValues([("(a) base models (nearest first)", lineage), *method]),
        KeyValues(_architecture(v)),
        Paragraph("(d) Training data: the dataset versions this model holds, directly or through its base models."),
        _datasets_table(f, size, claims),
        Paragraph("(e) Human oversight: every use of this model (deployment, scan, evaluation) and every dataset "
                  "version used to train it needs approvals under the policies in force, with separation of duties; "
                  f"{len(f['history'])} ledger entries concern this model version (point 6)."),
        Paragraph("(g) Validation and testing: the security scans and bias evaluations below. (h) Cybersecurity: "
                  "garak probes grouped by OWASP Top 10 for LLM Applications (2025) category."),
        *chart,
        Table(SCAN_COLUMNS, scans),
        Heading("3. Monitoring, functioning and control"),
        Paragraph("Fairness across groups, per metric, with the confidence interval the evaluation computed and the "
                  "bound its profile sets:"),
        Table(["evaluation", "sensitive feature", "metric", "value", "confidence interval", "bound", "verdict"],
              _metric_rows(f["evaluations"])),
        Table(["evaluation", "group", "records", "minimum group size", "enough to conclude"],
              _group_rows(f["evaluations"])),
        Paragraph("Special categories of personal data processed for bias detection (EU AI Act Art. 10(5)), "
                  + ("with the legal basis and the safeguards (a)-(f) confirmed:" if legal_bases
                     else "none: no evaluation of this model version used a feature marked as special-category "
                     "data.")),
        Table(["evaluation", "sensitive feature", "special category (GDPR Art. 9)", "legal basis", "safeguards"],
              legal_bases),
        Paragraph(f"Deployments of this model version: {len(deployments)}."),
        Table(["deployment", "name", "environment", "state", "runtime", "device", "guard", "started", "stopped"],
              deployments),
        Heading("4. Appropriateness of the performance metrics"),
        Paragraph(_metrics_appropriateness(f)),
        Heading("5. Risk management system (Art. 9)"),
        Paragraph(f"Risks are controlled by approvals under the policies in force, by "
                  f"{_count(f['scans'], 'security scan')} and {_count(f['evaluations'], 'bias evaluation')} bound "
                  "to these weights, and by the runtime "
                  f"PII guard of each deployment. Waivers asked for on these findings ({len(waivers)}), each in the "
                  "state its decisions left it:"),
        waiver_table(waivers, size, claims),
        Heading("6. Changes over the lifecycle"),
        Table(["action", "by", "at"], [[e.action, e.actor_name, day(e.created_at)] for e in f["history"]],
              [e.index for e in f["history"]]),
        Heading("7. Harmonised standards applied"),
        Paragraph(STANDARDS),
        Heading("8. EU declaration of conformity (Art. 47)"),
        Paragraph(DECLARATION),
        Heading("9. Post-market monitoring (Art. 72)"),
        Paragraph(f"Inference logs are summarised into the ledger every {settings.SERVING_LOG_SUMMARY_EVERY_S} s "
                  f"({len(segments)} summaries so far); latency, error rates, prompt-length drift (PSI against the "
                  "first window) and guard hits are watched per deployment; users rate outputs through the feedback "
                  f"endpoint; baseline audits are re-run: {_rescan_days()}; a regression opens a review."),
        Table(["deployment", "log bytes", "requests", "statuses", "guard", "log SHA-256"],
              [[s.deployment_id, f"{s.start_offset}-{s.end_offset}", s.requests, json.dumps(s.summary.get("statuses")),
                json.dumps(s.summary.get("guard")), Digest(s.sha256)] for s in segments],
              [s.ledger_index if s.ledger_index < size else None for s in segments]),
    ]  # fmt: skip
    return f"Technical documentation (EU AI Act Annex IV): {v.model.slug} v{v.number}", sections


def _metrics_appropriateness(f: dict[str, Any]) -> str:
    if not f["evaluations"]:
        return ("No performance or fairness metric has been measured for this model version: appropriateness cannot "
                "be assessed until a bias evaluation runs.")  # fmt: skip
    parts = []
    for e in f["evaluations"]:
        bounds = (e.profile or {}).get("bounds", {})
        parts.append(f"evaluation {e.pk} (profile {e.profile_name}) measures "
                     + (", ".join(f"{k} against a bound of {b}" for k, b in sorted(bounds.items())) or "without bounds")
                     + f" across the groups of {e.sensitive_feature!r} in dataset version "
                     f"{e.dataset_version_id}")  # fmt: skip
    return ("Fairness is measured as the gap between groups (demographic parity and equalized odds differences: 0 "
            "is parity), the metrics the EU AI Act's Art. 10(2)(f) bias examination asks about for a model whose "
            "answers are classified into labels; " + "; ".join(parts) + ". A group smaller than its profile's minimum "
            "size is reported as too small to conclude, and confidence intervals show the sampling "
            "uncertainty.")  # fmt: skip


def _count(items: list[Any], noun: str) -> str:
    return f"{len(items)} {noun}" + ("" if len(items) == 1 else "s")


def _level(score: int) -> str:
    return ("low", "medium", "high")[max(0, min(2, score))]


def _risks(f: dict[str, Any]) -> list[list[object]]:
    """Each risk with likelihood and severity derived from the evidence, and the evidence in words."""
    data = f["datasets"] + [d for d, _ in f["inherited"]]
    personal = [d for d in data if d.pii_verdict not in ("none", "")]
    special = sorted({c for d in data for c in d.dataset.personal_data_categories
                      if any(h in c.lower() for h in SPECIAL_CATEGORY_HINTS)})  # fmt: skip
    unreviewed = [d for d in personal if d.review not in ("approved", "anonymised")]
    scans_failed = [s for s in f["scans"] if s.verdict == "failed"]
    evals_failed = [e for e in f["evaluations"] if e.verdict == "failed"]
    unguarded = [d for d in f["deployments"] if (d.guard or {}).get("mode", "off") == "off"]
    severity_personal = 2 if special else 1 if personal else 0
    return [
        ["memorisation and disclosure of personal data from training data",
         "not likely: no personal data found" if not personal else _level(1 + bool(unreviewed) + bool(scans_failed)),
         _level(severity_personal),
         f"{len(personal)} of {len(data)} training dataset versions hold personal data; {len(unreviewed)} of those "
         f"are not approved by a data steward; special categories: {', '.join(special) or 'none declared'}; "
         f"{len(scans_failed)} of {len(f['scans'])} security scans failed"],
        ["unfair outcomes across groups",
         "unknown: no bias evaluation" if not f["evaluations"] else _level(2 if evals_failed else 0),
         _level(1), f"{len(f['evaluations'])} bias evaluations, {len(evals_failed)} failed"],
        ["personal data in prompts and completions",
         "not deployed" if not f["deployments"] else _level(2 if unguarded else 0), _level(severity_personal),
         f"{len(f['deployments'])} deployments, {len(unguarded)} without a PII guard"],
        ["manipulation by prompt injection or jailbreak",
         "unknown: no security scan" if not f["scans"] else _level(2 if scans_failed else 1), _level(1),
         f"{len(f['scans'])} security scans, {len(scans_failed)} failed"],
    ]  # fmt: skip


def dpia(run: ReportRun, size: int, progress: Progress, claims: Claims, org: Any) -> tuple[str, list[Any]]:
    """A DPIA for one model version, in the four parts of GDPR Art. 35(7), with likelihood and
    severity per risk derived from the evidence."""
    progress(20, "reading the model version and its data")
    f = _model_facts(run, size)
    v = f["version"]
    data = f["datasets"] + [d for d, _ in f["inherited"]]
    personal = [d for d in data if d.pii_verdict not in ("none", "")]
    reviewed = [d for d in personal if d.review in ("approved", "anonymised")]
    purposes = sorted({d.dataset.purpose for d in data})
    sections = [
        Paragraph("For the controller's assessment: filled from the registry and the ledger. The judgement of "
                  "necessity, proportionality and residual risk, and the DPO's advice (Art. 35(2)), are the "
                  "controller's."),
        Heading("(a) Systematic description of the processing and its purposes"),
        KeyValues([("model", f"{v.model.project.slug}/{v.model.slug} version {v.number}"),
                   ("purpose of the model", v.model.description.strip() or "NOT RECORDED"),
                   ("purposes of its training data", "; ".join(purposes) or "no training data recorded"),
                   ("base models", ", ".join(model_name(b) for b in f["ancestors"]) or "none"),
                   ("special-category data processed for bias detection (AI Act Art. 10(5))",
                    "; ".join(f"{row[1]}: {row[2]}, {row[3]}" for row in _legal_basis_rows(f["evaluations"]))
                    or "none")]),
        _datasets_table(f, size, claims),
        Heading("(b) Necessity and proportionality"),
        Paragraph(f"{len(personal)} of {len(data)} training dataset versions (direct and through base models) hold "
                  f"personal data found by PII scans; {len(reviewed)} of them were approved or anonymised by a data "
                  f"steward and {len(personal) - len(reviewed)} were not. "
                  + ("Consider whether anonymised derived versions would serve the purpose." if personal else
                     "No personal data was found in the training data.")),
        Heading("(c) Risks to the rights and freedoms of data subjects"),
        Table(["risk", "likelihood", "severity", "evidence"], _risks(f)),
        Heading("(d) Measures envisaged to address the risks"),
        Paragraph("Approvals under separation of duties for every use; data-subject requests honoured through "
                  "lineage (erasure produces new dataset versions and opens retraining reviews); the runtime PII "
                  "guard; inference logs holding hashes, not text; a signed, append-only ledger. "
                  + (getattr(org, "security_measures", "") or "")),
    ]  # fmt: skip
    return f"Data protection impact assessment: {v.model.slug} v{v.number}", sections
