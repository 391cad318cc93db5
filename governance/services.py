"""Writes of the governance app. Every function takes the acting user and checks permission."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import IntegrityError, transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from audits.ledger.services import Subject, ledger_append
from common.db import rows
from common.errors import Conflict, DomainError, PermissionDenied
from governance.models import ApiToken, Project, ServiceAccount
from governance.permissions import SYSTEM_USERNAME, can_administer, is_platform_admin, project_roles_held
from governance.roles import STAFF_ROLES, Role

User = get_user_model()


def _require_platform_admin(actor: AbstractBaseUser, what: str) -> None:
    if not is_platform_admin(actor):
        raise PermissionDenied("permission_denied", f"only a platform admin may {what}")


def project_create(*, actor: AbstractBaseUser, slug: str, name: str, description: str = "") -> Project:
    _require_platform_admin(actor, "create a project")
    with transaction.atomic():
        if Project.objects.filter(slug=slug).exists():
            raise Conflict("project_exists", f"a project with slug {slug!r} already exists")
        project = Project(slug=slug, name=name, description=description)
        project.full_clean()
        project.save()
        ledger_append(
            actor=actor, action="project.created", subject=Subject("project", project.slug), payload={"name": name}
        )
    return project


def _parties(user_ids: Iterable[int]) -> dict[int, int]:
    """Each user's party for separation of duties: a service account with an owner counts as its
    owner (automation never decides on its owner's requests, nor fills a second slot for them);
    anyone else as themselves. One query."""
    ids = sorted(set(user_ids))
    # On every decision: one hand-written statement (common/db/rows.py), not a compiled queryset.
    field = ServiceAccount._meta.get_field
    user, owner = field("user").column, field("owner").column
    owned = dict(
        rows.fetch(
            f"SELECT {user}, {owner} FROM {rows.table(ServiceAccount)} "  # noqa: S608 (names from model metadata)
            f"WHERE {owner} IS NOT NULL AND {user} IN ({', '.join(['%s'] * len(ids))})",
            ids,
        )
    )
    return {pk: owned.get(pk, pk) for pk in ids}


def _refuse_own_party(actor: Any, request: Any, parties: dict[int, int], authors: list[int], how: str = "") -> None:
    """Separation of duties: nobody decides on a request that they (or their service account, or
    its owner) submitted, nor on a subject they made."""
    mine = parties[actor.pk]
    if mine == parties[request.requester_id]:
        raise PolicyViolation(
            "self_approval",
            f"separation of duties: {how}a requester never decides on their own request (a service account "
            "and its owner count as one person)",
        )
    if any(parties[author] == mine for author in authors):
        raise PolicyViolation(
            "self_approval",
            f"separation of duties: {how}whoever made the {request.subject_type} never decides on it "
            "(a service account and its owner count as one person)",
        )


def _require_reason(reason: str) -> None:
    if not reason.strip():
        raise DomainError(
            "invalid_input", "say why: a role change needs a reason", fields={"reason": ["may not be blank"]}
        )


def project_role_grant(
    *, actor: AbstractBaseUser, project: Project, user: AbstractBaseUser, role: Role, reason: str
) -> None:
    """Give ``user`` the ``role`` in ``project`` (and membership of the role's group, which holds
    the role's admin-page permissions). The ledger records who gave whom which role, where, why."""
    _require_reason(reason)
    if not can_administer(actor, project):
        raise PermissionDenied("permission_denied", f"only a platform admin of {project.slug} may grant roles")
    if not user.is_active:
        raise DomainError("inactive_user", f"user {user.get_username()!r} is inactive")
    if not is_platform_admin(actor):
        parties = _parties([actor.pk, user.pk])
        if parties[actor.pk] == parties[user.pk]:
            raise PolicyViolation(
                "self_grant",
                "separation of duties: a project's platform admin does not grant roles to themselves or to "
                "their own service accounts; another platform admin does",
            )
    with transaction.atomic():
        group = Group.objects.get(name=role.value)
        user.groups.add(group)  # type: ignore[attr-defined]
        assign_perm(role.perm, user, project)
        if role in STAFF_ROLES and not user.is_staff and not hasattr(user, "service_account"):
            user.is_staff = True  # type: ignore[attr-defined]
            user.save(update_fields=["is_staff"])
        ledger_append(
            actor=actor,
            action="project.role_granted",
            subject=Subject("project", project.slug),
            payload={"user": user.get_username(), "user_id": str(user.pk), "role": role.value, "reason": reason},
        )


def project_role_revoke(
    *, actor: AbstractBaseUser, project: Project, user: AbstractBaseUser, role: Role, reason: str
) -> None:
    _require_reason(reason)
    if not can_administer(actor, project):
        raise PermissionDenied("permission_denied", f"only a platform admin of {project.slug} may revoke roles")
    with transaction.atomic():
        if role.codename not in _roles_granted(user, project):
            raise Conflict("role_not_held", f"{user.get_username()!r} does not hold {role.value} in {project.slug}")
        remove_perm(role.perm, user, project)
        _drop_unheld_role(user, role)
        ledger_append(
            actor=actor,
            action="project.role_revoked",
            subject=Subject("project", project.slug),
            payload={"user": user.get_username(), "user_id": str(user.pk), "role": role.value, "reason": reason},
        )


def _roles_granted(user: AbstractBaseUser, project: Project | None = None) -> set[str]:
    """The codenames of the roles granted to ``user`` itself (not through a group), in ``project``
    or in any project."""
    from django.contrib.contenttypes.models import ContentType
    from guardian.utils import get_user_obj_perms_model

    project_type = ContentType.objects.get_for_model(Project)
    granted = get_user_obj_perms_model().objects.filter(user=user, content_type=project_type)
    if project is not None:
        granted = granted.filter(object_pk=str(project.pk))
    return set(granted.values_list("permission__codename", flat=True))


def _drop_unheld_role(user: AbstractBaseUser, role: Role) -> None:
    """After a revocation: leave the role's group (its admin-page permissions, such as reading the
    ledger) once ``user`` holds the role in no project, and lose staff status once they hold no
    staff role anywhere."""
    held = _roles_granted(user)
    if role.codename not in held:
        user.groups.remove(Group.objects.get(name=role.value))  # type: ignore[attr-defined]
    staff_held = {r.codename for r in STAFF_ROLES} & held
    if not staff_held and user.is_staff and not user.is_superuser:  # type: ignore[attr-defined]
        user.is_staff = False  # type: ignore[attr-defined]
        user.save(update_fields=["is_staff"])


def service_account_create(
    *, actor: AbstractBaseUser, username: str, description: str = "", owner: AbstractBaseUser | None = None
) -> ServiceAccount:
    """A service account logs in by API token only: its password is unusable and it is never staff."""
    _require_platform_admin(actor, "create service accounts")
    with transaction.atomic():
        if User.objects.filter(username=username).exists():
            raise Conflict("username_taken", f"a user named {username!r} already exists")
        user = User(username=username, is_staff=False, is_superuser=False)
        user.set_unusable_password()
        user.full_clean()
        user.save()
        account = ServiceAccount.objects.create(user=user, description=description, owner=owner)
        ledger_append(
            actor=actor,
            action="service_account.created",
            subject=Subject("user", str(user.pk)),
            payload={"username": username, "owner": owner.get_username() if owner else None},
        )
        return account


def _token_digest(token: str) -> str:
    # Tokens carry 256 bits of randomness, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_create(
    *, actor: AbstractBaseUser, user: AbstractBaseUser, name: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns the row and the token, which is never stored in clear."""
    if actor.pk != user.pk and not is_platform_admin(actor):
        raise PermissionDenied("permission_denied", "only a platform admin may create tokens for another user")
    if not name.strip():
        raise DomainError("invalid_input", "a token needs a name", fields={"name": ["may not be blank"]})
    if expires_at is not None and expires_at <= timezone.now():
        raise DomainError(
            "invalid_input", "expires_at is in the past", fields={"expires_at": ["must be in the future"]}
        )
    prefix = secrets.token_hex(6)
    token = f"{settings.API_TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        row = ApiToken.objects.create(
            user=user, name=name.strip(), prefix=prefix, digest=_token_digest(token), expires_at=expires_at
        )
        ledger_append(
            actor=actor,
            action="api_token.created",
            subject=Subject("api_token", prefix),
            payload={
                "user": user.get_username(),
                "name": row.name,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return row, token


def api_token_revoke(*, actor: AbstractBaseUser, token: ApiToken) -> bool:
    """Revoke ``token``; ``True`` if this call did, ``False`` if it was already revoked."""
    if actor.pk != token.user_id and not is_platform_admin(actor):
        raise PermissionDenied("permission_denied", "only the token's owner or a platform admin may revoke it")
    with transaction.atomic():
        # Locked and read again: of two concurrent revocations, one writes the row and the entry.
        current = ApiToken.objects.select_for_update().get(pk=token.pk)
        if current.revoked_at is not None:
            token.revoked_at = current.revoked_at
            return False
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        ledger_append(actor=actor, action="api_token.revoked", subject=Subject("api_token", token.prefix), payload={})
    return True


def api_token_authenticate(token: str) -> ApiToken | None:
    """The live token row for ``token``, or ``None``. Constant-time comparison of the digest."""
    parts = token.split("_", 2)  # the secret part may itself hold "_"
    if len(parts) != 3 or parts[0] != settings.API_TOKEN_PREFIX:
        return None
    # Every API request runs this: one hand-written join (common/db/rows.py), not a queryset.
    found = rows.fetch(
        f"SELECT {rows.columns(ApiToken, 't')}, {rows.columns(User, 'u')} FROM {rows.table(ApiToken)} t "  # noqa: S608 (names from model metadata)
        f"INNER JOIN {rows.table(User)} u ON u.id = t.user_id WHERE t.prefix = %s",
        [parts[1]],
    )
    row = rows.load(ApiToken, found[0]) if found else None
    if row is not None:
        rows.attach(row, "user", rows.load(User, found[0], rows.width(ApiToken)))
    if row is None or not hmac.compare_digest(row.digest, _token_digest(token)):
        return None
    now = timezone.now()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now) or not row.user.is_active:
        return None
    # Record use at most once a minute: a write per request would serialise all API traffic.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row


# --- Approval workflows --------------------------------------------------------------------------

REQUESTER_ROLES = {Role.ML_ENGINEER, Role.DATA_STEWARD, Role.PLATFORM_ADMIN}


class PolicyViolation(DomainError):
    """The request breaks a rule of the policy (422); the message names the rule."""

    status_code = 422


def _approval_subject(request: Any) -> Subject:
    return Subject(request.subject_type, request.subject_id, request.subject_digest)


def _policy_set_in_force() -> Any:
    """The policy set on disk; the first decision under a new set records it in the ledger."""
    from governance.models import PolicySetRecord
    from governance.policy import current_policy_set

    policies = current_policy_set()
    recorded = rows.fetch(f"SELECT 1 FROM {rows.table(PolicySetRecord)} WHERE hash = %s", [policies.hash])  # noqa: S608 (names from model metadata)
    if not recorded:
        system = User.objects.get(username=SYSTEM_USERNAME)
        with transaction.atomic():
            # Another process may have recorded it since the read above: the unique hash decides,
            # and the loser leaves the record (and its ledger entry) to the winner.
            try:
                with transaction.atomic():
                    PolicySetRecord.objects.create(hash=policies.hash, files=policies.files)
            except IntegrityError:
                return policies
            ledger_append(
                actor=system, action="policy_set.changed", subject=Subject("policy_set", policies.hash),
                policy_hash=policies.hash, payload={"files": policies.files},
            )  # fmt: skip
    return policies


def _notify_approvers(request: Any) -> None:
    """After commit: tell the people who can fill a slot that a request waits for them."""
    from django.core.mail import send_mail
    from guardian.shortcuts import get_users_with_perms

    roles = {slot["role"] for slot in request.rule["approvals"]}
    holders = get_users_with_perms(request.project, only_with_perms_in=[f"role_{r}" for r in roles])
    recipients = sorted({u.email for u in holders if u.email and u.pk != request.requester_id})
    if recipients:
        send_mail(
            subject=f"Approval needed: {request.action} on {request.subject_type} {request.subject_id}",
            message=(
                f"{request.requester.get_username()} asks for {request.action} in project {request.project.slug}.\n"
                f"Comment: {request.comment or '-'}\nRequest #{request.pk}: /api/v1/approvals/{request.pk}\n"
            ),
            from_email=None,
            recipient_list=recipients,
            fail_silently=True,
        )


def _evidence_or_raise(rule: dict[str, Any], kind: str, obj: Any) -> list[dict[str, Any]]:
    from governance.evidence import evaluate

    outcomes = evaluate(tuple(rule["evidence"]), kind, obj)
    missing = [o for o in outcomes if not o["holds"]]
    if missing:
        first = missing[0]
        raise PolicyViolation("evidence_missing", f"evidence {first['check']!r} does not hold: {first['detail']}")
    return outcomes


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
    context (project, environment, risk tier). The request is bound to the subject's digest now."""
    from governance.models import ApprovalRequest, ApprovalState
    from governance.subjects import subject_type as get_type

    kind = get_type(subject_type)
    obj = kind.get(subject_id)
    if obj is None:
        raise DomainError("not_found", f"no {subject_type} {subject_id}", status_code=404)
    project = kind.project(obj)
    if not (is_platform_admin(actor) or project_roles_held(actor, project) & REQUESTER_ROLES):
        raise PermissionDenied("permission_denied", f"requesting approval needs a requester role in {project.slug}")
    context = {k: v for k, v in (context or {}).items() if k in ("environment", "risk_tier")}
    if kind.context is not None:
        context.update(kind.context(obj))
    policies = _policy_set_in_force()
    rule = policies.rule_for(action, {"project": project.slug, **context})
    if rule is None:
        raise PolicyViolation("no_policy", f"no policy rule covers {action} in this context ({context or 'none'})")
    described = rule.describe()
    digest = kind.digest(obj)
    with transaction.atomic():
        outcomes = _evidence_or_raise(described, subject_type, obj)
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
            actor=actor, action="approval.requested", subject=_approval_subject(request), policy_hash=policies.hash,
            payload={"request": request.pk, "action": action, "rule": described, "comment": comment,
                     "evidence": outcomes},
        )  # fmt: skip
        transaction.on_commit(lambda: _notify_approvers(request))
    return request


SEPARATION_OF_DUTIES_CODES = ("self_approval", "already_decided")


def _record_duties_refusal(actor: AbstractBaseUser, request_id: int, exc: DomainError) -> None:
    """A refusal under separation of duties is evidence an auditor asks for: it is recorded after
    the refused transaction rolled back (``separation_of_duties.refused``, not an approval entry)."""
    from governance.models import ApprovalRequest

    request = ApprovalRequest.objects.filter(pk=request_id).first()
    if request is None:
        return
    with transaction.atomic():
        ledger_append(
            actor=actor, action="separation_of_duties.refused", subject=_approval_subject(request),
            payload={"request": request.pk, "code": exc.code, "message": exc.message},
        )  # fmt: skip


def approval_request_decide(
    *, actor: AbstractBaseUser, request_id: int, decision: str, reason: str, role: str | None = None
) -> Any:
    """Approve (fill one slot) or reject a pending request; a refusal under separation of duties
    is recorded in the ledger (see ``_approval_request_decide``)."""
    try:
        return _approval_request_decide(actor=actor, request_id=request_id, decision=decision, reason=reason, role=role)
    except PolicyViolation as exc:
        if exc.code in SEPARATION_OF_DUTIES_CODES:
            _record_duties_refusal(actor, request_id, exc)
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
    rows.attach(request, "project", rows.load(Project, found[0], rows.width(ApprovalRequest)))
    rows.attach(request, "requester", rows.load(User, found[0], rows.width(ApprovalRequest) + rows.width(Project)))
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
        rows.attach(decision, "approver", rows.load(User, row, rows.width(ApprovalDecision)))
        rows.attach(decision, "request", request)
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
    policy_hash = _policy_set_in_force().hash
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
        parties = _parties([actor.pk, request.requester_id, *authors, *(d.approver_id for d in decisions)])
        _refuse_own_party(actor, request, parties, authors)
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
        filled: dict[str, int] = {}
        for d in decisions:
            if d.decision == "approve":
                filled[d.role] = filled.get(d.role, 0) + 1
        open_roles = [s["role"] for s in slots if s["role"] in held and filled.get(s["role"], 0) < s["count"]]
        if decision == "approve" and not open_roles:
            which = "every slot your roles could fill is" if role is None else f"the {role} slot is"
            raise Conflict("slot_filled", f"{which} already filled")
        role = open_roles[0] if open_roles else held[0]
        if decision == "approve":
            _evidence_or_raise(request.rule, request.subject_type, obj)
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
            actor=actor, action=entry_action, subject=_approval_subject(request), policy_hash=policy_hash,
            payload={"request": request.pk, "decision": decision, "role": role, "reason": reason,
                     "state": new_state, "filled": filled},
        )  # fmt: skip
        made = ApprovalDecision(
            request=request, approver=actor, role=role, decision=decision, reason=reason,
            subject_digest=request.subject_digest, policy_hash=policy_hash, ledger_index=appended.index,
        )  # fmt: skip
        rows.insert(made)  # ApprovalDecision.objects.create, without compiling the query
        decisions.append(made)
        if new_state != request.state:
            request.state, request.closed_at = new_state, timezone.now()
            rows.update(request, ["state", "closed_at"])
            if new_state == ApprovalState.APPROVED:
                _on_approved(request, actor)
    # The answer shows the decisions: hand them over as a filled prefetch cache (what
    # prefetch_related leaves behind) rather than read them again; built after the commit, so
    # the next decision's transaction does not wait for it.
    loaded = request.decisions.all()
    loaded._result_cache, loaded._prefetch_done = decisions, True
    request._prefetched_objects_cache = {"decisions": loaded}
    return request


