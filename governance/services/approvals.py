"""Approval requests: submitted, withdrawn, expired, lapsed.

An approval is given to its subject's digest. Once a check finds an approved request about a
subject that no longer matches it (the subject changed, or was erased), the approval lapses for
good (``approvals_lapse``): state ``lapsed``, when and why, and an ``approval.lapsed`` entry. It
never counts again, even when the subject returns to the approved digest (a review flipped back).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.errors import Conflict, DomainError, PermissionDenied
from governance.permissions import SYSTEM_USERNAME, is_platform_admin, project_roles_held
from governance.rules import REQUESTER_ROLES, PolicyViolation, approval_subject, evidence_or_raise
from governance.services.policy_sets import policy_set_in_force

User = get_user_model()

# The subjects whose approvals a check lapsed inside the current ``lapses_kept`` block: a refusal
# rolls its transaction back, lapses included, and the block then records them again.
_LAPSES_SEEN: ContextVar[list[tuple[str, str]] | None] = ContextVar("approval_lapses_seen", default=None)


def _notify_approvers(request: Any) -> None:
    """After commit: tell the people who can fill a slot that a request waits for them, with the
    address of the request's admin page (under ``GOV_PUBLIC_URL``: a mail reader has no base URL)."""
    from django.conf import settings
    from django.core.mail import send_mail
    from django.urls import reverse
    from guardian.shortcuts import get_users_with_perms

    roles = {slot["role"] for slot in request.rule["approvals"]}
    holders = get_users_with_perms(request.project, only_with_perms_in=[f"role_{r}" for r in roles])
    recipients = sorted({u.email for u in holders if u.email and u.pk != request.requester_id})
    if recipients:
        page = reverse("admin:governance_approvalrequest_change", args=[request.pk])
        send_mail(
            subject=f"Approval needed: {request.action} on {request.subject_type} {request.subject_id}",
            message=(
                f"{request.requester.get_username()} asks for {request.action} in project {request.project.slug}.\n"
                f"Comment: {request.comment or '-'}\n"
                f"Request #{request.pk}: {settings.GOV_PUBLIC_URL}{page}\n"
            ),
            from_email=None,
            recipient_list=recipients,
            fail_silently=True,
        )


def _requested_context(given: dict[str, Any], fields: tuple[Any, ...]) -> dict[str, str]:
    """The context a request keeps: the environment and risk tier a requester may state, and the
    fields its action's policy declares (a waiver's scope), each checked as the policy says."""
    declared = {field.name: field for field in fields}
    kept = {k: v for k, v in given.items() if k in ("environment", "risk_tier") and k not in declared}
    problems = {}
    for name, field in declared.items():
        value = given.get(name)
        if value is None or value == "":
            if field.required:
                problems[name] = [f"required by the policy: {field.description or 'name it'}"]
            continue
        problem = field.problem(value)
        if problem:
            problems[name] = [problem]
        else:
            kept[name] = value
    if problems:
        named = "; ".join(f"{name}: {what[0]}" for name, what in problems.items())
        raise DomainError("invalid_input", f"the request's context is incomplete or wrong: {named}", fields=problems)
    return kept


def approval_request_submit(
    *,
    actor: AbstractBaseUser,
    subject_type: str,
    subject_id: str,
    action: str,
    context: dict[str, str] | None = None,
    comment: str = "",
) -> Any:
    """Open an approval request for ``action`` on a subject, under the policy rule that matches the
    context (project, environment, risk tier). The request is bound to the subject's digest now.
    An action the subject type does not admit is refused (400, naming it), and so is one its
    subject type says may not be asked now (409 ``not_now``: a waiver of a run that errored).
    A check that finds an approval lapsed on the way (the evidence of a fine-tune run reads its
    dataset versions' approvals) records the lapse even when the request is refused."""
    with lapses_kept():
        return _approval_request_submit(
            actor=actor, subject_type=subject_type, subject_id=subject_id, action=action, context=context,
            comment=comment,
        )  # fmt: skip


