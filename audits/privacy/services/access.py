"""The access package (GDPR Art. 15, CCPA right to know): a copy of the person's records and what
the law says must go with it. Only its digest is kept; the content goes to the caller alone."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from audits.privacy import selectors
from audits.privacy.identifiers import ENTITY_OF_KIND, finder
from audits.privacy.models import ACCESS_KINDS, DataSubjectRequest, Regime, RequestState
from audits.privacy.services.shared import (
    identifiers_of,
    invalid,
    locked,
    refuse_unmatched,
    require_officer,
    require_state,
    subject,
)
from common.errors import Conflict
from registry.models import DatasetVersion

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


def _controller() -> dict[str, str]:
    """Who answers: the organisation (its profile), not the project the data was found in."""
    from governance.selectors import organisation_profile

    profile = organisation_profile()
    return {"name": profile.controller_name, "address": profile.controller_address,
            "contact": profile.controller_contact(), "data_protection_officer": profile.dpo_shown()}  # fmt: skip


def package_sha256(package: dict[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(package)).hexdigest()


def dsr_access_package(*, actor: Any, request: DataSubjectRequest) -> tuple[dict[str, Any], str]:
    """The GDPR Art. 15 / CCPA right-to-know package, as JSON: a copy of the person's records in
    the current (not erased) dataset versions found, of the free text of the project's incidents
    that names them (each field that does, whole, as a record is) and of the turns of its
    deployments' transcripts that do (prompt and completion, as kept), the purposes,
    categories of data, recipients, storage periods, sources, third-country transfers, the model
    versions and deployments derived from the data, the person's rights and the automated
    decision-making statement.

    Returns (package, SHA-256 of its RFC 8785 form). Only the digest is recorded, in the row and
    the ledger; the content goes to the caller alone. Records are the ones holding one of the
    identifiers as a whole token (see ``audits.privacy.identifiers.finder``)."""
    require_officer(actor, request.project, "preparing an access package")
    with transaction.atomic():
        request = locked(request)
        if request.kind not in ACCESS_KINDS:
            raise Conflict("wrong_kind", f"an access package answers an access or know request, not {request.kind}")
        require_state(request, [RequestState.SEARCHED], "an access package")
        find = finder(identifiers_of(request))
        findings = request.findings
        found_ids = [v["id"] for v in findings["dataset_versions"]]
        versions = list(
            DatasetVersion.objects.filter(pk__in=found_ids, erased_at__isnull=True)
            .select_related("dataset")
            .order_by("dataset__slug", "number")
        )
        records, version_rows = [], []
        indexed_now = selectors.index_versions(request.project, request.identifier_hashes)
        held = {version.pk: selectors.person_records(version, find) for version in versions}
        unmatched = [v for v in versions if v.pk in indexed_now and not held[v.pk]]
        refuse_unmatched(request, unmatched, "the access package")
        for version in versions:
            mine = held[version.pk]
            version_rows.append({"id": version.pk, "dataset": str(version.dataset), "number": version.number,
                                 "records": len(mine)})  # fmt: skip
            records += [
                {"dataset_version": version.pk, "dataset": str(version.dataset), "version": version.number,
                 "record": r.number, "fields": r.fields}
                for r in mine
            ]  # fmt: skip
        incidents = [
            {"id": incident.pk, "reference": incident.reference, "fields": {f: getattr(incident, f) for f in fields}}
            for incident, fields in selectors.incidents_naming(request.project, find)
        ]
        transcripts = [
            {"deployment": deployment.name, "deployment_id": deployment.pk, "time": turn.time,
             "request_id": turn.request_id, "prompt": turn.prompt, "completion": turn.completion}
            for deployment, turns in selectors.transcripts_naming(request.project, find)
            for turn in turns
        ]  # fmt: skip
        datasets = sorted({v.dataset for v in versions}, key=lambda d: d.slug)
        kinds = sorted(
            {k for v in findings["dataset_versions"] if v["id"] in {x.pk for x in versions} for k in v["kinds"]}
        )
        package = {
            "request": {"id": request.pk, "regime": request.regime, "kind": request.kind,
                        "received_at": request.received_at.isoformat(), "project": request.project.slug},
            "controller": _controller(),
            "project": {"slug": request.project.slug, "name": request.project.name},
            "generated_at": timezone.now().isoformat(),
            "data_held": bool(records or incidents or transcripts),
            "dataset_versions": version_rows,
            "records": records,
            "incidents": incidents,
            "transcripts": transcripts,
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
            actor=actor, action="data_subject_request.access_package_issued", subject=subject(request),
            payload={"sha256": digest, "records": len(records), "dataset_versions": [v.pk for v in versions],
                     "model_versions": [m["id"] for m in findings["model_versions"]],
                     "deployments": [d["id"] for d in findings["deployments"]],
                     "incidents": [i["id"] for i in incidents], "transcript_turns": len(transcripts)},
        )  # fmt: skip
    return package, digest


def dsr_letter_record(
    *, actor: Any, request: DataSubjectRequest, sha256: str, package_sha256: str, letter_kind: str
) -> DataSubjectRequest:
    """Record the signed letter (PDF) that answers an access or know request in plain language,
    with the access package embedded as its annex: its SHA-256 in the row and in the ledger
    (``data_subject_request.letter_issued``, beside the package's digest). The letter is made and
    signed by ``audits.reports.letters`` after ``dsr_access_package`` issued the package it embeds;
    ``package_sha256`` must be the package issued last, so the ledger ties the letter to it.
    Like the package, the letter's content goes to the caller alone."""
    require_officer(actor, request.project, "issuing a letter")
    for name, value in (("sha256", sha256), ("package_sha256", package_sha256)):
        if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
            raise invalid(name, "a SHA-256 in lowercase hex (64 characters)")
    if not letter_kind.strip():
        raise invalid("letter_kind", "say which letter it is")
    with transaction.atomic():
        request = locked(request)
        if request.kind not in ACCESS_KINDS:
            raise Conflict("wrong_kind", f"a letter answers an access or know request, not {request.kind}")
        require_state(request, [RequestState.SEARCHED], "a letter")
        if request.package_sha256 != package_sha256:
            raise Conflict(
                "package_changed",
                f"the letter embeds package {package_sha256[:12]}…, but request {request.pk}'s last package is "
                f"{(request.package_sha256 or 'none')[:12]}: issue the letter again",
            )
        request.letter_sha256, request.letter_issued_at = sha256, timezone.now()
        request.save(update_fields=["letter_sha256", "letter_issued_at"])
        ledger_append(
            actor=actor, action="data_subject_request.letter_issued", subject=subject(request),
            payload={"sha256": sha256, "package_sha256": package_sha256, "letter": letter_kind.strip()},
        )  # fmt: skip
    return request
