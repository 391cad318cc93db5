"""Feedback into training data: a deployment's rated answers, exported on approval as a preference
dataset version (``{"prompt", "chosen", "rejected"}`` per line) for a DPO fine-tune.

The path: ``deployment_feedback_export_request`` opens an approval request for
``deployment.export_feedback`` on the deployment, naming the target dataset in its context (a
dataset of the same project); once the policy's approvals are given, the hook sends
``serving.export_feedback`` to the worker, which reads the transcripts the servers kept
(``serving.server``: prompts and completions as the guard left them, redactions applied), pairs
them with the feedback given, and registers the pairs as a new version of the dataset through the
registry's own upload, as the person who asked (their role was checked then). The version then
takes the path of any upload: a PII scan, a steward's review, ``dataset_version.use_for_training``.

Pairs (``preference_pairs``, pure): (a) an answer rated 2 or less with a rater's correction: the
correction is chosen, the answer rejected; (b) one prompt answered differently (by deployments of
the same name, another model version, or the same one on another day) with different mean
ratings: the better-rated answer is chosen. Only requests with a transcript count.

Lineage: the version records ``derivation = "feedback"``; the ledger holds the provenance twice,
``dataset_version.derived`` on the version and ``deployment.feedback_exported`` on the deployment
(deployments, approval request, counts of requests, feedback and pairs, the time window, the
feedback ids): a reader walks model version -> dataset version -> deployment -> feedback rows.

Caveats: transcripts are read whole on each export (fine at the sizes one file holds); the
corrections and prompts may hold personal data the guard did not catch, which is why the version
is scanned and reviewed like any upload. Redelivery does the work once: identical pairs give the
existing version back (the registry's content dedup) and write nothing; an approval already
answered (an export or a failure recorded since it was approved) is not answered again.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from audits.ledger.services import ERASED, Subject, ledger_append
from common.errors import Conflict, DomainError, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role
from serving.models import Deployment
from serving.rules import deployment_digest, deployment_subject
from serving.selectors import inference_log_path
from serving.specs import invalid_input

logger = logging.getLogger(__name__)

EXPORT_ACTION = "deployment.export_feedback"
EXPORT_TASK = "serving.export_feedback"
LOW_RATING = 2  # an answer rated this or lower, with a correction, gives a pair
DERIVATION = "feedback"
EXPORTERS = {Role.ML_ENGINEER, Role.DATA_STEWARD}


@dataclass(frozen=True)
class Turn:
    """One answered request as its transcript kept it."""

    request_id: str
    deployment: int
    time: str
    prompt: str
    completion: str


@dataclass(frozen=True)
class Rating:
    """One feedback row, as the pairing reads it."""

    pk: int
    request_id: str
    rating: int
    correction: str


def preference_pairs(turns: dict[str, Turn], ratings: Iterable[Rating]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The preference pairs of ``turns`` (by request id) and their ``ratings``, sorted and without
    duplicates, and what they came from (``requests``, ``feedback`` ids, counts by rule). Feedback
    on a request without a turn is left out."""
    rated = [r for r in ratings if r.request_id in turns]
    pairs: dict[tuple[str, str, str], str] = {}
    used_requests: set[str] = set()
    used_feedback: set[int] = set()

    def add(prompt: str, chosen: str, rejected: str, rule: str, requests: list[str], feedback: list[int]) -> None:
        if not prompt.strip() or not chosen.strip() or chosen == rejected:
            return
        pairs.setdefault((prompt, chosen, rejected), rule)
        used_requests.update(requests)
        used_feedback.update(feedback)

    for r in rated:  # (a) a low rating with a correction
        if r.rating <= LOW_RATING and r.correction.strip():
            turn = turns[r.request_id]
            add(turn.prompt, r.correction.strip(), turn.completion, "correction", [r.request_id], [r.pk])

    by_request: dict[str, list[Rating]] = defaultdict(list)
    for r in rated:
        by_request[r.request_id].append(r)
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for request_id in sorted(by_request):
        by_prompt[turns[request_id].prompt].append(request_id)
    for prompt, request_ids in sorted(by_prompt.items()):  # (b) one prompt, answers rated apart
        for first, second in combinations(request_ids, 2):
            a, b = turns[first], turns[second]
            mean_a = sum(r.rating for r in by_request[first]) / len(by_request[first])
            mean_b = sum(r.rating for r in by_request[second]) / len(by_request[second])
            if a.completion == b.completion or mean_a == mean_b:
                continue
            better, worse = (a, b) if mean_a > mean_b else (b, a)
            feedback = [r.pk for r in by_request[first] + by_request[second]]
            add(prompt, better.completion, worse.completion, "ranking", [first, second], feedback)

    ordered = sorted(pairs)
    times = sorted(turns[request_id].time for request_id in used_requests)
    provenance = {
        "pairs": len(ordered),
        "by_rule": {rule: sum(1 for k in ordered if pairs[k] == rule) for rule in ("correction", "ranking")},
        "requests": len(used_requests),
        "feedback": sorted(used_feedback),
        "deployments": sorted({turns[request_id].deployment for request_id in used_requests}),
        "window": {"from": times[0], "to": times[-1]} if times else None,
    }
    return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in ordered], provenance