def _on_approved(request: Any, actor: AbstractBaseUser) -> None:
    """Run the subject type's approval hook, in the approving transaction."""
    from governance.subjects import subject_type as get_type

    kind = get_type(request.subject_type)
    if kind.on_approved is not None:
        obj = kind.get(request.subject_id)
        if obj is not None:
            kind.on_approved(obj, request.action, actor)


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
            actor=actor, action="approval.withdrawn", subject=_approval_subject(request),
            payload={"request": request.pk, "reason": reason},
        )  # fmt: skip
    return request


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
                actor=actor, action="approval.expired", subject=_approval_subject(request),
                payload={"request": request.pk},
            )  # fmt: skip
            expired += 1
    return expired


def approval_holds(*, subject_type: str, subject_id: str, action: str, digest: str) -> bool:
    """Is there an approval, unexpired and not revoked by a break-glass review, for this action on
    the subject as it is now (its digest)?"""
    from django.db.models import Q

    from governance.models import ApprovalRequest, ApprovalState

    return (
        ApprovalRequest.objects.filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()),
            subject_type=subject_type, subject_id=str(subject_id), action=action, subject_digest=digest,
            state=ApprovalState.APPROVED,
        )
        .exclude(break_glass__outcome="revoked")
        .exists()
    )  # fmt: skip


