"""Erasure of a person (GDPR Art. 17, CCPA delete): their records leave every live dataset
version, the model versions trained on those are put under review, their identifiers are blanked
in the free text of the project's incidents, and the sealed identifiers are crypto-shredded.
Refused under an active legal hold.

Erasures are final across restores: the keys shredded (``data_subject_erase``) and the blobs the
erasure deletes are appended to the erasure journal outside the database and its backups
(``audits/ledger/backup/journal.py``), which every restore re-applies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from audits.ledger.backup.journal import journal_append
from audits.ledger.services import Subject, data_subject_erase, ledger_append
from audits.privacy import selectors
from audits.privacy.identifiers import finder
from audits.privacy.models import (
    ERASURE_KINDS,
    OPEN_STATES,
    DataSubjectRequest,
    LegalHold,
    ModelReview,
    RequestState,
    ReviewOutcome,
)
from audits.privacy.services.shared import (
    identifiers_of,
    invalid,
    locked,
    refuse_unmatched,
    require_officer,
    require_state,
    subject,
)
from common.digests import canonical_digest
from common.errors import Conflict, DomainError
from incidents.models import Incident
from registry.models import DatasetVersion, ModelVersion


def _active_hold(request: DataSubjectRequest) -> LegalHold | None:
    mine = {h["key_hash"] for h in request.identifier_hashes}
    for hold in LegalHold.objects.filter(project=request.project, released_at__isnull=True).order_by("placed_at"):
        if not hold.identifier_hashes or mine & {h["key_hash"] for h in hold.identifier_hashes}:
            return hold
    return None


@dataclass(frozen=True)
class VersionChange:
    """A live dataset version the erasure replaces, and the record numbers it removes."""

    version: DatasetVersion
    records: frozenset[int]

    @property
    def records_kept(self) -> int:
        return self.version.record_count - len(self.records)


@dataclass(frozen=True)
class IncidentChange:
    """An incident of the project whose free text names the person, and the fields that do."""

    incident: Incident
    fields: list[str]


@dataclass(frozen=True)
class TranscriptChange:
    """A deployment of the project whose transcripts hold turns naming the person."""

    deployment: Any
    turns: list[str]  # request ids


@dataclass(frozen=True)
class ErasurePlan:
    """What ``dsr_erase`` changes, computed by the code it runs: the versions replaced (with the
    records removed), the model versions put under review (``models``: id -> {trained_on, via};
    ``reviews_open``: those already under review for this request), the deployments serving them
    (left as they are: their reviews decide), the incidents whose free text names the person
    (``incidents``: blanked there), the deployments whose transcripts hold turns naming them
    (``transcripts``: those turns erased), and the vault keys shredded. ``hold``: the active
    legal hold that refuses the erasure (then nothing else is computed). ``digest`` names the
    plan, so an erasure can be bound to the summary its officer confirmed."""

    request: DataSubjectRequest
    hold: LegalHold | None = None
    versions: list[VersionChange] = field(default_factory=list)
    models: dict[int, dict[str, Any]] = field(default_factory=dict)
    model_versions: list[ModelVersion] = field(default_factory=list)
    reviews_open: frozenset[int] = frozenset()
    deployments: list[Any] = field(default_factory=list)
    vault_refs: list[str] = field(default_factory=list)
    incidents: list[IncidentChange] = field(default_factory=list)
    transcripts: list[TranscriptChange] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return canonical_digest(
            {
                "request": self.request.pk,
                "hold": self.hold.pk if self.hold else None,
                "versions": [[c.version.pk, sorted(c.records)] for c in self.versions],
                "models": {str(k): v for k, v in self.models.items()},
                "deployments": [d.pk for d in self.deployments],
                "vault_refs": self.vault_refs,
                "incidents": [[c.incident.pk, c.fields] for c in self.incidents],
                "transcripts": [[c.deployment.pk, c.turns] for c in self.transcripts],
            }
        )


def _check_erasable(request: DataSubjectRequest) -> None:
    if request.kind not in ERASURE_KINDS:
        raise Conflict("wrong_kind", f"erasure answers an erasure or delete request, not {request.kind}")
    if request.erased_at is not None:
        raise Conflict("already_erased", f"request {request.pk} was carried out on {request.erased_at:%Y-%m-%d}")
    require_state(request, [RequestState.SEARCHED], "erasure")


def _plan(request: DataSubjectRequest) -> ErasurePlan:
    """What erasing the person of ``request`` changes now; refuses (changing nothing) when
    neither the index, the incidents' free text nor the transcripts find them, or a version indexed with the
    person has no record that is theirs."""
    hold = _active_hold(request)
    if hold is not None:
        return ErasurePlan(request=request, hold=hold)
    find = finder(identifiers_of(request))
    index = selectors.index_versions(request.project, request.identifier_hashes)
    incidents = [IncidentChange(i, fields) for i, fields in selectors.incidents_naming(request.project, find)]
    transcripts = [
        TranscriptChange(deployment, [turn.request_id for turn in turns])
        for deployment, turns in selectors.transcripts_naming(request.project, find)
    ]
    if not index and not incidents and not transcripts:
        raise Conflict(
            "nothing_to_erase",
            f"no dataset version, incident nor transcript of project {request.project.slug} holds this person; "
            "nothing erased",
        )
    versions = list(DatasetVersion.objects.filter(pk__in=index).select_related("dataset__project").order_by("pk"))
    found = {version.pk: {r.number for r in selectors.person_records(version, find)} for version in versions}
    refuse_unmatched(request, [v for v in versions if not found[v.pk]], "the erasure")
    models = selectors.models_trained_on(request.project, [v.pk for v in versions])
    model_rows = ModelVersion.objects.filter(pk__in=models).select_related("model__project")
    reviewed = ModelReview.objects.filter(request=request, model_version_id__in=models).values_list(
        "model_version_id", flat=True
    )
    # This request's vault key, and those of the person's closed earlier requests (their sealed
    # identifiers are personal data too); open ones keep theirs until they close.
    from audits.ledger.models import DataSubjectKey

    mine = {h["key_hash"] for h in request.identifier_hashes}
    refs = [request.subject_ref] + [
        other.subject_ref
        for other in DataSubjectRequest.objects.filter(project=request.project)
        .exclude(pk=request.pk)
        .exclude(state__in=OPEN_STATES)
        .order_by("pk")
        if mine & {h["key_hash"] for h in other.identifier_hashes}
    ]
    live = set(DataSubjectKey.objects.filter(ref__in=refs, key__isnull=False).values_list("ref", flat=True))
    return ErasurePlan(
        request=request,
        versions=[VersionChange(version=v, records=frozenset(found[v.pk])) for v in versions],
        models=models,
        model_versions=sorted(model_rows, key=lambda m: (m.model.slug, m.number)),
        reviews_open=frozenset(reviewed),
        deployments=list(selectors.deployments_serving(models).select_related("model_version__model")),
        vault_refs=[ref for ref in refs if ref in live],
        incidents=incidents,
        transcripts=transcripts,
    )


def dsr_erasure_plan(*, actor: Any, request: DataSubjectRequest) -> ErasurePlan:
    """What ``dsr_erase`` would change if it ran now, computed by the same code and changing
    nothing (the confirmation page's summary). Refused as ``dsr_erase`` refuses: wrong kind or
    state, already erased, nothing indexed, records not singled out; an active legal hold is
    returned as ``plan.hold`` (the erasure itself records its refusal in the ledger)."""
    require_officer(actor, request.project, "preparing an erasure")
    with transaction.atomic():
        request = DataSubjectRequest.objects.select_related("project").get(pk=request.pk)
        _check_erasable(request)
        return _plan(request)


def dsr_erase(*, actor: Any, request: DataSubjectRequest, confirmed_plan: str | None = None) -> DataSubjectRequest:
    """Erase the person (GDPR Art. 17, CCPA delete), in one transaction:

    - every live dataset version of the project that the index finds holding them is replaced by
      a derived version without the records holding one of their identifiers (lineage
      ``erased``, a fresh PII scan); the old version is marked erased and its blob deleted once
      the transaction commits (``registry.services.dataset_version_erase_records``);
    - every model version trained on a replaced version (or fine-tuned from one) gets an open
      ``ModelReview``;
    - the person's identifiers are blanked in the free text of every incident of the project that
      names them, and the ledger's sealed copies of that text are shredded
      (``incidents.services.incident_text_erase``);
    - the turns of the project's deployments' transcripts that name them are erased, with the
      raters' corrections of them (``serving.services.transcripts.deployment_transcripts_erase``,
      last: a file swapped in is not put back should the transaction fail);
    - the request's vault key is shredded: its sealed identifiers become unreadable;
    - the request is ``erased`` (open until its response is recorded by ``dsr_complete``).

    What it changes is ``dsr_erasure_plan``'s plan, computed inside this transaction. With
    ``confirmed_plan`` (the digest of the plan an officer confirmed), a plan that differs now (a
    version uploaded or erased meanwhile) is refused, changing nothing.

    Refused under an active legal hold of the project or the person: the refusal, with the hold's
    reason, is itself ledgered. Refused (changing nothing) when the index finds nothing.
    """
    from governance.services import PolicyViolation
    from incidents.services import incident_text_erase
    from registry.services import dataset_version_erase_records

    require_officer(actor, request.project, "erasing a data subject")
    refusal: DomainError | None = None
    with transaction.atomic():
        request = locked(request)
        _check_erasable(request)
        plan = _plan(request)
        if confirmed_plan is not None and plan.digest != confirmed_plan:
            raise Conflict(
                "plan_changed",
                f"what erasing request {request.pk} changes is no longer the summary that was confirmed "
                "(the data changed meanwhile); nothing erased: review the new summary and confirm again",
            )
        if plan.hold is not None:
            hold = plan.hold
            scope = "the person" if hold.identifier_hashes else f"project {request.project.slug}"
            ledger_append(
                actor=actor, action="data_subject_request.erasure_refused", subject=subject(request),
                payload={"legal_hold": hold.pk, "scope": "person" if hold.identifier_hashes else "project",
                         "reason": hold.reason},
            )  # fmt: skip
            refusal = PolicyViolation(
                "legal_hold", f"erasure refused: legal hold {hold.pk} on {scope} is active ({hold.reason})"
            )
        else:
            _erase(actor, plan, dataset_version_erase_records, incident_text_erase)
    if refusal is not None:
        raise refusal
    return request


def _erase(actor: Any, plan: ErasurePlan, erase_records: Callable[..., Any], erase_text: Callable[..., Any]) -> None:
    request = plan.request
    reason = f"erasure of data-subject request {request.pk}"
    replaced: list[dict[str, Any]] = []
    for change in plan.versions:
        new = erase_records(actor=actor, version=change.version, record_numbers=set(change.records), reason=reason)
        removed = len(change.records)
        replaced.append({"old": change.version.pk, "new": new.pk if new else None, "records_removed": removed})
        _journal_blob_unless_live(change.version.sha256)
    reviews = []
    for model_version_id, lineage in plan.models.items():
        review, created = ModelReview.objects.get_or_create(
            model_version_id=model_version_id, request=request,
            defaults={"project": request.project, "dataset_versions": lineage["trained_on"]},
        )  # fmt: skip
        reviews.append(review.pk)
        if created:
            ledger_append(
                actor=actor, action="model_review.opened", subject=Subject("model_version", str(model_version_id)),
                payload={"review": review.pk, "request": request.pk, "dataset_versions": lineage["trained_on"],
                         "via": lineage["via"]},
            )  # fmt: skip
    find = finder(identifiers_of(request))  # before the request's own key is shredded below
    incidents = [
        {"id": change.incident.pk, "reference": change.incident.reference,
         "fields": erase_text(actor=actor, incident=change.incident, find=find, reason=reason)}
        for change in plan.incidents
    ]  # fmt: skip
    transcripts = [{"id": c.deployment.pk, "name": c.deployment.name, "turns": len(c.turns)} for c in plan.transcripts]
    for ref in plan.vault_refs:
        data_subject_erase(actor=actor, subject_ref=ref, reason=reason)
    request.erased_at, request.state = timezone.now(), RequestState.ERASED
    request.erasure = {"replaced": replaced, "model_reviews": reviews,
                       "model_versions": list(plan.models), "vault_keys_shredded": plan.vault_refs,
                       "incidents": incidents, "transcripts": transcripts}  # fmt: skip
    request.save(update_fields=["erased_at", "state", "erasure"])
    ledger_append(actor=actor, action="data_subject_request.erased", subject=subject(request), payload=request.erasure)
    # Last: a transcripts file, once swapped, is not put back by a rollback.
    from serving.services.transcripts import deployment_transcripts_erase

    for change in plan.transcripts:
        deployment_transcripts_erase(actor=actor, deployment=change.deployment, find=find, reason=reason)


def _journal_blob_unless_live(sha256: str) -> None:
    """The erased version's blob goes once this commits, unless a live version holds the same
    bytes: journal it (outside the database and its backups), so a restore of a backup taken
    before this erasure does not bring the person's records back."""
    if not DatasetVersion.objects.filter(sha256=sha256, erased_at__isnull=True).exists():
        journal_append(blob=sha256, erased_at=timezone.now())


def model_review_close(*, actor: Any, review: ModelReview, outcome: str, note: str) -> ModelReview:
    """A compliance officer's outcome for a model version trained on erased data: ``retrained``,
    ``retired`` or ``kept`` (the note documents why it need not be retrained)."""
    require_officer(actor, review.project, "closing a model review")
    if outcome not in ReviewOutcome.values:
        raise invalid("outcome", f"one of {', '.join(ReviewOutcome.values)}, got {outcome!r}")
    if not note.strip():
        raise invalid("note", "document the outcome")
    with transaction.atomic():
        review = ModelReview.objects.select_for_update().select_related("project").get(pk=review.pk)
        if review.closed_at is not None:
            raise Conflict("review_closed", f"review {review.pk} was closed as {review.outcome}")
        review.outcome, review.note, review.closed_by, review.closed_at = outcome, note.strip(), actor, timezone.now()
        review.save(update_fields=["outcome", "note", "closed_by", "closed_at"])
        ledger_append(
            actor=actor, action="model_review.closed", subject=Subject("model_version", str(review.model_version_id)),
            payload={"review": review.pk, "request": review.request_id, "outcome": outcome, "note": review.note},
        )  # fmt: skip
    return review