def transcript_path(deployment: Deployment) -> Path:
    """Where the deployment's server keeps its transcripts (beside its inference log)."""
    from serving.server import transcript_path as beside

    return beside(inference_log_path(deployment))


def deployment_transcripts(deployment: Deployment) -> dict[str, Turn]:
    """The deployment's transcript lines by request id; a torn or foreign line is skipped, and so
    is a turn a data subject's erasure blanked (``serving.services.transcripts``)."""
    path = transcript_path(deployment)
    if not path.is_file():
        return {}
    turns = {}
    with path.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                continue  # a line still being written
            try:
                record = json.loads(line)
                turn = Turn(
                    request_id=str(record["request_id"]), deployment=int(record["deployment"]),
                    time=str(record["time"]), prompt=str(record["prompt"]), completion=str(record["completion"]),
                )  # fmt: skip
            except (ValueError, KeyError, TypeError):
                continue
            if turn.deployment == deployment.pk and turn.prompt != ERASED:
                turns[turn.request_id] = turn
    return turns


def deployment_feedback_export_request(*, actor: Any, deployment: Deployment, dataset: Any, comment: str = "") -> Any:
    """Ask to export the feedback on a deployment (and on the deployments of its name) as a new
    version of ``dataset``, a dataset of the same project: an approval request for
    ``deployment.export_feedback`` naming the dataset in its context. ML engineers and data
    stewards ask; the policy says who approves. Refused (409 ``no_transcripts``) for a deployment
    that keeps no transcripts: there would be no prompt to pair."""
    from governance.services import approval_request_submit

    roles = project_roles_held(actor, deployment.project)
    if not (is_platform_admin(actor) or roles):
        raise DomainError("not_found", f"no deployment {deployment.pk}", status_code=404)
    if not (is_platform_admin(actor) or roles & EXPORTERS):
        raise PermissionDenied(
            "permission_denied", f"exporting feedback needs ml_engineer or data_steward in {deployment.project.slug}"
        )
    if dataset is None or dataset.project_id != deployment.project_id:
        named = getattr(dataset, "pk", dataset)
        raise invalid_input("dataset", f"a dataset of project {deployment.project.slug}, got {named!r}")
    if not deployment.keep_transcripts:
        raise Conflict(
            "no_transcripts", f"deployment {deployment.pk} keeps no transcripts (keep_transcripts): nothing to export"
        )
    return approval_request_submit(
        actor=actor, subject_type="deployment", subject_id=str(deployment.pk), action=EXPORT_ACTION,
        context={"dataset": str(dataset.pk)}, comment=comment,
    )  # fmt: skip


def on_feedback_export_approved(deployment: Deployment, action: str, actor: Any) -> None:
    """The approval hook: the worker builds the dataset version once the approval commits."""
    from governance.models import ApprovalRequest, ApprovalState

    if action != EXPORT_ACTION:
        return
    approved = ApprovalRequest.objects.filter(
        subject_type="deployment", subject_id=str(deployment.pk), action=EXPORT_ACTION, state=ApprovalState.APPROVED
    )
    request = approved.order_by("-closed_at", "-pk").first()
    if request is not None:
        dispatch_on_commit(EXPORT_TASK, args=(deployment.pk, request.pk), queue=settings.TRAINING_CPU_QUEUE)


def _export_fail(*, actor: Any, deployment: Deployment, request: Any, code: str, reason: str) -> None:
    logger.warning("feedback export of deployment %s (request %s): %s", deployment.pk, request.pk, reason)
    with transaction.atomic():
        ledger_append(
            actor=actor, action="deployment.feedback_export_failed", subject=deployment_subject(deployment),
            payload={"approval_request": request.pk, "code": code, "reason": reason[:500]},
        )  # fmt: skip


