"""Reads of the governance app; each takes the user and returns only what that user may see."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from guardian.core import ObjectPermissionChecker
from guardian.shortcuts import get_objects_for_user

from governance.models import Project
from governance.permissions import is_platform_admin
from governance.roles import Role


def project_list(*, user: AbstractBaseUser) -> QuerySet[Project]:
    """Projects where ``user`` holds any role; platform admins see all."""
    if is_platform_admin(user):
        return Project.objects.all()
    return get_objects_for_user(
        user, [r.perm for r in Role], klass=Project, any_perm=True, accept_global_perms=False, with_superuser=False
    )


def project_roles_of(*, user: AbstractBaseUser) -> list[tuple[Project, list[str]]]:
    """Each visible project with the roles ``user`` holds in it, in a constant number of queries."""
    projects = list(project_list(user=user))
    checker = ObjectPermissionChecker(user)
    checker.prefetch_perms(projects)
    result = []
    for project in projects:
        codenames = set(checker.get_perms(project))  # served from the prefetched cache
        result.append((project, [role.value for role in Role if role.codename in codenames]))
    return result
