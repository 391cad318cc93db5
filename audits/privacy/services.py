"""Writes of the data-subject request workflow. Each checks the actor's role (a compliance officer
of the request's project, or a platform admin), changes the rows and appends its ledger entries in
one transaction; bad input or a bad transition raises a ``DomainError`` and changes nothing.

The requester's identifiers are sealed in the ledger vault under the request's ``subject_ref``;
ledger payloads hold ids, keyed hashes and sealed values only. Erasure shreds that key last.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import rfc8785
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audits.ledger.services import ERASED, Subject, data_subject_erase, ledger_append, vault_open, vault_seal
from audits.privacy import deadlines as dl
from audits.privacy.models import (
    ACCESS_KINDS,
    ERASURE_KINDS,
    KINDS_BY_REGIME,
    OPEN_STATES,
    Channel,
    DataSubjectRequest,
    DeadlineFlag,
    LegalHold,
    ModelReview,
    Regime,
    RequestState,
    ReviewOutcome,
)
from common.digests import canonical_digest
from common.errors import Conflict, DomainError
from governance.models import Project
from governance.permissions import require_project_role
from governance.roles import Role
from registry import pii
from registry.models import DatasetVersion, DataSubjectIndexEntry, ModelVersion, PiiVerdict
from registry.records import read_records

DUE_SOON = timedelta(days=7)
_FLAG_RANK = {DeadlineFlag.ON_TIME: 0, DeadlineFlag.DUE_SOON: 1, DeadlineFlag.OVERDUE: 2}
# The index's identifier kinds, accepted also under Presidio's entity names (EMAIL_ADDRESS, ...).
IDENTIFIER_KINDS = {**{kind: kind for kind in pii.SUBJECT_KINDS.values()}, **pii.SUBJECT_KINDS}
ENTITY_OF_KIND = {kind: entity for entity, kind in pii.SUBJECT_KINDS.items()}

RIGHTS = {
    Regime.GDPR: [
        "access to the personal data and this information (Art. 15)",
        "rectification of inaccurate data (Art. 16)",
        "erasure (Art. 17)",
        "restriction of processing (Art. 18)",
        "data portability (Art. 20)",
        "objection to processing based on legitimate interests or a public task (Art. 21)",
        "withdrawal of consent at any time, where processing is based on consent (Art. 7(3))",
        "lodging a complaint with a supervisory authority (Art. 77)",
    ],
    Regime.CCPA: [
        "to know what personal information is collected, used and disclosed (Cal. Civ. Code §1798.110)",
        "to delete personal information (§1798.105)",
        "to correct inaccurate personal information (§1798.106)",
        "to opt out of the sale or sharing of personal information (§1798.120)",
        "to limit the use of sensitive personal information (§1798.121)",
        "not to be discriminated against for exercising these rights (§1798.125)",
    ],
}
AUTOMATED_DECISIONS = (
    "No decision based solely on automated processing, including profiling, that produces legal or "
    "similarly significant effects (GDPR Art. 22) is taken with these records. They were used to "
    "train the model versions listed, which the deployments listed serve; the models generate text "
    "and take no decision about the person."
)


# --- helpers ----------------------------------------------------------------------------------


def _invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


def _require_officer(actor: Any, project: Project, what: str) -> None:
    require_project_role(actor, project, {Role.COMPLIANCE_OFFICER}, what)


def request_digest(request: DataSubjectRequest) -> str:
    return canonical_digest(
        {
            "project": request.project.slug,
            "regime": request.regime,
            "kind": request.kind,
            "received_at": request.received_at.isoformat(),
            "identifier_hashes": request.identifier_hashes,
            "state": request.state,
            "respond_by": request.respond_by.isoformat(),
            "extended": request.extended,
        }
    )


def _subject(request: DataSubjectRequest) -> Subject:
    return Subject(type="data_subject_request", id=str(request.pk), digest=request_digest(request))


def _locked(request: DataSubjectRequest) -> DataSubjectRequest:
    return DataSubjectRequest.objects.select_for_update().select_related("project").get(pk=request.pk)


def _require_state(request: DataSubjectRequest, states: Iterable[str], doing: str) -> None:
    states = tuple(states)
    if request.state not in states:
        wanted = " or ".join(states)
        raise Conflict(
            "invalid_transition",
            f"request {request.pk} is {request.state}; {doing} needs it {wanted}",
        )


# A request dated earlier is a typing error (and years near 1 overflow in the time-zone arithmetic).
EARLIEST_RECEIVED = datetime(2000, 1, 1, tzinfo=UTC)


def _aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise _invalid(name, f"a datetime is needed, got {type(value).__name__}")
    if timezone.is_naive(value):
        raise _invalid(name, f"must be timezone-aware, got naive {value.isoformat()}")
    return value


def _now(now: datetime | None) -> datetime:
    return timezone.now() if now is None else _aware("now", now)


def _deadlines(regime: str, kind: str, received_at: datetime, tz: str, *, extended: bool = False) -> dl.Deadlines:
    try:
        if regime == Regime.GDPR:
            deadlines = dl.gdpr_deadlines(received_at, tz=tz)
        else:
            deadlines = dl.ccpa_deadlines(received_at, kind=kind, tz=tz)
        return deadlines.extend() if extended else deadlines
    except ValueError as exc:
        raise Conflict("no_extension", str(exc)) if extended else _invalid("tz", str(exc)) from None


def _normalise_identifiers(identifiers: Any) -> list[dict[str, str]]:
    if not isinstance(identifiers, list) or not identifiers:
        raise _invalid("identifiers", "give at least one identifier as {kind, value}")
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for item in identifiers:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str) or not item["value"].strip():
            raise _invalid("identifiers", "each identifier is {kind, value} with a non-empty value")
        kind = IDENTIFIER_KINDS.get(str(item.get("kind", "")))
        if kind is None:
            known = ", ".join(sorted(IDENTIFIER_KINDS))
            raise _invalid("identifiers", f"unknown identifier kind {item.get('kind')!r}; one of {known}")
        normalised = pii.normalise_identifier(kind, item["value"])
        if not normalised.strip("+"):
            raise _invalid("identifiers", f"the {kind} identifier is empty once normalised")
        seen.setdefault((kind, normalised), {"kind": kind, "value": item["value"].strip()})
    return list(seen.values())


def _hashes(identifiers: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(
        (
            {"kind": i["kind"], "key_hash": pii.subject_key(i["kind"], i["value"], settings.DATA_SUBJECT_INDEX_KEY)}
            for i in identifiers
        ),
        key=lambda h: (h["kind"], h["key_hash"]),
    )


def _identifiers_of(request: DataSubjectRequest) -> list[dict[str, str]]:
    value = vault_open(request.identifiers_sealed)
    if value == ERASED:
        raise Conflict("subject_erased", f"the identifiers of request {request.pk} were erased (crypto-shredded)")
    return value


# Characters an e-mail address's local part may hold besides word characters (RFC 5322 atext).
_LOCAL_PART_SYMBOLS = set("!#$%&'*+-/=?^_`{|}~.")


def _email_at(text: str, start: int) -> bool:
    """Whether the address found at ``start`` begins there, as the scan's recogniser reads it:
    it starts an address at a word boundary and runs left over the local part's characters, so
    ``hana.silva@…`` and ``x.ana.silva@…`` are other addresses, while ``--ana.silva@…`` is Ana's
    (the dashes before it hold no word character)."""
    i = start
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_" or text[i - 1] in _LOCAL_PART_SYMBOLS):
        i -= 1
        if text[i].isalnum() or text[i] == "_":
            return False
    return True


def _matcher(identifiers: list[dict[str, str]]) -> Callable[[str], bool]:
    """Whether a text holds one of the identifiers, as a whole token, the way the scan that
    indexed it reads them (ana@x.org is not in hana@x.org nor in ana@x.org.uk; a name matches on
    word boundaries; a phone number by its digits)."""
    patterns: list[re.Pattern[str]] = []
    emails: list[re.Pattern[str]] = []
    phones: set[str] = set()
    for identifier in identifiers:
        kind, value = identifier["kind"], identifier["value"].strip()
        if kind == "email":
            emails.append(re.compile(rf"{re.escape(value)}(?!\w|[-.]\w)", re.IGNORECASE))
        elif kind == "name":
            words = r"\s+".join(re.escape(word) for word in value.split())
            patterns.append(re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE))
        else:
            phones.add(pii.normalise_identifier("phone", value).lstrip("+"))
    phone_like = re.compile(r"\+?\d[\d\s().-]{4,}\d")

    def matches(text: str) -> bool:
        if any(p.search(text) for p in patterns):
            return True
        if any(_email_at(text, m.start()) for p in emails for m in p.finditer(text)):
            return True
        return bool(phones) and any(
            pii.normalise_identifier("phone", m.group()).lstrip("+") in phones for m in phone_like.finditer(text)
        )

    return matches


def _person_records(version: DatasetVersion, matches: Callable[[str], bool]) -> list[Any]:
    """The records of ``version`` that hold the person; a 409 (which rolls the whole answer back)
    when its bytes are gone from the store or no longer match its content hash."""
    from registry.services import dataset_version_bytes

    data = dataset_version_bytes(version)
    return [r for r in read_records(data, version.format) if any(matches(text) for text in r.fields.values())]


def _refuse_unmatched(request: DataSubjectRequest, unmatched: list[DatasetVersion], what: str) -> None:
    """The scan indexed the person in these versions, yet no record holds the identifiers as
    given: answering anyway would leave the person's records out (an access package saying no
    data is held; an erasure that shreds the request's key and leaves the records in place)."""
    if unmatched:
        names = ", ".join(f"{v} (id {v.pk})" for v in unmatched)
        raise Conflict(
            "records_not_singled_out",
            f"{what} refused, nothing changed: the scan indexed the person of request {request.pk} in {names}, "
            "but no record holds the identifiers as given. Check the request's identifiers, or find the "
            "records and erase them by number (dataset_version_erase_records), then run it again.",
        )


