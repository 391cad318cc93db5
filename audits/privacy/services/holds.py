"""Legal holds: while one is active, erasure stops in its project, for everyone or for one person
(named by keyed hashes only)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from audits.privacy.identifiers import identifier_hashes, normalise_identifiers
from audits.privacy.models import DataSubjectRequest, LegalHold
from audits.privacy.services.shared import invalid, require_officer
from common.errors import Conflict
from governance.models import Project


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
    require_officer(actor, project, "placing a legal hold")
    if not reason.strip():
        raise invalid("reason", "a legal hold needs its reason")
    if request is not None and request.project_id != project.pk:
        raise invalid("request", f"request {request.pk} belongs to another project")
    named = identifier_hashes(normalise_identifiers(identifiers)) if identifiers else []
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
    require_officer(actor, hold.project, "releasing a legal hold")
    if not reason.strip():
        raise invalid("reason", "say why the hold ends")
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
