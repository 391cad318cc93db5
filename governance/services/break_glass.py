"""Break-glass: an emergency approval by a platform admin, and the compliance officer's review of it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.errors import Conflict, DomainError, PermissionDenied
from governance.permissions import can_administer
from governance.roles import Role
from governance.rules import SEPARATION_OF_DUTIES_CODES, PolicyViolation, approval_subject, refuse_own_party
from governance.selectors import parties_of
from governance.services.approvals import approval_hook_run
from governance.services.decisions import record_duties_refusal
from governance.services.policy_sets import policy_set_in_force


def approval_break_glass(*, actor: AbstractBaseUser, request_id: int, justification: str) -> Any:
    """Approve a pending request in an emergency, bypassing its slots. Only a platform admin of the
    project (or a global admin), never the requester, with a written justification. The entry is
    flagged in the ledger and a compliance officer must review it within BREAK_GLASS_REVIEW_HOURS.
    A refusal under separation of duties is recorded in the ledger, as a decision's is."""
    try:
        return _approval_break_glass(actor=actor, request_id=request_id, justification=justification)
    except PolicyViolation as exc:
        if exc.code in SEPARATION_OF_DUTIES_CODES:
            record_duties_refusal(actor, request_id, exc, path="break_glass")
        raise


def _approval_break_glass(*, actor: AbstractBaseUser, request_id: int, justification: str) -> Any:
    from django.conf import settings

    from governance.models import ApprovalDecision, ApprovalRequest, ApprovalState, BreakGlassReview
    from governance.subjects import subject_type as get_type

    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().select_related("project").filter(pk=request_id).first()
        if request is None:
            raise DomainError("not_found", f"no approval request {request_id}", status_code=404)
        if not can_administer(actor, request.project):
            raise PermissionDenied("permission_denied", f"break-glass is for platform admins of {request.project.slug}")
        if actor.pk == request.requester_id:
            raise PolicyViolation(
                "self_approval", "separation of duties: not even break-glass approves your own request"
            )
        if len(justification.strip()) < 20:
            raise DomainError(
                "invalid_input", "break-glass needs a justification of at least 20 characters",
                fields={"justification": ["too short"]},
            )  # fmt: skip
        if request.state != ApprovalState.PENDING:
            raise Conflict("request_closed", f"request {request.pk} is {request.state}")
        if request.expires_at is not None and request.expires_at <= timezone.now():
            raise Conflict("request_expired", f"request {request.pk} expired at {request.expires_at:%Y-%m-%d %H:%M}")
        earlier = list(request.decisions.values_list("approver_id", flat=True))
        kind = get_type(request.subject_type)
        obj = kind.get(request.subject_id)
        authors = list(kind.authors(obj)) if kind.authors is not None and obj is not None else []
        parties = parties_of([actor.pk, request.requester_id, *authors, *earlier])
        refuse_own_party(actor, request, parties, authors, how="not even break-glass: ")
        if any(parties[approver] == parties[actor.pk] for approver in earlier):
            raise PolicyViolation(
                "already_decided",
                "separation of duties: you have already decided on this request; "
                "another platform admin may break the glass",
            )
        if obj is None or kind.digest(obj) != request.subject_digest:
            raise Conflict("stale_digest", f"the {request.subject_type} changed since the request")
        refused = kind.not_now(obj, request.action) if kind.not_now is not None else None
        if refused:
            raise Conflict("not_now", f"{refused} (reject or withdraw this request)")
        policy_hash = policy_set_in_force().hash
        due = timezone.now() + timezone.timedelta(hours=settings.BREAK_GLASS_REVIEW_HOURS)
        appended = ledger_append(
            actor=actor, action="approval.break_glass", subject=approval_subject(request), policy_hash=policy_hash,
            payload={"request": request.pk, "justification": justification, "review_due": due.isoformat(),
                     "break_glass": True},
        )  # fmt: skip
        ApprovalDecision.objects.create(
            request=request, approver=actor, role="break_glass", decision="approve", reason=justification,
            subject_digest=request.subject_digest, policy_hash=policy_hash, ledger_index=appended.index,
        )  # fmt: skip
        BreakGlassReview.objects.create(request=request, admin=actor, justification=justification, due_at=due)
        request.state, request.closed_at = ApprovalState.APPROVED, timezone.now()
        request.save(update_fields=["state", "closed_at"])
        approval_hook_run(request, actor)
    return request


def break_glass_review_close(*, actor: AbstractBaseUser, review_id: int, outcome: str, note: str) -> Any:
    """A compliance officer's verdict on a break-glass approval: ``upheld`` or ``revoked``. A
    refusal under separation of duties (the admin who broke the glass, or the requester, reviewing
    it) is recorded in the ledger."""
    from governance.models import BreakGlassReview

    try:
        return _break_glass_review_close(actor=actor, review_id=review_id, outcome=outcome, note=note)
    except PolicyViolation as exc:
        if exc.code in SEPARATION_OF_DUTIES_CODES:
            review = BreakGlassReview.objects.filter(pk=review_id).only("request_id").first()
            if review is not None:
                record_duties_refusal(actor, review.request_id, exc, path="break_glass_review")
        raise


def _break_glass_review_close(*, actor: AbstractBaseUser, review_id: int, outcome: str, note: str) -> Any:
    from governance.models import BreakGlassReview
    from governance.permissions import has_project_role

    if outcome not in ("upheld", "revoked"):
        raise DomainError("invalid_input", "outcome is upheld or revoked", fields={"outcome": [outcome]})
    if not note.strip():
        raise DomainError("invalid_input", "a review needs a note", fields={"note": ["may not be blank"]})
    with transaction.atomic():
        review = (
            BreakGlassReview.objects.select_for_update().select_related("request__project").filter(pk=review_id).first()
        )
        if review is None:
            raise DomainError("not_found", f"no break-glass review {review_id}", status_code=404)
        if not has_project_role(actor, review.request.project, Role.COMPLIANCE_OFFICER):
            raise PermissionDenied("permission_denied", "a compliance officer of the project closes the review")
        if review.closed_at is not None:
            raise Conflict("review_closed", f"the review was closed as {review.outcome}")
        if actor.pk in (review.admin_id, review.request.requester_id):
            who = "broke the glass" if actor.pk == review.admin_id else "made the request"
            raise PolicyViolation(
                "self_review", f"separation of duties: you {who}; another compliance officer reviews it"
            )
        review.closed_by, review.closed_at, review.outcome, review.note = actor, timezone.now(), outcome, note
        review.save(update_fields=["closed_by", "closed_at", "outcome", "note"])
        ledger_append(
            actor=actor, action="approval.break_glass_reviewed", subject=approval_subject(review.request),
            payload={"request": review.request_id, "outcome": outcome, "note": note,
                     "late": review.closed_at > review.due_at},
        )  # fmt: skip
    return review
