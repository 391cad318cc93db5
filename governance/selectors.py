"""Reads of the governance app; each takes the user and returns only what that user may see."""

from __future__ import annotations

from typing import Any

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


def approval_list(*, user: AbstractBaseUser, inbox: bool = False) -> QuerySet[Any]:
    """Requests in the projects the user holds a role in. ``inbox``: pending requests the user can
    decide now (holds a slot's role, did not ask, has not decided)."""
    from governance.models import ApprovalRequest, ApprovalState

    queryset = (
        ApprovalRequest.objects.filter(project__in=project_list(user=user))
        .select_related("project", "requester")
        .prefetch_related("decisions__approver")
    )
    if not inbox:
        return queryset
    pending = queryset.filter(state=ApprovalState.PENDING).exclude(requester=user).exclude(decisions__approver=user)
    roles_by_project = {project.pk: set(roles) for project, roles in project_roles_of(user=user)}
    keep = [
        request.pk
        for request in pending
        if roles_by_project.get(request.project_id, set()) & {slot["role"] for slot in request.rule["approvals"]}
    ]
    return queryset.filter(pk__in=keep)


def approval_get(*, user: AbstractBaseUser, pk: int) -> Any:
    from common.errors import NotFound

    request = approval_list(user=user).filter(pk=pk).first()
    if request is None:
        raise NotFound("not_found", f"no approval request {pk}")
    return request


def break_glass_reviews(*, user: AbstractBaseUser) -> QuerySet[Any]:
    """Break-glass reviews in the user's projects, open and overdue first."""
    from governance.models import BreakGlassReview

    return (
        BreakGlassReview.objects.filter(request__project__in=project_list(user=user))
        .select_related("request__project", "admin", "closed_by")
        .order_by("closed_at", "due_at")
    )
