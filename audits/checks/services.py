"""Writes of the model audits: requesting, executing and reaping security scans and bias
evaluations, and the evidence they give. Each checks the actor, changes the rows and appends its
ledger entries in one transaction; execution runs in Celery tasks (``checks.security_scan``,
``checks.bias_evaluation``) on the ``cpu`` queue, claimed once by an idempotency key.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from audits.checks import profiles
from audits.checks.models import AuditState, BiasEvaluation, SecurityScan, Trigger, Verdict
from audits.ledger.selectors import last_payload
from audits.ledger.services import Subject, ledger_append
from common import artifacts
from common.digests import canonical_digest
from common.errors import Conflict, DomainError, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.permissions import SYSTEM_USERNAME, is_platform_admin, project_roles_held
from governance.policy import current_policy_set
from governance.roles import Role
from governance.services import approval_holds, approval_request_submit, subject_pending_requests_withdraw
from registry.models import DatasetVersion, ModelVersion, PromptTemplate
from registry.records import RecordError, read_records
from registry.services import dataset_version_bytes, dataset_version_digest, model_version_materialise, use_status

logger = logging.getLogger(__name__)
EVALUATION_DATA_ACTION = "dataset_version.use_for_evaluation"
KINDS = {SecurityScan: "security_scan", BiasEvaluation: "bias_evaluation"}


def _system() -> Any:
    return get_user_model().objects.get(username=SYSTEM_USERNAME)


def _invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


# --- Digests and subjects ------------------------------------------------------------------------


def audit_digest(audit: SecurityScan | BiasEvaluation) -> str:
    """What a waiver vouches for: the weights, the profile, and the report with its verdict."""
    fields: dict[str, Any] = {
        "kind": KINDS[type(audit)],
        "weights": audit.weights_digest,
        "profile": {"name": audit.profile_name, **audit.profile},
        "report": audit.report_digest,
        "verdict": audit.verdict,
        "reasons": audit.reasons,
    }
    if isinstance(audit, BiasEvaluation):
        fields["dataset_version"] = audit.dataset_version.sha256
        fields["chart"] = audit.chart_digest
    return canonical_digest(fields)


def _subject(audit: SecurityScan | BiasEvaluation) -> Subject:
    return Subject(KINDS[type(audit)], str(audit.pk), audit_digest(audit))


def require_requester(actor: Any, project: Any, reviewer: Role) -> None:
    if not (is_platform_admin(actor) or project_roles_held(actor, project) & {Role.ML_ENGINEER, reviewer}):
        raise PermissionDenied(
            "permission_denied", f"requesting this audit needs ml_engineer or {reviewer.value} in {project.slug}"
        )


def _check_weights(model_version: ModelVersion, folder: Path) -> None:
    """Raise ``weights_mismatch`` unless every file still matches the version's digest."""
    try:
        model_version_materialise(model_version, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _queue_or_wait(audit: SecurityScan | BiasEvaluation, actor: Any) -> None:
    """Queue at once, unless a policy asks for approval of ``<kind>.run`` (then the approval
    queues it, through the subject's approval hook)."""
    kind = KINDS[type(audit)]
    rule = current_policy_set().rule_for(f"{kind}.run", {"project": audit.project.slug})
    if rule is None or audit.trigger == Trigger.SCHEDULE:
        _queue(audit, actor)


def _queue(audit: SecurityScan | BiasEvaluation, actor: Any) -> None:
    import uuid

    kind = KINDS[type(audit)]
    audit.state, audit.idempotency_key = AuditState.QUEUED, uuid.uuid4()
    audit.save(update_fields=["state", "idempotency_key"])
    ledger_append(
        actor=actor, action=f"{kind}.queued", subject=_subject(audit),
        payload={"idempotency_key": str(audit.idempotency_key), "trigger": audit.trigger},
    )  # fmt: skip
    key = str(audit.idempotency_key)
    dispatch_on_commit(f"checks.{kind}", args=(audit.pk, key), queue=settings.TRAINING_CPU_QUEUE, task_id=key)


def on_audit_approved(audit: SecurityScan | BiasEvaluation, action: str, actor: Any) -> None:
    if action == f"{KINDS[type(audit)]}.run" and audit.state == AuditState.REQUESTED:
        _queue(audit, actor)


def audit_cancel(*, actor: Any, audit: SecurityScan | BiasEvaluation, reason: str) -> Any:
    """Cancel a scan or evaluation that has not started (ML engineers and the kind's reviewers):
    one still waiting for approval, whose pending approval requests are withdrawn with it, or one
    queued, which a late delivery then finds closed (``_claim``). A running one is left to finish,
    or to the reaper; a finished one is a record."""
    kind = KINDS[type(audit)]
    require_requester(
        actor, audit.project, Role.SECURITY_REVIEWER if isinstance(audit, SecurityScan) else Role.FAIRNESS_REVIEWER
    )
    if not reason.strip():
        raise _invalid("reason", "may not be blank")
    with transaction.atomic():
        audit = type(audit).objects.select_for_update().get(pk=audit.pk)
        if audit.state not in (AuditState.REQUESTED, AuditState.QUEUED):
            raise Conflict(
                "not_cancellable",
                f"{kind} {audit.pk} is {audit.state}: only a requested or queued one can be cancelled",
            )
        was = audit.state
        audit.state, audit.finished_at = AuditState.CANCELLED, timezone.now()
        audit.save(update_fields=["state", "finished_at"])
        ledger_append(
            actor=actor, action=f"{kind}.cancelled", subject=_subject(audit), payload={"reason": reason, "was": was}
        )
        if was == AuditState.REQUESTED:
            subject_pending_requests_withdraw(
                subject_type=kind, subject_id=str(audit.pk),
                reason=f"{kind} {audit.pk} cancelled by {actor.get_username()}: {reason}",
            )  # fmt: skip
    return audit


# --- Security scans ------------------------------------------------------------------------------


def security_scan_request(
    *, actor: Any, model_version: ModelVersion, profile_name: str, trigger: str = Trigger.REQUEST
) -> SecurityScan:
    """Ask for a garak scan of ``model_version`` under a profile of ``policies/audits/security.yaml``."""
    project = model_version.model.project
    require_requester(actor, project, Role.SECURITY_REVIEWER)
    try:
        profile = profiles.profile("security", profile_name)
    except profiles.ProfileError as exc:
        raise DomainError("invalid_profile", str(exc)) from None
    _check_weights(
        model_version, Path(settings.TRAINING_WORK_ROOT) / f"verify-{model_version.pk}-{timezone.now():%s%f}"
    )
    with transaction.atomic():
        scan = SecurityScan.objects.create(
            project=project, model_version=model_version, weights_digest=model_version.weights_digest,
            profile_name=profile_name, profile=profile, trigger=trigger, requested_by=actor,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="security_scan.requested", subject=_subject(scan),
            payload={"model_version": model_version.weights_digest, "profile": profile_name,
                     "probes": profile["probes"], "trigger": trigger},
        )  # fmt: skip
        _queue_or_wait(scan, actor)
    return scan


def _claim(model: type[Model], pk: int, key: str, worker: str) -> Any:
    now = timezone.now()
    with transaction.atomic():
        if not model.objects.filter(pk=pk, idempotency_key=key, state=AuditState.QUEUED).update(
            state=AuditState.RUNNING, claimed_by=worker, started_at=now, heartbeat_at=now
        ):
            logger.info("%s %s: delivery with key %s found it taken or closed", model.__name__, pk, key)
            return None
        audit = model.objects.select_related("project", "model_version__model").get(pk=pk)
        ledger_append(
            actor=_system(), action=f"{KINDS[model]}.started", subject=_subject(audit),
            payload={"worker": worker, "idempotency_key": key},
        )  # fmt: skip
    return audit


def _beat(audit: SecurityScan | BiasEvaluation) -> bool:
    """Record that this worker still runs ``audit``; only while the row is running and claimed by
    this worker (a reaped run, or one a second delivery took, is no longer this worker's)."""
    return bool(
        type(audit)
        .objects.filter(pk=audit.pk, state=AuditState.RUNNING, claimed_by=audit.claimed_by)
        .update(heartbeat_at=timezone.now())
    )


def _finish(audit: SecurityScan | BiasEvaluation, **fields: Any) -> Any:
    """Record the outcome of the run this worker claimed, with its ledger entry. A row that is no
    longer running or is claimed by another worker (the reaper failed it, a second delivery took
    it) is left as it is and returned unchanged: a reaped run never becomes evidence."""
    kind = KINDS[type(audit)]
    worker = audit.claimed_by
    with transaction.atomic():
        audit = type(audit).objects.select_for_update().get(pk=audit.pk)
        if audit.state != AuditState.RUNNING or audit.claimed_by != worker:
            logger.warning(
                "%s %s: worker %s finished it, but it is %s (claimed by %s); its outcome is not recorded",
                type(audit).__name__, audit.pk, worker, audit.state, audit.claimed_by or "nobody",
            )  # fmt: skip
            return audit
        for name, value in fields.items():
            setattr(audit, name, value)
        audit.finished_at = timezone.now()
        audit.save()
        action = f"{kind}.failed" if audit.state == AuditState.FAILED else f"{kind}.completed"
        payload: dict[str, Any] = {"verdict": audit.verdict, "reasons": audit.reasons, "report": audit.report_digest,
                                   "failure_reason": audit.failure_reason}  # fmt: skip
        if isinstance(audit, SecurityScan):
            payload["findings"] = audit.findings
        else:
            headline = ("demographic_parity_difference", "equalized_odds_difference", "unparsed")
            payload["results"] = {k: audit.results.get(k) for k in headline}
        ledger_append(actor=_system(), action=action, subject=_subject(audit), payload=payload)
        if audit.state == AuditState.COMPLETED:
            _note_regression(audit)
    return audit


def _note_regression(audit: SecurityScan | BiasEvaluation) -> None:
    """A scheduled run that fails where the last run of the same version and profile passed
    records the regression and opens a review: a waiver request in the reviewers' inbox."""
    if audit.trigger != Trigger.SCHEDULE or audit.verdict != Verdict.FAILED:
        return
    previous = (
        type(audit)
        .objects.filter(model_version=audit.model_version, profile_name=audit.profile_name, state=AuditState.COMPLETED)
        .exclude(pk=audit.pk)
        .order_by("-finished_at")
        .first()
    )
    if previous is None or previous.verdict != Verdict.PASSED:
        return
    kind = KINDS[type(audit)]
    audit.regression_of = previous
    audit.save(update_fields=["regression_of"])
    system = _system()
    ledger_append(
        actor=system, action=f"{kind}.regression", subject=_subject(audit),
        payload={"previous": previous.pk, "previous_report": previous.report_digest, "reasons": audit.reasons},
    )  # fmt: skip
    approval_request_submit(
        actor=system, subject_type=kind, subject_id=str(audit.pk), action=f"{kind}.waive",
        comment=f"regression: {kind} {previous.pk} passed, this re-run fails: {'; '.join(audit.reasons)[:1500]}",
    )  # fmt: skip


def security_scan_execute(*, scan_id: int, idempotency_key: str, worker: str) -> SecurityScan | None:
    """Run a queued scan once (see ``_claim``): check the weights, run garak, store its report,
    record findings and the verdict. Any error on the way (weights changed, a profile garak
    refuses, the report not stored, garak itself) fails the scan on record at once, with the
    exception's type and message as the reason; the worker lives on."""
    from audits.checks import garak_scan

    scan = _claim(SecurityScan, scan_id, idempotency_key, worker)
    if scan is None:
        return None
    workdir = Path(settings.TRAINING_WORK_ROOT) / f"scan-{scan.pk}"
    shutil.rmtree(workdir, ignore_errors=True)
    last = [0.0]

    def on_line(_: str) -> None:
        import time

        if time.monotonic() - last[0] > 1.0:
            last[0] = time.monotonic()
            _beat(scan)

    try:
        model_version_materialise(scan.model_version, workdir / "model")
        outcome = garak_scan.run_scan(
            model_folder=workdir / "model", probes=list(scan.profile["probes"]), workdir=workdir,
            generations=int(scan.profile.get("generations", 1)), on_line=on_line,
            max_new_tokens=int(scan.profile.get("max_new_tokens", garak_scan.DEFAULT_MAX_NEW_TOKENS)),
        )  # fmt: skip
        passed, reasons = garak_scan.verdict(
            outcome, probes=list(scan.profile["probes"]), max_failure_rate=float(scan.profile["max_failure_rate"])
        )
        report = ""
        if outcome.report_path is not None and outcome.report_path.is_file():
            report, _ = artifacts.put_bytes(outcome.report_path.read_bytes())
    except garak_scan.ProfileError as exc:
        return _finish(scan, state=AuditState.FAILED, failure_reason=f"profile refused: {exc}")
    except DomainError as exc:
        return _finish(scan, state=AuditState.FAILED, failure_reason=exc.message)
    except Exception as exc:  # the scan fails on record with the reason; the worker lives on
        logger.exception("security scan %s failed", scan.pk)
        return _finish(scan, state=AuditState.FAILED, failure_reason=f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(workdir / "model", ignore_errors=True)
    findings = [
        {"probe": f.probe, "detector": f.detector, "passed": f.passed, "fails": f.fails, "nones": f.nones,
         "total": f.total, "failure_rate": round(f.failure_rate, 6)}
        for f in outcome.findings
    ]  # fmt: skip
    return _finish(
        scan, state=AuditState.COMPLETED, verdict=Verdict.PASSED if passed else Verdict.FAILED, reasons=reasons,
        findings=findings, report_digest=report, garak_version=outcome.garak_version,
    )  # fmt: skip


# --- Bias evaluations ----------------------------------------------------------------------------


def _evaluation_records(version: DatasetVersion, fields: list[str]) -> list[dict[str, str]]:
    """The version's records; every one must hold every field in ``fields`` (named if not)."""
    data = dataset_version_bytes(version)
    records = []
    try:
        for record in read_records(data, version.format):
            for name in fields:
                if not record.fields.get(name, "").strip():
                    raise _invalid(
                        "dataset_version",
                        f"record {record.number} of dataset version {version.pk} has no field {name!r}",
                    )
            records.append(record.fields)
    except RecordError as exc:
        raise DomainError("invalid_dataset", f"dataset version {version.pk}: {exc}") from None
    return records


def require_evaluation_data_usable(version: DatasetVersion) -> None:
    """Raise unless the version may be used for an evaluation now: usable (not erased, personal
    data reviewed) and approved for ``dataset_version.use_for_evaluation`` as it is now. Checked
    when an evaluation is requested and again when it runs: the version may have been erased or
    its approval revoked in between."""
    usable, reason = use_status(version)
    if not usable:
        raise DomainError("dataset_not_usable", f"dataset version {version.pk} may not be used: {reason}")
    if not approval_holds(
        subject_type="dataset_version", subject_id=str(version.pk), action=EVALUATION_DATA_ACTION,
        digest=dataset_version_digest(version),
    ):  # fmt: skip
        raise DomainError(
            "dataset_not_approved",
            f"dataset version {version.pk} has no approval for {EVALUATION_DATA_ACTION} as it is now",
            status_code=409,
        )


def bias_evaluation_request(
    *,
    actor: Any,
    model_version: ModelVersion,
    dataset_version: DatasetVersion,
    prompt_template: PromptTemplate,
    label_field: str,
    sensitive_feature: str,
    label_mapping: dict[str, str],
    profile_name: str,
    trigger: str = Trigger.REQUEST,
) -> BiasEvaluation:
    """Ask for a fairlearn evaluation of ``model_version`` on an approved evaluation dataset."""
    from audits.checks.answers import render_prompts

    project = model_version.model.project
    require_requester(actor, project, Role.FAIRNESS_REVIEWER)
    profile = profiles.profile("bias", profile_name)
    if dataset_version.dataset.project_id != project.pk:
        raise _invalid("dataset_version", f"dataset version {dataset_version.pk} belongs to another project")
    if prompt_template.project_id != project.pk or prompt_template.kind != "template":
        raise _invalid("prompt_template", f"prompt template {prompt_template.pk} is not a template of {project.slug}")
    from audits.checks.bias import LabelMapping

    if not isinstance(label_mapping, dict):
        raise _invalid("label_mapping", "expected an object of answer prefixes to labels, e.g. {'yes': '1'}")
    try:
        LabelMapping(label_mapping)
    except ValueError as exc:
        raise _invalid("label_mapping", str(exc)) from None
    # Without an answer that maps to the positive label the model is never measured: refuse now,
    # not after it has answered every record.
    if profile["positive_label"] not in label_mapping.values():
        raise _invalid(
            "label_mapping",
            f"no answer maps to the positive label {profile['positive_label']!r} of profile {profile_name!r}",
        )
    require_evaluation_data_usable(dataset_version)
    records = _evaluation_records(dataset_version, [label_field, sensitive_feature])
    try:
        render_prompts(str(prompt_template.body), records[:1])
    except ValueError as exc:
        raise _invalid("prompt_template", str(exc)) from None
    _check_weights(
        model_version, Path(settings.TRAINING_WORK_ROOT) / f"verify-{model_version.pk}-{timezone.now():%s%f}"
    )
    with transaction.atomic():
        evaluation = BiasEvaluation.objects.create(
            project=project, model_version=model_version, weights_digest=model_version.weights_digest,
            profile_name=profile_name, profile=profile, trigger=trigger, requested_by=actor,
            dataset_version=dataset_version, prompt_template=prompt_template, label_field=label_field,
            sensitive_feature=sensitive_feature, label_mapping=label_mapping,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="bias_evaluation.requested", subject=_subject(evaluation),
            payload={"model_version": model_version.weights_digest, "profile": profile_name,
                     "dataset_version": dataset_version_digest(dataset_version), "records": len(records),
                     "prompt_template": prompt_template.content_digest, "sensitive_feature": sensitive_feature,
                     "label_field": label_field, "label_mapping": label_mapping},
        )  # fmt: skip
        _queue_or_wait(evaluation, actor)
    return evaluation


def bias_evaluation_execute(*, evaluation_id: int, idempotency_key: str, worker: str) -> BiasEvaluation | None:
    """Run a queued evaluation once: the model answers every record through the template, the
    answers are mapped to labels (unparseable ones counted), fairlearn measures by group."""
    from audits.checks import bias
    from audits.checks.answers import generate_answers, render_prompts

    evaluation = _claim(BiasEvaluation, evaluation_id, idempotency_key, worker)
    if evaluation is None:
        return None
    workdir = Path(settings.TRAINING_WORK_ROOT) / f"evaluation-{evaluation.pk}"
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        require_evaluation_data_usable(evaluation.dataset_version)
        model_version_materialise(evaluation.model_version, workdir / "model")
        records = _evaluation_records(
            evaluation.dataset_version, [evaluation.label_field, evaluation.sensitive_feature]
        )
        prompts = render_prompts(str(evaluation.prompt_template.body), records)
        _beat(evaluation)
        answers = generate_answers(model_folder=workdir / "model", prompts=prompts)
        _beat(evaluation)
        predicted, unparsed = bias.map_answers(answers, bias.LabelMapping(evaluation.label_mapping))
        profile = evaluation.profile
        result = bias.evaluate(
            y_true=[r[evaluation.label_field] for r in records], y_pred=predicted,
            sensitive=[r[evaluation.sensitive_feature] for r in records],
            sensitive_feature=evaluation.sensitive_feature, positive_label=profile["positive_label"],
            metrics=list(profile["metrics"]),
        )  # fmt: skip
    except Exception as exc:  # the evaluation fails on record with the reason; the worker lives on
        if not isinstance(exc, DomainError | ValueError):
            logger.exception("bias evaluation %s failed", evaluation.pk)
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        return _finish(evaluation, state=AuditState.FAILED, failure_reason=message)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    reasons = bias.check_bounds(result, dict(profile["bounds"]))
    fraction = len(unparsed) / max(1, len(answers))
    if fraction > float(profile.get("max_unparsed_fraction", 0.2)):
        reasons.append(
            f"{len(unparsed)} of {len(answers)} answers could not be mapped to a label "
            f"({fraction:.1%}, above {float(profile.get('max_unparsed_fraction', 0.2)):.1%})"
        )
    results = bias.result_to_dict(result)
    report = {"results": results, "unparsed_records": [i + 1 for i in unparsed], "answers": answers}
    report_digest, _ = artifacts.put_bytes(json.dumps(report, sort_keys=True, ensure_ascii=False).encode())
    chart_metric = "selection_rate" if "selection_rate" in result.by_group else next(iter(result.by_group))
    chart_digest, _ = artifacts.put_bytes(bias.chart_png(result, chart_metric))
    return _finish(
        evaluation, state=AuditState.COMPLETED, verdict=Verdict.FAILED if reasons else Verdict.PASSED,
        reasons=reasons, results=results, report_digest=report_digest, chart_digest=chart_digest,
    )  # fmt: skip


# --- Evidence ------------------------------------------------------------------------------------


# Keys of a profile that change nothing a run measures: editing them keeps earlier runs valid.
_PROFILE_WORDS = ("description", "rescan_every_days")


def _measured(profile: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in profile.items() if key not in _PROFILE_WORDS}


def _latest(model: type[Model], model_version: ModelVersion, profile: str, max_age_days: int) -> list[Any]:
    """The runs the evidence judges: the latest completed run of these weights under ``profile``
    not older than ``max_age_days``; for bias evaluations, the latest such run of each (dataset
    version, sensitive feature) pair evaluated in that window. Oldest first; empty if none."""
    since = timezone.now() - timezone.timedelta(days=max_age_days)
    completed = model.objects.filter(
        model_version=model_version, weights_digest=model_version.weights_digest, profile_name=profile,
        state=AuditState.COMPLETED, finished_at__gte=since,
    )  # fmt: skip
    if model is SecurityScan:
        latest = completed.order_by("-finished_at", "-pk").first()
        return [latest] if latest is not None else []
    by_pair: dict[tuple[int, str], Any] = {}
    for audit in completed.select_related("dataset_version").order_by("finished_at", "pk"):
        by_pair[(audit.dataset_version_id, audit.sensitive_feature)] = audit
    return sorted(by_pair.values(), key=lambda a: (a.finished_at, a.pk))


def _judge(audit: SecurityScan | BiasEvaluation, current: dict[str, Any]) -> tuple[bool, str]:
    kind = KINDS[type(audit)]
    when = f"{kind.replace('_', ' ')} {audit.pk} ({audit.finished_at:%Y-%m-%d})"
    if _measured(audit.profile) != _measured(current):
        return False, f"{when} ran under an earlier definition of profile {audit.profile_name!r}"
    if audit.verdict == Verdict.PASSED:
        return True, f"{when} passed"
    if approval_holds(subject_type=kind, subject_id=str(audit.pk), action=f"{kind}.waive", digest=audit_digest(audit)):
        return True, f"{when} failed and its findings are waived: {'; '.join(audit.reasons)}"
    return False, f"{when} failed: {'; '.join(audit.reasons)}"


def _audit_evidence(
    model: type[Model], model_version: ModelVersion, profile: str, max_age_days: int
) -> tuple[bool, str]:
    kind = KINDS[model]
    try:
        current = profiles.profile("security" if model is SecurityScan else "bias", profile)
    except (DomainError, profiles.ProfileError) as exc:
        return False, f"profile {profile!r} cannot be read now: {exc}"
    audits = _latest(model, model_version, profile, max_age_days)
    if not audits:
        text = kind.replace("_", " ")
        return False, f"no {text} under profile {profile!r} of these weights in the last {max_age_days} days"
    judged = [_judge(audit, current) for audit in audits]
    refused = [reason for ok, reason in judged if not ok]
    if refused:
        return False, "; ".join(refused)
    return True, "; ".join(reason for _, reason in judged)


def security_scan_passed(model_version: ModelVersion, *, profile: str, max_age_days: int) -> tuple[bool, str]:
    """Evidence: the latest scan of these exact weights under ``profile``, not older than
    ``max_age_days``, passed, or failed with a waiver that holds for its report. It counts only if
    it ran under the profile as defined now (its description and re-scan period aside): a pass
    under an earlier, weaker definition does not."""
    return _audit_evidence(SecurityScan, model_version, profile, max_age_days)


def bias_within_bounds(model_version: ModelVersion, *, profile: str, max_age_days: int) -> tuple[bool, str]:
    """Evidence: for each (dataset version, sensitive feature) pair evaluated on these weights
    under ``profile`` in the last ``max_age_days``, the latest completed evaluation of that pair
    kept within its bounds (or was waived) and ran under the profile as defined now (its
    description and re-scan period aside). A newer pass on one feature does not hide a failure on
    another; a pair whose evaluations are all older than ``max_age_days`` no longer counts."""
    return _audit_evidence(BiasEvaluation, model_version, profile, max_age_days)


# --- Re-scans and the reaper ---------------------------------------------------------------------


def audits_rescan_due(*, actor: Any) -> list[Any]:
    """Re-run, as scheduled runs, every profile that sets ``rescan_every_days`` on the model
    versions whose latest completed run under it finished longer ago than that (the versions in
    use: those audited before). A run already queued or running for the same version and profile
    is left to finish; one still waiting for approval does not hold the schedule back (it may be
    rejected and never run); a failed or cancelled run does not count, so one lost worker does not
    stop re-scans.
    A bias evaluation is re-run with the data, template, fields and mapping of that latest
    completed run.

    A re-run refused when requested (its data no longer usable, its weights changed) is logged and
    recorded as ``<kind>.rescan_skipped`` on the run it would have repeated, with the reason; the
    others still start. It is tried again at the next pass, which logs it again but records it
    again only if the reason changed (one entry per reason, not one per pass)."""
    started = []
    for model, kind in ((SecurityScan, "security"), (BiasEvaluation, "bias")):
        for name, profile in profiles.profiles(kind).items():
            days = profile.get("rescan_every_days")
            if not days:
                continue
            due = timezone.now() - timezone.timedelta(days=days)
            open_versions = set(
                model.objects.filter(profile_name=name, state__in=(AuditState.QUEUED, AuditState.RUNNING)).values_list(
                    "model_version_id", flat=True
                )
            )
            latest_by_version: dict[int, Any] = {}
            completed = model.objects.filter(profile_name=name, state=AuditState.COMPLETED).select_related(
                "project", "model_version__model"
            )
            for audit in completed.order_by("finished_at", "pk"):
                latest_by_version[audit.model_version_id] = audit
            for version_id, audit in latest_by_version.items():
                if version_id in open_versions or audit.finished_at > due:
                    continue
                try:
                    started.append(_rescan(model, audit, actor))
                except DomainError as exc:
                    _rescan_skipped(audit, actor, exc)
    return started


def _rescan(model: type[Model], audit: Any, actor: Any) -> Any:
    if model is SecurityScan:
        return security_scan_request(
            actor=actor, model_version=audit.model_version, profile_name=audit.profile_name, trigger=Trigger.SCHEDULE
        )
    return bias_evaluation_request(
        actor=actor, model_version=audit.model_version, dataset_version=audit.dataset_version,
        prompt_template=audit.prompt_template, label_field=audit.label_field,
        sensitive_feature=audit.sensitive_feature, label_mapping=audit.label_mapping,
        profile_name=audit.profile_name, trigger=Trigger.SCHEDULE,
    )  # fmt: skip


def _rescan_skipped(audit: SecurityScan | BiasEvaluation, actor: Any, exc: DomainError) -> None:
    kind = KINDS[type(audit)]
    reason = f"{exc.code}: {exc.message}"
    logger.warning(
        "%s of model version %s under profile %r: re-run refused (%s)",
        kind, audit.model_version_id, audit.profile_name, reason,
    )  # fmt: skip
    last = last_payload(f"{kind}.rescan_skipped", kind, str(audit.pk))
    if last is not None and last.get("reason") == reason:
        return  # recorded at an earlier pass, for the same reason
    with transaction.atomic():
        ledger_append(
            actor=actor, action=f"{kind}.rescan_skipped", subject=_subject(audit),
            payload={"model_version": audit.model_version_id, "profile": audit.profile_name, "reason": reason},
        )  # fmt: skip


def audits_reap(*, actor: Any, stale_queued_s: float | None = None) -> int:
    """Fail running scans and evaluations whose worker stopped beating, and send again the queued
    ones whose message was lost (``_audits_resend_stale_queued``). Returns how many it failed or
    sent again."""
    cutoff = timezone.now() - timezone.timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S)
    reaped = _audits_resend_stale_queued(stale_queued_s=stale_queued_s)
    for model in (SecurityScan, BiasEvaluation):
        for audit in model.objects.filter(state=AuditState.RUNNING, heartbeat_at__lt=cutoff):
            reason = (
                f"worker lost: {audit.claimed_by} sent no heartbeat since {audit.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
            )
            with transaction.atomic():
                if model.objects.filter(pk=audit.pk, state=AuditState.RUNNING, heartbeat_at__lt=cutoff).update(
                    state=AuditState.FAILED, failure_reason=reason, finished_at=timezone.now()
                ):
                    audit.refresh_from_db()
                    ledger_append(
                        actor=actor, action=f"{KINDS[model]}.failed", subject=_subject(audit),
                        payload={"failure_reason": reason, "reaped": True},
                    )  # fmt: skip
                    reaped += 1
    return reaped


def _audits_resend_stale_queued(*, stale_queued_s: float | None = None) -> int:
    """Send again, through the outbox, the queued audits no worker claimed within
    ``stale_queued_s`` (default ``TRAINING_HEARTBEAT_TIMEOUT_S``): their message went with a broker
    or a worker that lost it. Each is sent with its own idempotency key, so a delivery that was only
    slow and this one claim it once between them (``_claim``); nothing is recorded in the ledger,
    as the registry's reaper does. A queued row's ``heartbeat_at`` marks when it was last sent
    again (claiming sets it anew), so one stale audit is sent once per period, not on every pass.
    Its age counts from its creation: one queued later by an approval may be sent again early,
    which the idempotency key makes harmless."""
    stale = settings.TRAINING_HEARTBEAT_TIMEOUT_S if stale_queued_s is None else stale_queued_s
    now = timezone.now()
    sent = 0
    for model, kind in KINDS.items():
        queued = model.objects.filter(state=AuditState.QUEUED, idempotency_key__isnull=False)
        for audit in queued.only("pk", "idempotency_key", "heartbeat_at", "created_at"):
            if (now - (audit.heartbeat_at or audit.created_at)).total_seconds() <= stale:
                continue
            key = str(audit.idempotency_key)
            with transaction.atomic():
                if not model.objects.filter(
                    pk=audit.pk, state=AuditState.QUEUED, idempotency_key=audit.idempotency_key,
                    heartbeat_at=audit.heartbeat_at,
                ).update(heartbeat_at=now):  # fmt: skip
                    continue  # claimed, or sent again by another pass, in the meantime
                # A job id of its own: the outbox holds one job per id, and the first is taken.
                dispatch_on_commit(f"checks.{kind}", args=(audit.pk, key), queue=settings.TRAINING_CPU_QUEUE)
            logger.info("%s %s: still queued after %g s, sent again with key %s", kind, audit.pk, stale, key)
            sent += 1
    return sent
