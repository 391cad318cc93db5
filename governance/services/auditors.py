"""The organisation-wide auditors: people who read every ledger entry, of every project and of the
organisation (``governance.roles.ORGANISATION_AUDITOR``). Membership of the group that holds
``ledger.read_all_entries``; granted and revoked here alone, by a global admin, each change in the
ledger with its reason."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction

from audits.ledger.services import Subject, ledger_append
from common.errors import Conflict, DomainError
from governance.permissions import require_platform_admin
from governance.roles import ORGANISATION_AUDITOR, STAFF_ROLES


def _require_reason(reason: str) -> None:
    if not reason.strip():
        raise DomainError(
            "invalid_input", "say why: a role change needs a reason", fields={"reason": ["may not be blank"]}
        )


def _group() -> Group:
    return Group.objects.get(name=ORGANISATION_AUDITOR)


def _entry(actor: AbstractBaseUser, action: str, user: AbstractBaseUser, reason: str) -> None:
    ledger_append(
        actor=actor,
        action=action,
        subject=Subject("user", str(user.pk)),
        payload={"user": user.get_username(), "user_id": str(user.pk), "role": ORGANISATION_AUDITOR, "reason": reason},
    )


def organisation_auditor_grant(*, actor: AbstractBaseUser, user: AbstractBaseUser, reason: str) -> None:
    """Make ``user`` an organisation-wide auditor: they read every ledger entry in the API and the
    admin (staff status included, for the admin's ledger pages). Only a global admin grants it;
    the ledger records who gave it to whom and why (``organisation.auditor_granted``)."""
    _require_reason(reason)
    require_platform_admin(actor, "make someone an organisation-wide auditor")
    if not user.is_active:
        raise DomainError("inactive_user", f"user {user.get_username()!r} is inactive")
    with transaction.atomic():
        group = _group()
        if user.groups.filter(pk=group.pk).exists():  # type: ignore[attr-defined]
            raise Conflict("role_held", f"{user.get_username()!r} is already an organisation-wide auditor")
        user.groups.add(group)  # type: ignore[attr-defined]
        if not user.is_staff and not hasattr(user, "service_account"):  # type: ignore[attr-defined]
            user.is_staff = True  # type: ignore[attr-defined]
            user.save(update_fields=["is_staff"])
        _entry(actor, "organisation.auditor_granted", user, reason)


def organisation_auditor_revoke(*, actor: AbstractBaseUser, user: AbstractBaseUser, reason: str) -> None:
    """Take the organisation-wide auditor's reading away from ``user``; they keep what their
    project roles give them (and their staff status while they hold a staff role in a project).
    Ledgered as ``organisation.auditor_revoked``."""
    from governance.services.projects import _roles_granted

    _require_reason(reason)
    require_platform_admin(actor, "revoke an organisation-wide auditor")
    with transaction.atomic():
        group = _group()
        if not user.groups.filter(pk=group.pk).exists():  # type: ignore[attr-defined]
            raise Conflict("role_not_held", f"{user.get_username()!r} is not an organisation-wide auditor")
        user.groups.remove(group)  # type: ignore[attr-defined]
        staff_roles = {role.codename for role in STAFF_ROLES}
        if user.is_staff and not user.is_superuser and not staff_roles & _roles_granted(user):  # type: ignore[attr-defined]
            user.is_staff = False  # type: ignore[attr-defined]
            user.save(update_fields=["is_staff"])
        _entry(actor, "organisation.auditor_revoked", user, reason)