def _index_versions(project: Project, hashes: list[dict[str, str]]) -> dict[int, set[str]]:
    """Live dataset versions of ``project`` whose scans indexed one of ``hashes``: id -> kinds."""
    where = Q()
    for h in hashes:
        where |= Q(kind=h["kind"], key_hash=h["key_hash"])
    found: dict[int, set[str]] = {}
    rows = DataSubjectIndexEntry.objects.filter(
        where, version__dataset__project=project, version__erased_at__isnull=True
    ).values_list("version_id", "kind")
    for version_id, kind in rows:
        found.setdefault(version_id, set()).add(kind)
    return found


def models_trained_on(project: Project, version_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Model versions of ``project`` trained on the dataset versions (by their lineage: the
    registered dataset versions, the fine-tune run that made them), and those fine-tuned from
    them in turn: model version id -> {trained_on: [dataset version ids], via}."""
    from training.models import FineTuneRun

    ids = set(version_ids)
    found: dict[int, dict[str, Any]] = {}

    def add(model_version_id: int, dataset_version_id: int | None, via: str) -> None:
        entry = found.setdefault(model_version_id, {"trained_on": set(), "via": via})
        if dataset_version_id is not None:
            entry["trained_on"].add(dataset_version_id)

    through = ModelVersion.dataset_versions.through.objects
    for mv, dv in through.filter(datasetversion_id__in=ids, modelversion__model__project=project).values_list(
        "modelversion_id", "datasetversion_id"
    ):
        add(mv, dv, "training")
    runs = FineTuneRun.dataset_versions.through.objects.filter(datasetversion_id__in=ids, finetunerun__project=project)
    run_versions: dict[int, set[int]] = {}
    for run_id, dv in runs.values_list("finetunerun_id", "datasetversion_id"):
        run_versions.setdefault(run_id, set()).add(dv)
    for run_id, output_id in FineTuneRun.objects.filter(pk__in=run_versions, output__isnull=False).values_list(
        "pk", "output_id"
    ):
        for dv in run_versions[run_id]:
            add(output_id, dv, "training")
    for mv, run_id in ModelVersion.objects.filter(
        model__project=project, lineage__fine_tune_run__in=list(run_versions)
    ).values_list("pk", "lineage__fine_tune_run"):
        for dv in run_versions.get(int(run_id), ()):
            add(mv, dv, "training")
    frontier = set(found)
    while frontier:  # versions fine-tuned from an affected version carry its data too
        children = ModelVersion.objects.filter(base_id__in=frontier, model__project=project).values_list(
            "pk", "base_id"
        )
        frontier = set()
        for child, base in children:
            if child not in found:
                found[child] = {"trained_on": set(found[base]["trained_on"]), "via": f"base {base}"}
                frontier.add(child)
    return {k: {"trained_on": sorted(v["trained_on"]), "via": v["via"]} for k, v in sorted(found.items())}


def _findings(project: Project, hashes: list[dict[str, str]]) -> dict[str, Any]:
    from serving.models import Deployment

    index = _index_versions(project, hashes)
    versions = DatasetVersion.objects.filter(pk__in=index).select_related("dataset").order_by("dataset__slug", "number")
    models = models_trained_on(project, index)
    model_rows = ModelVersion.objects.filter(pk__in=models).select_related("model").order_by("model__slug", "number")
    deployments = Deployment.objects.filter(model_version_id__in=models).order_by("pk")
    unscanned = DatasetVersion.objects.filter(
        dataset__project=project, erased_at__isnull=True, pii_verdict__in=[PiiVerdict.PENDING, PiiVerdict.FAILED]
    ).values_list("pk", flat=True)
    found = bool(index)
    return {
        "found": found,
        "message": (
            f"{len(index)} dataset version(s) of project {project.slug} hold this person"
            if found
            else f"no dataset version of project {project.slug} holds these identifiers (per the subject index)"
        ),
        "dataset_versions": [
            {"id": v.pk, "dataset": str(v.dataset), "number": v.number, "kinds": sorted(index[v.pk])} for v in versions
        ],
        "model_versions": [{"id": m.pk, "model": str(m.model), "number": m.number, **models[m.pk]} for m in model_rows],
        "deployments": [
            {
                "id": d.pk,
                "name": d.name,
                "environment": d.environment,
                "state": d.state,
                "model_version": d.model_version_id,
            }
            for d in deployments
        ],
        "unscanned_versions": sorted(unscanned),
    }


# --- intake -----------------------------------------------------------------------------------


def dsr_receive(
    *,
    actor: Any,
    project: Project,
    regime: str,
    kind: str,
    channel: str,
    received_at: datetime,
    identifiers: list[dict[str, str]],
    tz: str = "UTC",
) -> DataSubjectRequest:
    """Record a data-subject request and start its deadline clock.

    ``identifiers``: ``[{kind, value}]`` with kind email, phone or name (or EMAIL_ADDRESS,
    PHONE_NUMBER, PERSON). They are sealed in the ledger vault under a new data-subject
    reference; the row and the ledger keep the sealed form and keyed hashes only. ``received_at``
    must be timezone-aware and not in the future; ``tz`` is the zone of the office that acts.
    """
    _require_officer(actor, project, "receiving a data-subject request")
    if regime not in KINDS_BY_REGIME:
        raise _invalid("regime", f"one of {', '.join(KINDS_BY_REGIME)}, got {regime!r}")
    if kind not in KINDS_BY_REGIME[regime]:
        raise _invalid("kind", f"a {regime} request is one of {', '.join(KINDS_BY_REGIME[regime])}, got {kind!r}")
    if channel not in Channel.values:
        raise _invalid("channel", f"one of {', '.join(Channel.values)}, got {channel!r}")
    _aware("received_at", received_at)
    if received_at > timezone.now() + timedelta(minutes=5):
        raise _invalid("received_at", f"{received_at.isoformat()} is in the future")
    if received_at < EARLIEST_RECEIVED:
        raise _invalid("received_at", f"{received_at.isoformat()} is before {EARLIEST_RECEIVED:%Y-%m-%d}")
    clean = _normalise_identifiers(identifiers)
    deadlines = _deadlines(regime, kind, received_at, tz)
    hashes = _hashes(clean)
    subject_ref = f"dsr-{uuid.uuid4().hex}"
    with transaction.atomic():
        sealed = vault_seal(subject_ref=subject_ref, value=clean)
        request = DataSubjectRequest.objects.create(
            project=project, regime=regime, kind=kind, channel=channel, received_at=received_at, tz=tz,
            received_by=actor, subject_ref=subject_ref, identifiers_sealed=sealed, identifier_hashes=hashes,
            confirm_by=deadlines.confirm_by.ends_at if deadlines.confirm_by else None,
            respond_by=deadlines.respond_by.ends_at,
            extension_notice_by=deadlines.extension_notice_by.ends_at if deadlines.extension_notice_by else None,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="data_subject_request.received", subject=_subject(request),
            payload={"project": project.slug, "regime": regime, "kind": kind, "channel": channel,
                     "received_at": received_at.isoformat(), "identifiers": sealed, "key_hashes": hashes,
                     "deadlines": _deadline_payload(request)},
        )  # fmt: skip
    return request


def _deadline_payload(request: DataSubjectRequest) -> dict[str, Any]:
    return {
        "confirm_by": request.confirm_by.isoformat() if request.confirm_by else None,
        "respond_by": request.respond_by.isoformat(),
        "extension_notice_by": request.extension_notice_by.isoformat() if request.extension_notice_by else None,
        "extended": request.extended,
    }


def dsr_confirm_receipt(*, actor: Any, request: DataSubjectRequest) -> DataSubjectRequest:
    """Record that receipt was confirmed to the requester (CCPA §7021(a): within 10 business days)."""
    _require_officer(actor, request.project, "confirming receipt")
    with transaction.atomic():
        request = _locked(request)
        _require_state(request, OPEN_STATES, "confirming receipt")
        if request.confirm_by is None:
            raise Conflict("no_confirmation", f"a {request.regime} {request.kind} request has no confirmation step")
        if request.receipt_confirmed_at is not None:
            raise Conflict("already_confirmed", f"receipt was confirmed on {request.receipt_confirmed_at:%Y-%m-%d}")
        request.receipt_confirmed_at = timezone.now()
        request.save(update_fields=["receipt_confirmed_at"])
        ledger_append(
            actor=actor, action="data_subject_request.receipt_confirmed", subject=_subject(request),
            payload={"late": request.receipt_confirmed_at > request.confirm_by},
        )  # fmt: skip
    return request


def dsr_verify_identity(*, actor: Any, request: DataSubjectRequest, method: str) -> DataSubjectRequest:
    """Record that the requester's identity was verified, how and by whom. Describe the method
    ("reply from the address on file"), not the evidence: ``method`` is kept in clear."""
    _require_officer(actor, request.project, "verifying a requester's identity")
    if not method.strip():
        raise _invalid("method", "say how the identity was verified")
    with transaction.atomic():
        request = _locked(request)
        _require_state(request, [RequestState.RECEIVED], "verifying identity")
        request.state, request.verified_at, request.verified_by = RequestState.IDENTITY_VERIFIED, timezone.now(), actor
        request.verification_method = method.strip()[:200]
        request.save(update_fields=["state", "verified_at", "verified_by", "verification_method"])
        ledger_append(
            actor=actor, action="data_subject_request.identity_verified", subject=_subject(request),
            payload={"method": request.verification_method},
        )  # fmt: skip
    return request


def dsr_search(*, actor: Any, request: DataSubjectRequest) -> DataSubjectRequest:
    """Find the person: the subject index (keyed hashes) gives the project's dataset versions
    holding them; lineage gives the model versions trained on those (and fine-tuned from them) and
    the deployments of those. Stored as ``findings``; may be run again while the request is open.
    Finding nothing is a result, said in ``findings["message"]``. Versions whose PII scan has not
    succeeded are listed as ``unscanned_versions``: the index cannot speak for them."""
    _require_officer(actor, request.project, "searching for a data subject")
    with transaction.atomic():
        request = _locked(request)
        _require_state(request, [RequestState.IDENTITY_VERIFIED, RequestState.SEARCHED], "the search")
        findings = _findings(request.project, request.identifier_hashes)
        request.state, request.searched_at, request.findings = RequestState.SEARCHED, timezone.now(), findings
        request.save(update_fields=["state", "searched_at", "findings"])
        ledger_append(
            actor=actor, action="data_subject_request.searched", subject=_subject(request),
            payload={"key_hashes": [h["key_hash"] for h in request.identifier_hashes], "found": findings["found"],
                     "dataset_versions": [v["id"] for v in findings["dataset_versions"]],
                     "model_versions": [m["id"] for m in findings["model_versions"]],
                     "deployments": [d["id"] for d in findings["deployments"]],
                     "unscanned_versions": findings["unscanned_versions"]},
        )  # fmt: skip
    return request


# --- responses --------------------------------------------------------------------------------


def package_sha256(package: dict[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(package)).hexdigest()


def dsr_access_package(*, actor: Any, request: DataSubjectRequest) -> tuple[dict[str, Any], str]:
    """The GDPR Art. 15 / CCPA right-to-know package, as JSON: a copy of the person's records in
    the current (not erased) dataset versions found, the purposes, categories of data, recipients,
    storage periods, sources, third-country transfers, the model versions and deployments derived
    from the data, the person's rights and the automated decision-making statement.

    Returns (package, SHA-256 of its RFC 8785 form). Only the digest is recorded, in the row and
    the ledger; the content goes to the caller alone. Records are the ones holding one of the
    identifiers as a whole token (see ``_matcher``)."""
    _require_officer(actor, request.project, "preparing an access package")
    with transaction.atomic():
        request = _locked(request)
        if request.kind not in ACCESS_KINDS:
            raise Conflict("wrong_kind", f"an access package answers an access or know request, not {request.kind}")
        _require_state(request, [RequestState.SEARCHED], "an access package")
        matches = _matcher(_identifiers_of(request))
        findings = request.findings
        found_ids = [v["id"] for v in findings["dataset_versions"]]
        versions = list(
            DatasetVersion.objects.filter(pk__in=found_ids, erased_at__isnull=True)
            .select_related("dataset")
            .order_by("dataset__slug", "number")
        )
        records, version_rows = [], []
        indexed_now = _index_versions(request.project, request.identifier_hashes)
        held = {version.pk: _person_records(version, matches) for version in versions}
        unmatched = [v for v in versions if v.pk in indexed_now and not held[v.pk]]
        _refuse_unmatched(request, unmatched, "the access package")
        for version in versions:
            mine = held[version.pk]
            version_rows.append({"id": version.pk, "dataset": str(version.dataset), "number": version.number,
                                 "records": len(mine)})  # fmt: skip
            records += [
                {"dataset_version": version.pk, "dataset": str(version.dataset), "version": version.number,
                 "record": r.number, "fields": r.fields}
                for r in mine
            ]  # fmt: skip
        datasets = sorted({v.dataset for v in versions}, key=lambda d: d.slug)
        kinds = sorted(
            {k for v in findings["dataset_versions"] if v["id"] in {x.pk for x in versions} for k in v["kinds"]}
        )
        package = {
            "request": {"id": request.pk, "regime": request.regime, "kind": request.kind,
                        "received_at": request.received_at.isoformat(), "project": request.project.slug},
            "controller": {"project": request.project.slug, "name": request.project.name},
            "generated_at": timezone.now().isoformat(),
            "data_held": bool(records),
            "dataset_versions": version_rows,
            "records": records,
            "purposes": [{"dataset": str(d), "purpose": d.purpose, "lawful_basis": d.lawful_basis} for d in datasets],
            "categories": {
                "identifiers_found": [ENTITY_OF_KIND.get(k, k) for k in kinds],
                "declared": sorted({c for d in datasets for c in d.personal_data_categories}),
            },
            "recipients": sorted({r for d in datasets for r in d.recipients}),
            "third_country_transfers": sorted({t for d in datasets for t in d.third_country_transfers}),
            "storage_period": [{"dataset": str(d), "retention_days": d.retention_days} for d in datasets],
            "source": [{"dataset": str(d), "source": d.source} for d in datasets],
            "model_versions": findings["model_versions"],
            "deployments": findings["deployments"],
            "rights": RIGHTS[request.regime],
            "automated_decision_making": AUTOMATED_DECISIONS,
        }  # fmt: skip
        digest = package_sha256(package)
        request.package_sha256, request.package_issued_at = digest, timezone.now()
        request.save(update_fields=["package_sha256", "package_issued_at"])
        ledger_append(
            actor=actor, action="data_subject_request.access_package_issued", subject=_subject(request),
            payload={"sha256": digest, "records": len(records), "dataset_versions": [v.pk for v in versions],
                     "model_versions": [m["id"] for m in findings["model_versions"]],
                     "deployments": [d["id"] for d in findings["deployments"]]},
        )  # fmt: skip
    return package, digest


def dsr_extend(
    *, actor: Any, request: DataSubjectRequest, reason: str, now: datetime | None = None
) -> DataSubjectRequest:
    """The one extension the law allows (GDPR: two more months; CCPA know, delete, correct: 45
    more days), with its reason, before the first deadline (``extension_notice_by``): the
    requester is told now. Refused for a kind with no extension (CCPA opt-out)."""
    _require_officer(actor, request.project, "extending a request")
    if not reason.strip():
        raise _invalid("reason", "an extension needs its reason (it is told to the requester)")
    now = _now(now)
    with transaction.atomic():
        request = _locked(request)
        _require_state(request, OPEN_STATES, "an extension")
        if request.extended:
            raise Conflict("already_extended", f"request {request.pk} was already extended; only once is allowed")
        if request.extension_notice_by is None:
            raise Conflict("no_extension", f"a {request.regime} {request.kind} request cannot be extended")
        if now > request.extension_notice_by:
            raise Conflict(
                "too_late",
                f"the extension had to be notified by {request.extension_notice_by.isoformat()} (the first deadline)",
            )
        extended = _deadlines(request.regime, request.kind, request.received_at, request.tz, extended=True)
        previous = request.respond_by
        request.extended, request.extension_reason, request.extended_at = True, reason.strip(), now
        request.respond_by = extended.respond_by.ends_at
        # The response is on time again, but a confirmation of receipt still overdue stays flagged.
        request.deadline_flag = deadline_status(request, now)
        request.save(update_fields=["extended", "extension_reason", "extended_at", "respond_by", "deadline_flag"])
        ledger_append(
            actor=actor, action="data_subject_request.extended", subject=_subject(request),
            payload={"reason": request.extension_reason, "from": previous.isoformat(),
                     "to": request.respond_by.isoformat(), "notified_at": now.isoformat()},
        )  # fmt: skip
    return request


def _close(
    request: DataSubjectRequest, actor: Any, state: str, action: str, nature: str, payload: dict[str, Any]
) -> DataSubjectRequest:
    request.state, request.responded_at, request.response_nature, request.closed_by = (
        state, timezone.now(), nature, actor,
    )  # fmt: skip
    request.save(update_fields=["state", "responded_at", "response_nature", "closed_by", "denial_basis"])
    ledger_append(
        actor=actor, action=action, subject=_subject(request),
        payload={"nature": nature, "on_time": request.responded_at <= request.respond_by, **payload},
    )  # fmt: skip
    _shred_if_person_erased(actor, request)
    return request


def _shred_if_person_erased(actor: Any, request: DataSubjectRequest) -> None:
    """A request of a person erased meanwhile (under another request of the project) kept its
    sealed identifiers while it was open: shred them as it closes."""
    from audits.ledger.models import DataSubjectKey

    mine = {h["key_hash"] for h in request.identifier_hashes}
    erased_by = [
        other.pk
        for other in DataSubjectRequest.objects.filter(project=request.project, erased_at__isnull=False)
        .exclude(pk=request.pk)
        .order_by("pk")
        if mine & {h["key_hash"] for h in other.identifier_hashes}
    ]
    if erased_by and DataSubjectKey.objects.filter(ref=request.subject_ref, key__isnull=False).exists():
        data_subject_erase(
            actor=actor, subject_ref=request.subject_ref,
            reason=f"the person was erased under data-subject request {erased_by[0]}",
        )  # fmt: skip


def dsr_deny(*, actor: Any, request: DataSubjectRequest, basis: str, nature: str = "") -> DataSubjectRequest:
    """Deny an open request, with the basis (e.g. identity could not be verified; GDPR Art.
    12(5) manifestly unfounded; a CCPA §1798.105(d) exception). Logged in the request log."""
    _require_officer(actor, request.project, "denying a request")
    if not basis.strip():
        raise _invalid("basis", "a denial needs its basis")
    with transaction.atomic():
        request = _locked(request)
        _require_state(request, OPEN_STATES, "a denial")
        request.denial_basis = basis.strip()
        return _close(
            request, actor, RequestState.DENIED, "data_subject_request.denied", nature.strip() or "denied",
            {"basis": request.denial_basis},
        )  # fmt: skip


def dsr_withdraw(*, actor: Any, request: DataSubjectRequest, reason: str) -> DataSubjectRequest:
    """The requester withdrew the request."""
    _require_officer(actor, request.project, "recording a withdrawal")
    if not reason.strip():
        raise _invalid("reason", "say how the withdrawal was received")
    with transaction.atomic():
        request = _locked(request)
        _require_state(request, OPEN_STATES, "a withdrawal")
        return _close(
            request, actor, RequestState.WITHDRAWN, "data_subject_request.withdrawn", "withdrawn by the requester",
            {"reason": reason.strip()},
        )  # fmt: skip


def dsr_complete(*, actor: Any, request: DataSubjectRequest, nature: str) -> DataSubjectRequest:
    """Close a searched request with the nature of the response sent. An access or know request
    needs its package issued; an erasure or delete request its erasure done (or a search that
    found nothing)."""
    _require_officer(actor, request.project, "completing a request")
    if not nature.strip():
        raise _invalid("nature", "describe the response sent")
    with transaction.atomic():
        request = _locked(request)
        _require_state(request, [RequestState.SEARCHED], "completion")
        if request.kind in ACCESS_KINDS and not request.package_issued_at:
            raise Conflict("package_missing", f"issue the access package of request {request.pk} first")
        if request.kind in ERASURE_KINDS and request.erased_at is None and request.findings.get("found"):
            raise Conflict("erasure_missing", f"request {request.pk} found the person's data: erase it first")
        return _close(
            request, actor, RequestState.COMPLETED, "data_subject_request.completed", nature.strip(),
            {"package_sha256": request.package_sha256 or None, "erased": request.erased_at is not None},
        )  # fmt: skip


# --- erasure ----------------------------------------------------------------------------------


def _active_hold(request: DataSubjectRequest) -> LegalHold | None:
    mine = {h["key_hash"] for h in request.identifier_hashes}
    for hold in LegalHold.objects.filter(project=request.project, released_at__isnull=True).order_by("placed_at"):
        if not hold.identifier_hashes or mine & {h["key_hash"] for h in hold.identifier_hashes}:
            return hold
    return None


def dsr_erase(*, actor: Any, request: DataSubjectRequest) -> DataSubjectRequest:
    """Erase the person (GDPR Art. 17, CCPA delete), in one transaction:

    - every live dataset version of the project that the index finds holding them is replaced by
      a derived version without the records holding one of their identifiers (lineage
      ``erased``, a fresh PII scan); the old version is marked erased and its blob deleted once
      the transaction commits (``registry.services.dataset_version_erase_records``);
    - every model version trained on a replaced version (or fine-tuned from one) gets an open
      ``ModelReview``;
    - the request's vault key is shredded: its sealed identifiers become unreadable.

    Refused under an active legal hold of the project or the person: the refusal, with the hold's
    reason, is itself ledgered. Refused (changing nothing) when the index finds nothing.
    """
    from governance.services import PolicyViolation
    from registry.services import dataset_version_erase_records

    _require_officer(actor, request.project, "erasing a data subject")
    refusal: DomainError | None = None
    with transaction.atomic():
        request = _locked(request)
        if request.kind not in ERASURE_KINDS:
            raise Conflict("wrong_kind", f"erasure answers an erasure or delete request, not {request.kind}")
        _require_state(request, [RequestState.SEARCHED], "erasure")
        if request.erased_at is not None:
            raise Conflict("already_erased", f"request {request.pk} was carried out on {request.erased_at:%Y-%m-%d}")
        hold = _active_hold(request)
        if hold is not None:
            scope = "the person" if hold.identifier_hashes else f"project {request.project.slug}"
            ledger_append(
                actor=actor, action="data_subject_request.erasure_refused", subject=_subject(request),
                payload={"legal_hold": hold.pk, "scope": "person" if hold.identifier_hashes else "project",
                         "reason": hold.reason},
            )  # fmt: skip
            refusal = PolicyViolation(
                "legal_hold", f"erasure refused: legal hold {hold.pk} on {scope} is active ({hold.reason})"
            )
        else:
            _erase(actor, request, dataset_version_erase_records)
    if refusal is not None:
        raise refusal
    return request


def _erase(actor: Any, request: DataSubjectRequest, erase_records: Callable[..., Any]) -> None:
    matches = _matcher(_identifiers_of(request))
    index = _index_versions(request.project, request.identifier_hashes)
    if not index:
        raise Conflict(
            "nothing_to_erase",
            f"no dataset version of project {request.project.slug} holds this person; nothing erased",
        )
    reason = f"erasure of data-subject request {request.pk}"
    versions = list(DatasetVersion.objects.filter(pk__in=index).select_related("dataset__project").order_by("pk"))
    found = {version.pk: {r.number for r in _person_records(version, matches)} for version in versions}
    _refuse_unmatched(request, [v for v in versions if not found[v.pk]], "the erasure")
    replaced: list[dict[str, Any]] = []
    for version in versions:
        numbers = found[version.pk]
        new = erase_records(actor=actor, version=version, record_numbers=numbers, reason=reason)
        replaced.append({"old": version.pk, "new": new.pk if new else None, "records_removed": len(numbers)})
    models = models_trained_on(request.project, [r["old"] for r in replaced])
    reviews = []
    for model_version_id, lineage in models.items():
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
    # Shred this request's vault key, and those of the person's closed earlier requests (their
    # sealed identifiers are personal data too); open ones keep theirs until they close.
    from audits.ledger.models import DataSubjectKey

    mine = {h["key_hash"] for h in request.identifier_hashes}
    refs = [request.subject_ref] + [
        other.subject_ref
        for other in DataSubjectRequest.objects.filter(project=request.project)
        .exclude(pk=request.pk)
        .exclude(state__in=OPEN_STATES)
        if mine & {h["key_hash"] for h in other.identifier_hashes}
    ]
    live = set(DataSubjectKey.objects.filter(ref__in=refs, key__isnull=False).values_list("ref", flat=True))
    shredded = [ref for ref in refs if ref in live]
    for ref in shredded:
        data_subject_erase(actor=actor, subject_ref=ref, reason=reason)
    request.erased_at = timezone.now()
    request.erasure = {"replaced": replaced, "model_reviews": reviews,
                       "model_versions": list(models), "vault_keys_shredded": shredded}  # fmt: skip
    request.save(update_fields=["erased_at", "erasure"])
    ledger_append(actor=actor, action="data_subject_request.erased", subject=_subject(request), payload=request.erasure)


# --- legal holds and model reviews ------------------------------------------------------------


def legal_hold_place(
    *,
    actor: Any,
    project: Project,
    reason: str,
    identifiers: list[dict[str, str]] | None = None,
    request: DataSubjectRequest | None = None,
) -> LegalHold:
    """Stop erasure in ``project``: of everyone (no identifiers, no request), or of one person,
    named by ``identifiers`` (kept as keyed hashes only) or by an existing ``request``."""
    _require_officer(actor, project, "placing a legal hold")
    if not reason.strip():
        raise _invalid("reason", "a legal hold needs its reason")
    if request is not None and request.project_id != project.pk:
        raise _invalid("request", f"request {request.pk} belongs to another project")
    named = _hashes(_normalise_identifiers(identifiers)) if identifiers else []
    if request is not None:
        named += request.identifier_hashes
    pairs = sorted({(h["kind"], h["key_hash"]) for h in named})
    hashes = [{"kind": kind, "key_hash": key_hash} for kind, key_hash in pairs]
    with transaction.atomic():
        hold = LegalHold.objects.create(
            project=project, identifier_hashes=hashes, reason=reason.strip(), placed_by=actor
        )
        ledger_append(
            actor=actor, action="legal_hold.placed", subject=Subject("legal_hold", str(hold.pk)),
            payload={"project": project.slug, "scope": "person" if hashes else "project",
                     "key_hashes": [h["key_hash"] for h in hashes], "reason": hold.reason},
        )  # fmt: skip
    return hold


def legal_hold_release(*, actor: Any, hold: LegalHold, reason: str) -> LegalHold:
    _require_officer(actor, hold.project, "releasing a legal hold")
    if not reason.strip():
        raise _invalid("reason", "say why the hold ends")
    with transaction.atomic():
        hold = LegalHold.objects.select_for_update().select_related("project").get(pk=hold.pk)
        if hold.released_at is not None:
            raise Conflict("already_released", f"legal hold {hold.pk} was released on {hold.released_at:%Y-%m-%d}")
        hold.released_at, hold.released_by, hold.release_reason = timezone.now(), actor, reason.strip()
        hold.save(update_fields=["released_at", "released_by", "release_reason"])
        ledger_append(
            actor=actor, action="legal_hold.released", subject=Subject("legal_hold", str(hold.pk)),
            payload={"reason": hold.release_reason},
        )  # fmt: skip
    return hold


def model_review_close(*, actor: Any, review: ModelReview, outcome: str, note: str) -> ModelReview:
    """A compliance officer's outcome for a model version trained on erased data: ``retrained``,
    ``retired`` or ``kept`` (the note documents why it need not be retrained)."""
    _require_officer(actor, review.project, "closing a model review")
    if outcome not in ReviewOutcome.values:
        raise _invalid("outcome", f"one of {', '.join(ReviewOutcome.values)}, got {outcome!r}")
    if not note.strip():
        raise _invalid("note", "document the outcome")
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


# --- deadlines --------------------------------------------------------------------------------


def deadline_status(request: DataSubjectRequest, now: datetime) -> str:
    """The worst of the request's open deadlines at ``now``: the response, and the confirmation
    of receipt while it is not given."""
    statuses = [dl.status(request.respond_by, now, soon=DUE_SOON)]
    if request.confirm_by is not None and request.receipt_confirmed_at is None:
        statuses.append(dl.status(request.confirm_by, now, soon=DUE_SOON))
    return max(statuses, key=lambda s: _FLAG_RANK[DeadlineFlag(s)])


def dsr_deadlines_flag(*, actor: Any, now: datetime | None = None) -> list[int]:
    """Flag open requests whose deadline is near (within ``DUE_SOON``) or past, and tell the
    project's compliance officers by mail after commit. Idempotent: a request is flagged and
    notified once per change of its flag (a conditional update claims each change). Returns the
    ids of the requests whose flag changed."""
    now = _now(now)
    changed = []
    for request in DataSubjectRequest.objects.filter(state__in=OPEN_STATES).select_related("project"):
        flag = deadline_status(request, now)
        if flag == request.deadline_flag:
            continue
        with transaction.atomic():
            claimed = DataSubjectRequest.objects.filter(pk=request.pk, deadline_flag=request.deadline_flag).update(
                deadline_flag=flag, flagged_at=now
            )
            if not claimed:
                continue  # another run flagged it first
            worse = _FLAG_RANK[DeadlineFlag(flag)] > _FLAG_RANK[DeadlineFlag(request.deadline_flag)]
            request.deadline_flag = flag
            ledger_append(
                actor=actor, action="data_subject_request.deadline_flagged", subject=_subject(request),
                payload={"flag": flag, "at": now.isoformat(), **_deadline_payload(request)},
            )  # fmt: skip
            if worse and flag != DeadlineFlag.ON_TIME:
                transaction.on_commit(lambda r=request: _notify_officers(r))
        changed.append(request.pk)
    return changed


def _notify_officers(request: DataSubjectRequest) -> None:
    """After commit: mail the compliance officers of the project (no personal data in the mail)."""
    from django.core.mail import send_mail
    from guardian.shortcuts import get_users_with_perms

    holders = get_users_with_perms(request.project, only_with_perms_in=[Role.COMPLIANCE_OFFICER.codename])
    recipients = sorted({u.email for u in holders if u.email})
    if not recipients:
        return
    flag = request.deadline_flag.replace("_", " ")
    send_mail(
        subject=f"Data-subject request #{request.pk} is {flag}",
        message=(
            f"The {request.get_regime_display()} {request.kind} request #{request.pk} in project "
            f"{request.project.slug} ({request.state}) is {flag}.\n"
            f"Respond by: {request.respond_by:%Y-%m-%d %H:%M %Z}\n"
            + (
                f"Confirm receipt by: {request.confirm_by:%Y-%m-%d %H:%M %Z}\n"
                if request.confirm_by and not request.receipt_confirmed_at
                else ""
            )
            + f"/api/v1/privacy/requests/{request.pk}\n"
        ),
        from_email=None,
        recipient_list=recipients,
        fail_silently=True,
    )