def approval_break_glass(*, actor: AbstractBaseUser, request_id: int, justification: str) -> Any:
    """Approve a pending request in an emergency, bypassing its slots. Only a platform admin of the
    project (or a global admin), never the requester, with a written justification. The entry is
    flagged in the ledger and a compliance officer must review it within BREAK_GLASS_REVIEW_HOURS."""
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
        parties = _parties([actor.pk, request.requester_id, *authors, *earlier])
        _refuse_own_party(actor, request, parties, authors, how="not even break-glass: ")
        if any(parties[approver] == parties[actor.pk] for approver in earlier):
            raise PolicyViolation(
                "already_decided",
                "separation of duties: you have already decided on this request; "
                "another platform admin may break the glass",
            )
        if obj is None or kind.digest(obj) != request.subject_digest:
            raise Conflict("stale_digest", f"the {request.subject_type} changed since the request")
        policy_hash = _policy_set_in_force().hash
        due = timezone.now() + timezone.timedelta(hours=settings.BREAK_GLASS_REVIEW_HOURS)
        appended = ledger_append(
            actor=actor, action="approval.break_glass", subject=_approval_subject(request), policy_hash=policy_hash,
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
        _on_approved(request, actor)
    return request


def break_glass_review_close(*, actor: AbstractBaseUser, review_id: int, outcome: str, note: str) -> Any:
    """A compliance officer's verdict on a break-glass approval: ``upheld`` or ``revoked``."""
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
            actor=actor, action="approval.break_glass_reviewed", subject=_approval_subject(review.request),
            payload={"request": review.request_id, "outcome": outcome, "note": note,
                     "late": review.closed_at > review.due_at},
        )  # fmt: skip
    return review
