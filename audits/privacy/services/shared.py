"""What the request workflow's services share: the role check, the request's digest and ledger
subject, locking and state checks, input checks, and opening the sealed identifiers."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone

from audits.ledger.services import ERASED, Subject, vault_open
from audits.privacy import deadlines as dl
from audits.privacy.models import DataSubjectRequest, Regime
from common.digests import canonical_digest
from common.errors import Conflict, DomainError
from governance.models import Project
from governance.permissions import require_project_role
from governance.roles import Role
from registry.models import DatasetVersion


def invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


def require_officer(actor: Any, project: Project, what: str) -> None:
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


def subject(request: DataSubjectRequest) -> Subject:
    return Subject(type="data_subject_request", id=str(request.pk), digest=request_digest(request))


def locked(request: DataSubjectRequest) -> DataSubjectRequest:
    return DataSubjectRequest.objects.select_for_update().select_related("project").get(pk=request.pk)


def require_state(request: DataSubjectRequest, states: Iterable[str], doing: str) -> None:
    states = tuple(states)
    if request.state not in states:
        wanted = " or ".join(states)
        raise Conflict(
            "invalid_transition",
            f"request {request.pk} is {request.state}; {doing} needs it {wanted}",
        )


def aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise invalid(name, f"a datetime is needed, got {type(value).__name__}")
    if timezone.is_naive(value):
        raise invalid(name, f"must be timezone-aware, got naive {value.isoformat()}")
    return value


def now_or(now: datetime | None) -> datetime:
    return timezone.now() if now is None else aware("now", now)


def deadlines_of(regime: str, kind: str, received_at: datetime, tz: str, *, extended: bool = False) -> dl.Deadlines:
    try:
        if regime == Regime.GDPR:
            deadlines = dl.gdpr_deadlines(received_at, tz=tz)
        else:
            deadlines = dl.ccpa_deadlines(received_at, kind=kind, tz=tz)
        return deadlines.extend() if extended else deadlines
    except ValueError as exc:
        raise Conflict("no_extension", str(exc)) if extended else invalid("tz", str(exc)) from None


def deadline_payload(request: DataSubjectRequest) -> dict[str, Any]:
    return {
        "confirm_by": request.confirm_by.isoformat() if request.confirm_by else None,
        "respond_by": request.respond_by.isoformat(),
        "extension_notice_by": request.extension_notice_by.isoformat() if request.extension_notice_by else None,
        "extended": request.extended,
    }


def identifiers_of(request: DataSubjectRequest) -> list[dict[str, str]]:
    value = vault_open(request.identifiers_sealed)
    if value == ERASED:
        raise Conflict("subject_erased", f"the identifiers of request {request.pk} were erased (crypto-shredded)")
    return value


def refuse_unmatched(request: DataSubjectRequest, unmatched: list[DatasetVersion], what: str) -> None:
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