def _approval_request_submit(
    *,
    actor: AbstractBaseUser,
    subject_type: str,
    subject_id: str,
    action: str,
    context: dict[str, str] | None,
    comment: str,
) -> Any:
    from governance.models import ApprovalRequest, ApprovalState
    from governance.subjects import subject_type as get_type

    kind = get_type(subject_type)
    obj = kind.get(subject_id)
    if obj is None:
        raise DomainError("not_found", f"no {subject_type} {subject_id}", status_code=404)
    project = kind.project(obj)
    if not (is_platform_admin(actor) or project_roles_held(actor, project) & REQUESTER_ROLES):
        raise PermissionDenied("permission_denied", f"requesting approval needs a requester role in {project.slug}")
    kind.admits(action)
    refused = kind.not_now(obj, action) if kind.not_now is not None else None
    if refused:
        raise Conflict("not_now", refused)
    policies = policy_set_in_force()
    context = _requested_context(context or {}, policies.context_fields(action))
    if kind.context is not None:
        context.update(kind.context(obj))
    rule = policies.rule_for(action, {"project": project.slug, **context})
    if rule is None:
        raise PolicyViolation("no_policy", f"no policy rule covers {action} in this context ({context or 'none'})")
    described = rule.describe()
    digest = kind.digest(obj)
    with transaction.atomic():
        outcomes = evidence_or_raise(described, subject_type, obj)
        if ApprovalRequest.objects.filter(
            subject_type=subject_type, subject_id=str(subject_id), action=action, state=ApprovalState.PENDING
        ).exists():
            raise Conflict(
                "already_pending",
                f"a request for {action} on this {subject_type} is already pending (if the {subject_type} changed "
                "since, reject or withdraw it first)",
            )
        days = described["expires_after_days"]
        try:
            with transaction.atomic():  # the check above, under a concurrent submission (PostgreSQL)
                request = ApprovalRequest.objects.create(
                    project=project, action=action, subject_type=subject_type, subject_id=str(subject_id),
                    subject_digest=digest, context=context, rule=described, policy_hash=policies.hash,
                    requester=actor, comment=comment,
                    expires_at=timezone.now() + timezone.timedelta(days=days) if days else None,
                )  # fmt: skip
        except IntegrityError:
            pending = f"a request for {action} on this {subject_type} is already pending"
            raise Conflict("already_pending", pending) from None
        ledger_append(
            actor=actor, action="approval.requested", subject=approval_subject(request), policy_hash=policies.hash,
            payload={"request": request.pk, "action": action, "rule": described, "comment": comment,
                     "evidence": outcomes, "context": context},
        )  # fmt: skip
        transaction.on_commit(lambda: _notify_approvers(request))
    return request


def approval_request_withdraw(*, actor: AbstractBaseUser, request_id: int, reason: str) -> Any:
    from governance.models import ApprovalRequest, ApprovalState

    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().select_related("project").filter(pk=request_id).first()
        visible = request is not None and (is_platform_admin(actor) or project_roles_held(actor, request.project))
        if not visible:
            raise DomainError("not_found", f"no approval request {request_id}", status_code=404)
        if actor.pk != request.requester_id and not is_platform_admin(actor):
            raise PermissionDenied("permission_denied", "only the requester withdraws a request")
        if request.state != ApprovalState.PENDING:
            raise Conflict("request_closed", f"request {request.pk} is {request.state}")
        request.state, request.closed_at = ApprovalState.WITHDRAWN, timezone.now()
        request.save(update_fields=["state", "closed_at"])
        ledger_append(
            actor=actor, action="approval.withdrawn", subject=approval_subject(request),
            payload={"request": request.pk, "reason": reason},
        )  # fmt: skip
        approval_hook_run(request, actor)
    return request


