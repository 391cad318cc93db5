"""Approval decisions: a slot filled or a request rejected, under separation of duties."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.db import rows
from common.errors import Conflict, DomainError, PermissionDenied
from governance.models import Project
from governance.permissions import is_platform_admin, project_roles_held
from governance.rules import (
    SEPARATION_OF_DUTIES_CODES,
    PolicyViolation,
    approval_subject,
    evidence_or_raise,
    open_slot_roles,
    refuse_own_party,
    slots_filled,
)
from governance.selectors import parties_of
from governance.services.approvals import approval_hook_run, lapses_kept
from governance.services.policy_sets import policy_set_in_force

User = get_user_model()


def record_duties_refusal(actor: AbstractBaseUser, request_id: int, exc: DomainError, path: str = "decision") -> None:
    """A refusal under separation of duties is evidence an auditor asks for: it is recorded after
    the refused transaction rolled back (``separation_of_duties.refused``, not an approval entry).
    ``path`` names what was refused: ``decision``, ``break_glass`` or ``break_glass_review``."""
    from governance.models import ApprovalRequest

    request = ApprovalRequest.objects.filter(pk=request_id).first()
    if request is None:
        return
    with transaction.atomic():
        ledger_append(
            actor=actor, action="separation_of_duties.refused", subject=approval_subject(request),
            payload={"request": request.pk, "code": exc.code, "message": exc.message, "path": path},
        )  # fmt: skip


def approval_request_decide(
    *, actor: AbstractBaseUser, request_id: int, decision: str, reason: str, role: str | None = None
) -> Any:
    """Approve (fill one slot) or reject a pending request; a refusal under separation of duties
    is recorded in the ledger (see ``_approval_request_decide``)."""
    try:
        with lapses_kept():
            return _approval_request_decide(
                actor=actor, request_id=request_id, decision=decision, reason=reason, role=role
            )
    except PolicyViolation as exc:
        if exc.code in SEPARATION_OF_DUTIES_CODES:
            record_duties_refusal(actor, request_id, exc)
        raise


def _approval_request_locked(request_id: int) -> Any:
    """The request with its project and requester, its row locked for this transaction (on SQLite
    the transaction already holds the database's write lock). The decision's hot path: hand-written
    (common/db/rows.py) rather than a queryset compiled on every call."""
    from django.db import connection

    from governance.models import ApprovalRequest

    if not 0 <= request_id < 2**63:  # no such row; and past what the database's integers hold
        return None
    lock = " FOR UPDATE OF r" if connection.features.has_select_for_update_of else ""
    found = rows.fetch(
        f"SELECT {rows.columns(ApprovalRequest, 'r')}, {rows.columns(Project, 'p')}, {rows.columns(User, 'u')} "  # noqa: S608 (names from model metadata)
        f"FROM {rows.table(ApprovalRequest)} r INNER JOIN {rows.table(Project)} p ON p.id = r.project_id "
        f"INNER JOIN {rows.table(User)} u ON u.id = r.requester_id WHERE r.id = %s{lock}",
        [request_id],
    )
    if not found:
        return None
    request = rows.load(ApprovalRequest, found[0])
    request.project = rows.load(Project, found[0], rows.width(ApprovalRequest))
    request.requester = rows.load(User, found[0], rows.width(ApprovalRequest) + rows.width(Project))
    return request


def _approval_decisions(request: Any) -> list[Any]:
    """The request's decisions in order, each with its approver (as ``_approval_request_locked``)."""
    from governance.models import ApprovalDecision

    found = rows.fetch(
        f"SELECT {rows.columns(ApprovalDecision, 'd')}, {rows.columns(User, 'u')} "  # noqa: S608 (names from model metadata)
        f"FROM {rows.table(ApprovalDecision)} d "
        f"INNER JOIN {rows.table(User)} u ON u.id = d.approver_id WHERE d.request_id = %s ORDER BY d.created_at, d.id",
        [request.pk],
    )
    decisions = []
    for row in found:
        decision = rows.load(ApprovalDecision, row)
        decision.approver = rows.load(User, row, rows.width(ApprovalDecision))
        decision.request = request
        decisions.append(decision)
    return decisions


def _approval_request_decide(
    *, actor: AbstractBaseUser, request_id: int, decision: str, reason: str, role: str | None
) -> Any:
    """Approve (fill one slot) or reject a pending request.

    In one transaction, with the request row locked (so two approvers racing for the last slot
    cannot both fill it): the request must be pending and unexpired; the approver is not the
    requester and has not decided before; the subject's digest is unchanged; the evidence still
    holds; the approver holds a role with an open slot. A decision that fills the last slot
    approves the request; a rejection closes it. ``role`` picks the slot for an approver who holds
    more than one of the rule's roles (default: the first open one).
    """
    from governance.models import ApprovalDecision, ApprovalState
    from governance.subjects import subject_type as get_type

    if decision not in ("approve", "reject"):
        raise DomainError("invalid_input", "decision is approve or reject", fields={"decision": [decision]})
    if not reason.strip():
        raise DomainError("invalid_input", "a decision needs a reason", fields={"reason": ["may not be blank"]})
    # The policy set in force is read from disk and recorded (once per set) before the decision's
    # transaction: its check need not hold the write lock that every decision waits for.
    policy_hash = policy_set_in_force().hash
    with transaction.atomic():
        request = _approval_request_locked(request_id)
        if request is None:
            raise DomainError("not_found", f"no approval request {request_id}", status_code=404)
        # Who may decide comes before the request's state: a caller without a slot's role learns
        # nothing from this endpoint that reading the request would not tell them.
        if actor.pk == request.requester_id:
            raise PolicyViolation(
                "self_approval", "separation of duties: a requester never decides on their own request"
            )
        slots = request.rule["approvals"]
        roles_held = {role.value for role in project_roles_held(actor, request.project)}
        if not roles_held and not is_platform_admin(actor):  # may not even see it
            raise DomainError("not_found", f"no approval request {request_id}", status_code=404)
        held = [s["role"] for s in slots if s["role"] in roles_held]
        if not held:
            raise PermissionDenied(
                "not_an_approver", f"deciding needs one of the roles {', '.join(s['role'] for s in slots)}"
            )
        if role is not None:
            if role not in held:
                raise PermissionDenied(
                    "not_an_approver", f"you hold no {role} slot of this request: your slots are {', '.join(held)}"
                )
            held = [role]
        if request.state != ApprovalState.PENDING:
            raise Conflict("request_closed", f"request {request.pk} is {request.state}")
        if request.expires_at is not None and request.expires_at <= timezone.now():
            raise Conflict("request_expired", f"request {request.pk} expired at {request.expires_at:%Y-%m-%d %H:%M}")
        decisions = _approval_decisions(request)
        kind = get_type(request.subject_type)
        obj = kind.get(request.subject_id)
        authors = list(kind.authors(obj)) if kind.authors is not None and obj is not None else []
        parties = parties_of([actor.pk, request.requester_id, *authors, *(d.approver_id for d in decisions)])
        refuse_own_party(actor, request, parties, authors)
        if any(parties[d.approver_id] == parties[actor.pk] for d in decisions):
            raise PolicyViolation("already_decided", "separation of duties: one person fills one slot")
        current = kind.digest(obj) if obj is not None else None
        if current != request.subject_digest and decision == "approve":
            # A rejection needs no current digest: it closes a request that can no longer be approved.
            raise Conflict(
                "stale_digest",
                f"the {request.subject_type} changed since the request: approvals bind to its digest "
                "(reject or withdraw this request, then submit again)",
            )
        filled = slots_filled(decisions)
        open_roles = open_slot_roles(slots, filled, held)
        if decision == "approve" and not open_roles:
            which = "every slot your roles could fill is" if role is None else f"the {role} slot is"
            raise Conflict("slot_filled", f"{which} already filled")
        role = open_roles[0] if open_roles else held[0]
        if decision == "approve":
            refused = kind.not_now(obj, request.action) if kind.not_now is not None and obj is not None else None
            if refused:
                raise Conflict("not_now", f"{refused} (reject or withdraw this request)")
            evidence_or_raise(request.rule, request.subject_type, obj)
            filled[role] = filled.get(role, 0) + 1
        complete = all(filled.get(s["role"], 0) >= s["count"] for s in slots)
        new_state = ApprovalState.REJECTED if decision == "reject" else (
            ApprovalState.APPROVED if complete else ApprovalState.PENDING
        )  # fmt: skip
        if decision == "reject":
            entry_action = "approval.rejected"
        elif new_state == ApprovalState.APPROVED:
            entry_action = "approval.approved"
        else:
            entry_action = "approval.slot_filled"
        appended = ledger_append(
            actor=actor, action=entry_action, subject=approval_subject(request), policy_hash=policy_hash,
            payload={"request": request.pk, "decision": decision, "role": role, "reason": reason,
                     "state": new_state, "filled": filled},
        )  # fmt: skip
        made = ApprovalDecision(
            request=request, approver=actor, role=role, decision=decision, reason=reason,
            subject_digest=request.subject_digest, policy_hash=policy_hash, ledger_index=appended.index,
        )  # fmt: skip
        rows.insert(made)  # what made.save() writes, without compiling the query (common/db/rows.py)
        decisions.append(made)
        if new_state != request.state:
            request.state, request.closed_at = new_state, timezone.now()
            rows.update(request, ["state", "closed_at"])
            approval_hook_run(request, actor)
    # The answer shows the decisions: hand them over as a filled prefetch cache (what
    # prefetch_related leaves behind) rather than read them again; built after the commit, so
    # the next decision's transaction does not wait for it.
    loaded = request.decisions.all()
    loaded._result_cache, loaded._prefetch_done = decisions, True
    request._prefetched_objects_cache = {"decisions": loaded}
    return request
