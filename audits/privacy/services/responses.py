"""Answering a request: the one extension the law allows, and closing it (denied, withdrawn,
completed). A closing request of a person erased meanwhile loses its sealed identifiers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audits.ledger.services import data_subject_erase, ledger_append
from audits.privacy.models import (
    ACCESS_KINDS,
    ERASURE_KINDS,
    OPEN_STATES,
    UNVERIFIED_KINDS,
    DataSubjectRequest,
    RequestState,
)
from audits.privacy.services.flagging import deadline_status
from audits.privacy.services.shared import (
    deadlines_of,
    invalid,
    locked,
    now_or,
    require_officer,
    require_state,
    subject,
)
from common.errors import Conflict

# Open requests whose answer has not been carried out: once the person is erased, the request can
# only be completed (denying or withdrawing it would record an answer that did not happen).
NOT_YET_ANSWERED = tuple(state for state in OPEN_STATES if state != RequestState.ERASED)


def dsr_extend(
    *, actor: Any, request: DataSubjectRequest, reason: str, now: datetime | None = None
) -> DataSubjectRequest:
    """The one extension the law allows (GDPR: two more months; CCPA know, delete, correct: 45
    more days), with its reason, before the first deadline (``extension_notice_by``): the
    requester is told now. Refused for a kind with no extension (CCPA opt-out)."""
    require_officer(actor, request.project, "extending a request")
    if not reason.strip():
        raise invalid("reason", "an extension needs its reason (it is told to the requester)")
    now = now_or(now)
    with transaction.atomic():
        request = locked(request)
        require_state(request, OPEN_STATES, "an extension")
        if request.extended:
            raise Conflict("already_extended", f"request {request.pk} was already extended; only once is allowed")
        if request.extension_notice_by is None:
            raise Conflict("no_extension", f"a {request.regime} {request.kind} request cannot be extended")
        if now > request.extension_notice_by:
            raise Conflict(
                "too_late",
                f"the extension had to be notified by {request.extension_notice_by.isoformat()} (the first deadline)",
            )
        extended = deadlines_of(request.regime, request.kind, request.received_at, request.tz, extended=True)
        previous = request.respond_by
        request.extended, request.extension_reason, request.extended_at = True, reason.strip(), now
        request.respond_by = extended.respond_by.ends_at
        # The response is on time again, but a confirmation of receipt still overdue stays flagged.
        request.deadline_flag = deadline_status(request, now)
        request.save(update_fields=["extended", "extension_reason", "extended_at", "respond_by", "deadline_flag"])
        ledger_append(
            actor=actor, action="data_subject_request.extended", subject=subject(request),
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
        actor=actor, action=action, subject=subject(request),
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
    require_officer(actor, request.project, "denying a request")
    if not basis.strip():
        raise invalid("basis", "a denial needs its basis")
    with transaction.atomic():
        request = locked(request)
        require_state(request, NOT_YET_ANSWERED, "a denial")
        request.denial_basis = basis.strip()
        return _close(
            request, actor, RequestState.DENIED, "data_subject_request.denied", nature.strip() or "denied",
            {"basis": request.denial_basis},
        )  # fmt: skip


def dsr_withdraw(*, actor: Any, request: DataSubjectRequest, reason: str) -> DataSubjectRequest:
    """The requester withdrew the request."""
    require_officer(actor, request.project, "recording a withdrawal")
    if not reason.strip():
        raise invalid("reason", "say how the withdrawal was received")
    with transaction.atomic():
        request = locked(request)
        require_state(request, NOT_YET_ANSWERED, "a withdrawal")
        return _close(
            request, actor, RequestState.WITHDRAWN, "data_subject_request.withdrawn", "withdrawn by the requester",
            {"reason": reason.strip()},
        )  # fmt: skip


def dsr_complete(*, actor: Any, request: DataSubjectRequest, nature: str) -> DataSubjectRequest:
    """Close a searched (or erased) request with the nature of the response sent. An access or
    know request needs its package issued; an erasure or delete request its erasure done (or a
    search that found nothing). A CCPA opt-out or limit request (``UNVERIFIED_KINDS``) is completed
    from any open state, without identity verification or a search (Cal. Code Regs. tit. 11,
    §7026(d), §7027(e)): ``nature`` says what was done (e.g. "stopped sale and sharing; third
    parties told")."""
    require_officer(actor, request.project, "completing a request")
    if not nature.strip():
        raise invalid("nature", "describe the response sent")
    with transaction.atomic():
        request = locked(request)
        if request.kind in UNVERIFIED_KINDS:
            require_state(request, NOT_YET_ANSWERED, "completion")
        else:
            require_state(request, [RequestState.SEARCHED, RequestState.ERASED], "completion")
        if request.kind in ACCESS_KINDS and not request.package_issued_at:
            raise Conflict("package_missing", f"issue the access package of request {request.pk} first")
        if request.kind in ERASURE_KINDS and request.erased_at is None and request.findings.get("found"):
            raise Conflict("erasure_missing", f"request {request.pk} found the person's data: erase it first")
        return _close(
            request, actor, RequestState.COMPLETED, "data_subject_request.completed", nature.strip(),
            {"package_sha256": request.package_sha256 or None, "erased": request.erased_at is not None,
             "identity_verified": request.verified_at is not None},
        )  # fmt: skip