def _answered(deployment: Deployment, request: Any) -> bool:
    """An export or a failure was recorded for the deployment since ``request`` was approved."""
    from audits.ledger.models import Entry

    return Entry.objects.filter(
        subject_type="deployment", subject_id=str(deployment.pk), created_at__gte=request.closed_at,
        action__in=("deployment.feedback_exported", "deployment.feedback_export_failed"),
    ).exists()  # fmt: skip


def deployment_feedback_export_run(*, deployment_id: int, approval_request_id: int) -> Any:
    """Build and register the preference dataset version an approved export asks for (the
    worker). Returns the version, or ``None`` when the export failed (on record:
    ``deployment.feedback_export_failed`` naming why: the approval no longer holds, the dataset
    is gone from the project, no pair could be made, the registry refused the bytes)."""
    from governance.models import ApprovalRequest, ApprovalState
    from governance.services import approval_holds
    from registry.models import Dataset, DatasetVersion
    from registry.rules import dataset_version_digest
    from registry.services import dataset_version_upload
    from serving.models import InferenceFeedback

    deployment = Deployment.objects.select_related("project").get(pk=deployment_id)
    request = ApprovalRequest.objects.select_related("requester").get(pk=approval_request_id)
    actor = request.requester
    if request.state != ApprovalState.APPROVED or _answered(deployment, request):
        logger.info("feedback export %s of deployment %s: already answered; nothing done", request.pk, deployment.pk)
        return None
    if not approval_holds(
        subject_type="deployment", subject_id=str(deployment.pk), action=EXPORT_ACTION,
        digest=deployment_digest(deployment),
    ):  # fmt: skip
        reason = f"no approval of {EXPORT_ACTION} holds for deployment {deployment.pk} as it is now"
        _export_fail(actor=actor, deployment=deployment, request=request, code="approval_lapsed", reason=reason)
        return None
    dataset_id = str(request.context.get("dataset", ""))
    dataset = Dataset.objects.filter(
        pk=int(dataset_id) if dataset_id.isdigit() else -1, project=deployment.project
    ).first()
    if dataset is None:
        reason = f"the request names no dataset of project {deployment.project.slug} (dataset {dataset_id!r})"
        _export_fail(actor=actor, deployment=deployment, request=request, code="invalid_dataset", reason=reason)
        return None
    siblings = list(Deployment.objects.filter(project=deployment.project, name=deployment.name).order_by("pk"))
    turns: dict[str, Turn] = {}
    for sibling in siblings:
        turns.update(deployment_transcripts(sibling))
    feedback = InferenceFeedback.objects.filter(deployment__in=siblings).order_by("pk")
    ratings = [
        Rating(pk=f.pk, request_id=str(f.request_id), rating=f.rating, correction=f.correction) for f in feedback
    ]
    pairs, provenance = preference_pairs(turns, ratings)
    if not pairs:
        reason = (
            f"no preference pair: {len(turns)} transcript(s) and {len(ratings)} feedback row(s) on the deployments "
            f"named {deployment.name!r}; a pair needs an answer rated {LOW_RATING} or less with a correction, or "
            "one prompt answered differently with different ratings"
        )
        _export_fail(actor=actor, deployment=deployment, request=request, code="no_pairs", reason=reason)
        return None
    data = "".join(json.dumps(pair, ensure_ascii=False, sort_keys=True) + "\n" for pair in pairs).encode()
    details = {"approval_request": request.pk, "derivation": DERIVATION, "deployment_name": deployment.name,
               **provenance}  # fmt: skip
    try:
        with transaction.atomic():
            version, created = dataset_version_upload(
                actor=actor, dataset=dataset, filename=f"feedback-{deployment.name}.jsonl", data=data
            )
            if created:
                DatasetVersion.objects.filter(pk=version.pk).update(derivation=DERIVATION)
                version.derivation = DERIVATION
                ledger_append(
                    actor=actor, action="dataset_version.derived",
                    subject=Subject("dataset_version", str(version.pk), dataset_version_digest(version)),
                    payload={"from": None, **details},
                )  # fmt: skip
            ledger_append(
                actor=actor, action="deployment.feedback_exported", subject=deployment_subject(deployment),
                payload={"dataset_version": version.pk, "content_sha256": version.sha256, "created": created,
                         **details},
            )  # fmt: skip
    except DomainError as exc:
        _export_fail(actor=actor, deployment=deployment, request=request, code=exc.code, reason=exc.message)
        return None
    return version