def approval_hook_run(request: Any, actor: AbstractBaseUser) -> None:
    """Run the subject type's hook for the request's new state, in the transaction that set it:
    ``on_approved`` once approved, ``on_closed`` once rejected, withdrawn or expired."""
    from governance.models import ApprovalState
    from governance.subjects import subject_type as get_type

    kind = get_type(request.subject_type)
    approved = request.state == ApprovalState.APPROVED
    hook = kind.on_approved if approved else kind.on_closed
    obj = kind.get(request.subject_id) if hook is not None else None
    if obj is None:
        return
    if approved:
        kind.on_approved(obj, request.action, actor)
    else:
        kind.on_closed(obj, request.action, request.state, actor)


def subject_pending_requests_withdraw(*, subject_type: str, subject_id: str, reason: str) -> list[int]:
    """Withdraw every pending approval request about a subject that can no longer be acted on (a
    retired deployment, a cancelled scan), in the caller's transaction, so approvers are not left
    a request whose approval would do nothing. The withdrawal is the system account's
    (``approval_request_withdraw`` lets only the requester or a global admin withdraw): ``reason``
    names who closed the subject and why. Returns the withdrawn requests' ids."""
    from governance.models import ApprovalRequest, ApprovalState

    pending = list(
        ApprovalRequest.objects.filter(
            subject_type=subject_type, subject_id=subject_id, state=ApprovalState.PENDING
        ).values_list("pk", flat=True)
    )
    system = User.objects.get(username=SYSTEM_USERNAME)
    for request_id in pending:
        approval_request_withdraw(actor=system, request_id=request_id, reason=reason)
    return pending


def approval_requests_expire_due(*, actor: AbstractBaseUser) -> int:
    """Close pending requests past their expiry (run by beat). Returns how many expired."""
    from governance.models import ApprovalRequest, ApprovalState

    expired = 0
    for pk in ApprovalRequest.objects.filter(state=ApprovalState.PENDING, expires_at__lte=timezone.now()).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            request = ApprovalRequest.objects.select_for_update().get(pk=pk)
            if request.state != ApprovalState.PENDING:
                continue
            request.state, request.closed_at = ApprovalState.EXPIRED, timezone.now()
            request.save(update_fields=["state", "closed_at"])
            ledger_append(
                actor=actor, action="approval.expired", subject=approval_subject(request),
                payload={"request": request.pk},
            )  # fmt: skip
            approval_hook_run(request, actor)
            expired += 1
    return expired


def approvals_lapse(*, subject_type: str, subject_id: str, digest: str | None, reason: str) -> list[int]:
    """Lapse, for good, every approved request about a subject that was given to another digest
    than ``digest`` (every approved request, when ``digest`` is None: the subject is gone or was
    erased). Each becomes ``lapsed`` with the time and ``reason``, and the system account appends
    ``approval.lapsed`` (the digest approved, the digest now, the reason). In the caller's
    transaction; two checks at once lapse a request once. Returns the lapsed requests' ids."""
    from governance.models import ApprovalRequest, ApprovalState

    approved = ApprovalRequest.objects.filter(
        subject_type=subject_type, subject_id=str(subject_id), state=ApprovalState.APPROVED
    )
    if digest is not None:
        approved = approved.exclude(subject_digest=digest)
    found = list(approved.order_by("pk"))
    if not found:
        return []
    seen = _LAPSES_SEEN.get()
    if seen is not None:
        seen.append((subject_type, str(subject_id)))
    system = User.objects.get(username=SYSTEM_USERNAME)
    lapsed = []
    with transaction.atomic():
        for request in found:
            changed = ApprovalRequest.objects.filter(pk=request.pk, state=ApprovalState.APPROVED).update(
                state=ApprovalState.LAPSED, lapsed_at=timezone.now(), lapse_reason=reason
            )
            if not changed:
                continue  # another check lapsed it first
            ledger_append(
                actor=system, action="approval.lapsed", subject=approval_subject(request),
                payload={"request": request.pk, "action": request.action, "approved_digest": request.subject_digest,
                         "current_digest": digest, "reason": reason},
            )  # fmt: skip
            lapsed.append(request.pk)
    return lapsed


