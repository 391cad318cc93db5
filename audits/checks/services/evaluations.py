"""Bias evaluations: asking for a fairlearn evaluation of a model version on approved evaluation
data through a prompt template, and running it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.checks import profiles
from audits.checks.models import AuditState, BiasEvaluation, Trigger, Verdict
from audits.checks.services.runs import (
    _beat,
    _check_weights,
    _claim,
    _finish,
    _invalid,
    _queue_or_wait,
    _subject,
    require_requester,
)
from audits.ledger.services import ledger_append
from common import artifacts
from common.errors import DomainError
from governance.roles import Role
from governance.services import approval_holds
from registry.models import DatasetVersion, ModelVersion, PromptTemplate
from registry.records import RecordError, read_records
from registry.services import dataset_version_bytes, dataset_version_digest, model_version_materialise, use_status

logger = logging.getLogger(__name__)
EVALUATION_DATA_ACTION = "dataset_version.use_for_evaluation"


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
    special_category: str = "",
    legal_basis: str = "",
    safeguards_confirmed: list[str] | None = None,
) -> BiasEvaluation:
    """Ask for a fairlearn evaluation of ``model_version`` on an approved evaluation dataset.

    When the sensitive feature is special-category data (GDPR Art. 9), because the request says
    so (``special_category``) or the profile lists it (``special_category_features``), the request
    must name the legal basis for processing it for bias detection (``legal_basis``, AI Act Art.
    10(5) or the requester's choice of its amended form) and confirm every safeguard (a)-(f) of
    that article (``safeguards_confirmed``); missing or contradictory, it is refused naming the
    field. The record is kept on the evaluation and in its ``bias_evaluation.requested`` entry.
    The service records what the requester confirms; it cannot check that the safeguards are in
    place."""
    from audits.checks.answers import render_prompts
    from audits.checks.special_category import LEGAL_BASES, SAFEGUARDS, legal_basis_problems

    project = model_version.model.project
    require_requester(actor, project, Role.FAIRNESS_REVIEWER)
    profile = profiles.profile("bias", profile_name)
    safeguards = list(safeguards_confirmed or [])
    marked = dict(profile.get("special_category_features") or {})
    problems = legal_basis_problems(
        sensitive_feature=sensitive_feature, special_category=special_category, legal_basis=legal_basis,
        safeguards_confirmed=safeguards, profile_categories=marked,
    )  # fmt: skip
    if problems:
        raise DomainError(
            "invalid_input", "; ".join(f"{field}: {message}" for field, message in problems),
            fields={field: [message] for field, message in problems},
        )  # fmt: skip
    special_category = special_category or marked.get(sensitive_feature, "")
    safeguards = [point for point in SAFEGUARDS if point in safeguards]  # (a) to (f), each once
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
            sensitive_feature=sensitive_feature, label_mapping=label_mapping, special_category=special_category,
            legal_basis=legal_basis, safeguards_confirmed=safeguards,
        )  # fmt: skip
        payload: dict[str, Any] = {"model_version": model_version.weights_digest,
                                   "model_version_id": str(model_version.pk), "profile": profile_name,
                                   "dataset_version": dataset_version_digest(dataset_version), "records": len(records),
                                   "prompt_template": prompt_template.content_digest,
                                   "sensitive_feature": sensitive_feature, "label_field": label_field,
                                   "label_mapping": label_mapping}  # fmt: skip
        if special_category:
            payload["special_category"] = {
                "category": special_category, "legal_basis": legal_basis, "legal_basis_text": LEGAL_BASES[legal_basis],
                "safeguards_confirmed": safeguards,
            }  # fmt: skip
        ledger_append(actor=actor, action="bias_evaluation.requested", subject=_subject(evaluation), payload=payload)
        _queue_or_wait(evaluation, actor)
    return evaluation


def bias_evaluation_execute(*, evaluation_id: int, idempotency_key: str, worker: str) -> BiasEvaluation | None:
    """Run a queued evaluation once: the model answers every record through the template, the
    answers are mapped to labels (unparseable ones counted), fairlearn measures by group, with a
    bootstrap confidence interval for every number. The verdict fails on a group smaller than the
    profile's ``min_group_size``, a bound not held (under the profile's ``bound_rule``) or too many
    unparseable answers (see ``audits.checks.bias``)."""
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
            resamples=int(profile.get("bootstrap_resamples", bias.DEFAULT_RESAMPLES)),
            seed=int(profile.get("bootstrap_seed", bias.DEFAULT_SEED)),
            min_group_size=int(profile.get("min_group_size", bias.DEFAULT_MIN_GROUP_SIZE)),
        )  # fmt: skip
    except Exception as exc:  # the evaluation fails on record with the reason; the worker lives on
        if not isinstance(exc, DomainError | ValueError):
            logger.exception("bias evaluation %s failed", evaluation.pk)
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        return _finish(evaluation, state=AuditState.FAILED, failure_reason=message)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    reasons = [
        *bias.too_small_groups(result),
        *bias.check_bounds(result, dict(profile["bounds"]), rule=str(profile.get("bound_rule", "value"))),
    ]
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
