"""Intake of a data-subject request: receiving it (its deadline clock starts), confirming
receipt, verifying the requester's identity, and searching for the person."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append, vault_seal
from audits.privacy import selectors
from audits.privacy.identifiers import finder, identifier_hashes, normalise_identifiers
from audits.privacy.models import (
    KINDS_BY_REGIME,
    OPEN_STATES,
    UNVERIFIED_KINDS,
    Channel,
    DataSubjectRequest,
    RequestState,
)
from audits.privacy.services.shared import (
    aware,
    deadline_payload,
    deadlines_of,
    identifiers_of,
    invalid,
    locked,
    require_officer,
    require_state,
    subject,
)
from common.errors import Conflict
from governance.models import Project

# A request dated earlier is a typing error (and years near 1 overflow in the time-zone arithmetic).
EARLIEST_RECEIVED = datetime(2000, 1, 1, tzinfo=UTC)


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
    require_officer(actor, project, "receiving a data-subject request")
    if regime not in KINDS_BY_REGIME:
        raise invalid("regime", f"one of {', '.join(KINDS_BY_REGIME)}, got {regime!r}")
    if kind not in KINDS_BY_REGIME[regime]:
        raise invalid("kind", f"a {regime} request is one of {', '.join(KINDS_BY_REGIME[regime])}, got {kind!r}")
    if channel not in Channel.values:
        raise invalid("channel", f"one of {', '.join(Channel.values)}, got {channel!r}")
    aware("received_at", received_at)
    if received_at > timezone.now() + timedelta(minutes=5):
        raise invalid("received_at", f"{received_at.isoformat()} is in the future")
    if received_at < EARLIEST_RECEIVED:
        raise invalid("received_at", f"{received_at.isoformat()} is before {EARLIEST_RECEIVED:%Y-%m-%d}")
    clean = normalise_identifiers(identifiers)
    deadlines = deadlines_of(regime, kind, received_at, tz)
    hashes = identifier_hashes(clean)
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
            actor=actor, action="data_subject_request.received", subject=subject(request),
            payload={"project": project.slug, "regime": regime, "kind": kind, "channel": channel,
                     "received_at": received_at.isoformat(), "identifiers": sealed, "key_hashes": hashes,
                     "deadlines": deadline_payload(request)},
        )  # fmt: skip
    return request


def dsr_confirm_receipt(*, actor: Any, request: DataSubjectRequest) -> DataSubjectRequest:
    """Record that receipt was confirmed to the requester (CCPA §7021(a): within 10 business days)."""
    require_officer(actor, request.project, "confirming receipt")
    with transaction.atomic():
        request = locked(request)
        require_state(request, OPEN_STATES, "confirming receipt")
        if request.confirm_by is None:
            raise Conflict("no_confirmation", f"a {request.regime} {request.kind} request has no confirmation step")
        if request.receipt_confirmed_at is not None:
            raise Conflict("already_confirmed", f"receipt was confirmed on {request.receipt_confirmed_at:%Y-%m-%d}")
        request.receipt_confirmed_at = timezone.now()
        request.save(update_fields=["receipt_confirmed_at"])
        ledger_append(
            actor=actor, action="data_subject_request.receipt_confirmed", subject=subject(request),
            payload={"late": request.receipt_confirmed_at > request.confirm_by},
        )  # fmt: skip
    return request


def dsr_verify_identity(*, actor: Any, request: DataSubjectRequest, method: str) -> DataSubjectRequest:
    """Record that the requester's identity was verified, how and by whom. Describe the method
    ("reply from the address on file"), not the evidence: ``method`` is kept in clear.

    A CCPA opt-out or limit request (``UNVERIFIED_KINDS``) never needs this step (the regulations
    forbid requiring it); a business that verified anyway may still record it here."""
    require_officer(actor, request.project, "verifying a requester's identity")
    if not method.strip():
        raise invalid("method", "say how the identity was verified")
    with transaction.atomic():
        request = locked(request)
        require_state(request, [RequestState.RECEIVED], "verifying identity")
        request.state, request.verified_at, request.verified_by = RequestState.IDENTITY_VERIFIED, timezone.now(), actor
        request.verification_method = method.strip()[:200]
        request.save(update_fields=["state", "verified_at", "verified_by", "verification_method"])
        ledger_append(
            actor=actor, action="data_subject_request.identity_verified", subject=subject(request),
            payload={"method": request.verification_method},
        )  # fmt: skip
    return request


def dsr_search(*, actor: Any, request: DataSubjectRequest) -> DataSubjectRequest:
    """Find the person: the subject index (keyed hashes) gives the project's dataset versions
    holding them; lineage gives the model versions trained on those (and fine-tuned from them) and
    the deployments of those. Stored as ``findings``; may be run again while the request is open.
    Finding nothing is a result, said in ``findings["message"]``. Versions whose PII scan has not
    succeeded are listed as ``unscanned_versions``: the index cannot speak for them.

    Needs a verified identity, except for a CCPA opt-out or limit request (``UNVERIFIED_KINDS``),
    which is searched (where the business wants to know where the person's data lies before acting)
    straight from ``received``."""
    require_officer(actor, request.project, "searching for a data subject")
    with transaction.atomic():
        request = locked(request)
        searchable = [RequestState.IDENTITY_VERIFIED, RequestState.SEARCHED]
        if request.kind in UNVERIFIED_KINDS:
            searchable.insert(0, RequestState.RECEIVED)
        require_state(request, searchable, "the search")
        findings = selectors.subject_findings(request.project, request.identifier_hashes)
        # Incidents are read with the identifiers themselves (their free text is not indexed); the
        # findings name each one by its reference and fields, never by its text.
        find = finder(identifiers_of(request))
        incidents = selectors.incidents_naming(request.project, find)
        findings["incidents"] = [{"id": i.pk, "reference": i.reference, "fields": f} for i, f in incidents]
        if incidents:
            findings["message"] += f"; {len(incidents)} incident(s) of the project name them in their free text"
            findings["found"] = True
        # So are the deployments' transcripts: each deployment by id and name, with how many turns.
        transcripts = selectors.transcripts_naming(request.project, find)
        findings["transcripts"] = [{"id": d.pk, "name": d.name, "turns": len(turns)} for d, turns in transcripts]
        if transcripts:
            count = sum(len(turns) for _, turns in transcripts)
            findings["message"] += f"; {count} turn(s) of {len(transcripts)} deployment(s)' transcripts name them"
            findings["found"] = True
        request.state, request.searched_at, request.findings = RequestState.SEARCHED, timezone.now(), findings
        request.save(update_fields=["state", "searched_at", "findings"])
        ledger_append(
            actor=actor, action="data_subject_request.searched", subject=subject(request),
            payload={"key_hashes": [h["key_hash"] for h in request.identifier_hashes], "found": findings["found"],
                     "dataset_versions": [v["id"] for v in findings["dataset_versions"]],
                     "model_versions": [m["id"] for m in findings["model_versions"]],
                     "deployments": [d["id"] for d in findings["deployments"]],
                     "incidents": [i["id"] for i in findings["incidents"]],
                     "transcripts": [[t["id"], t["turns"]] for t in findings["transcripts"]],
                     "unscanned_versions": findings["unscanned_versions"]},
        )  # fmt: skip
    return request
