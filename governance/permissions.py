"""Permission questions, answered the same way for the admin, the API and the services."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from governance.models import Project
from governance.roles import Role

SYSTEM_USERNAME = "system"


def is_platform_admin(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Global administration (creating projects, granting roles): superusers and the
    ``platform_admin`` group. The group is for people; role grants within a project are separate."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:  # type: ignore[union-attr]
        return True
    return user.groups.filter(name=Role.PLATFORM_ADMIN.value).exists()  # type: ignore[union-attr]


def has_project_role(user: AbstractBaseUser | AnonymousUser, project: Project, role: Role) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return user.has_perm(role.perm, project)


def require_project_role(user: AbstractBaseUser | AnonymousUser, project: Project, roles: set[Role], what: str) -> None:
    """Raise ``PermissionDenied`` unless ``user`` holds one of ``roles`` in ``project`` (or is a
    platform admin)."""
    from common.errors import PermissionDenied

    if is_platform_admin(user) or any(has_project_role(user, project, role) for role in roles):
        return
    names = " or ".join(sorted(role.value for role in roles))
    raise PermissionDenied("permission_denied", f"{what} needs the {names} role in project {project.slug}")
