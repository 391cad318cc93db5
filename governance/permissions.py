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
