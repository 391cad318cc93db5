"""Projects and the roles people hold in them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from audits.ledger.services import Subject, ledger_append
from common.errors import Conflict, DomainError, PermissionDenied
from governance.models import Project
from governance.permissions import can_administer, is_platform_admin, require_platform_admin
from governance.roles import STAFF_ROLES, Role
from governance.rules import PolicyViolation
from governance.selectors import parties_of


def project_create(*, actor: AbstractBaseUser, slug: str, name: str, description: str = "") -> Project:
    require_platform_admin(actor, "create a project")
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
        parties = parties_of([actor.pk, user.pk])
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