def _changed(subject_type: str, digest: str) -> str:
    return f"the {subject_type.replace('_', ' ')} changed after the approval: its digest is now {digest}"


def approvals_holding(*, subject_type: str, subject_id: str, action: str, digest: str) -> list[dict[str, Any]]:
    """The approvals of ``action`` that count for the subject as it is now (``digest``):
    approved, unexpired, not revoked by a break-glass review, given to this digest; each as its
    id and context (a waiver's scope). Every approved request about the subject given to another
    digest lapses here, whatever its action (``approvals_lapse``): this is the check that finds it.
    One query when nothing lapses."""
    from governance.models import ApprovalRequest, ApprovalState

    approved = list(
        ApprovalRequest.objects.filter(
            subject_type=subject_type, subject_id=str(subject_id), state=ApprovalState.APPROVED
        ).values_list("pk", "action", "subject_digest", "expires_at", "context", "break_glass__outcome")
    )
    if any(approved_digest != digest for _, _, approved_digest, _, _, _ in approved):
        approvals_lapse(
            subject_type=subject_type, subject_id=str(subject_id), digest=digest,
            reason=_changed(subject_type, digest),
        )  # fmt: skip
    now = timezone.now()
    return [
        {"id": pk, "context": context}
        for pk, approved_action, approved_digest, expires_at, context, outcome in approved
        if approved_action == action and approved_digest == digest and (expires_at is None or expires_at > now)
        and outcome != "revoked"
    ]  # fmt: skip


def subject_approvals_recheck(*, subject_type: str, subject_id: str) -> list[int]:
    """Hold the approved requests about a subject against the subject as it is now: those given
    to another digest (or about a subject that no longer exists) lapse. Returns their ids."""
    from governance.subjects import subject_type as get_type

    kind = get_type(subject_type)
    obj = kind.get(str(subject_id))
    if obj is None:
        gone = f"the {subject_type.replace('_', ' ')} {subject_id} no longer exists"
        return approvals_lapse(subject_type=subject_type, subject_id=str(subject_id), digest=None, reason=gone)
    digest = kind.digest(obj)
    return approvals_lapse(
        subject_type=subject_type, subject_id=str(subject_id), digest=digest, reason=_changed(subject_type, digest)
    )


def approval_request_recheck(request: Any) -> bool:
    """For a page or an answer about one request: an approved one is held against its subject as
    it is now (``subject_approvals_recheck``). True when it lapsed just now."""
    from governance.models import ApprovalState

    if request.state != ApprovalState.APPROVED:
        return False
    return request.pk in subject_approvals_recheck(subject_type=request.subject_type, subject_id=request.subject_id)


@contextmanager
def lapses_kept() -> Iterator[None]:
    """Around a service whose refusal rolls its transaction back: an approval that a check inside
    found lapsed is looked at again once the refusal has rolled back (``subject_approvals_recheck``,
    against the subject as committed), so a refusal never takes a lapse back with it. A block
    inside another hands what it saw to the outer one."""
    from django.db import connection

    outer = _LAPSES_SEEN.get()
    seen: list[tuple[str, str]] = []
    token = _LAPSES_SEEN.set(seen)
    try:
        yield
    except Exception:
        _LAPSES_SEEN.reset(token)
        if outer is not None:
            outer.extend(seen)
        elif seen and not connection.needs_rollback:
            for subject_type, subject_id in dict.fromkeys(seen):
                subject_approvals_recheck(subject_type=subject_type, subject_id=subject_id)
        raise
    _LAPSES_SEEN.reset(token)
    if outer is not None:
        outer.extend(seen)
