"""Reads of the governance app; each takes the user and returns only what that user may see."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from guardian.core import ObjectPermissionChecker

from governance.models import Project
from governance.permissions import is_platform_admin
from governance.roles import Role


def project_list(*, user: AbstractBaseUser, roles: Iterable[Role] | None = None) -> QuerySet[Project]:
    """Projects where ``user`` holds any role (or one of ``roles``); platform admins see all."""
    if is_platform_admin(user):
        return Project.objects.all()
    if not user.is_authenticated or not user.is_active:
        return Project.objects.none()
    # One query with two subqueries over guardian's tables (its general lookup costs several).
    from django.contrib.contenttypes.models import ContentType
    from django.db.models import IntegerField, Q
    from django.db.models.functions import Cast
    from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

    where = {
        "content_type": ContentType.objects.get_for_model(Project),
        "permission__codename__in": [role.codename for role in (Role if roles is None else roles)],
    }
    direct = get_user_obj_perms_model().objects.filter(user=user, **where)
    through_groups = get_group_obj_perms_model().objects.filter(group__user=user, **where)
    return Project.objects.filter(
        Q(pk__in=direct.values(pk_int=Cast("object_pk", IntegerField())))
        | Q(pk__in=through_groups.values(pk_int=Cast("object_pk", IntegerField())))
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
    """One request, if ``user`` may see it (a role in its project, or platform admin); else 404.

    The same visibility as ``approval_list``, by the row's project rather than a subquery over
    every visible project: three small queries on the hot path of every decision."""
    from common.errors import NotFound
    from governance.models import ApprovalRequest
    from governance.permissions import project_roles_held

    request = (
        ApprovalRequest.objects.select_related("project", "requester")
        .prefetch_related("decisions__approver")
        .filter(pk=pk)
        .first()
    )
    if request is None or not (is_platform_admin(user) or project_roles_held(user, request.project)):
        raise NotFound("not_found", f"no approval request {pk}")
    return request


def approval_history(request: Any) -> Any:
    """``request`` (already fetched by a service that checked the caller) with its requester and
    decisions loaded, for the response to that caller."""
    from django.db.models import prefetch_related_objects

    prefetch_related_objects([request], "project", "requester", "decisions__approver")
    return request


def break_glass_reviews(*, user: AbstractBaseUser) -> QuerySet[Any]:
    """Break-glass reviews in the user's projects, open and overdue first."""
    from governance.models import BreakGlassReview

    return (
        BreakGlassReview.objects.filter(request__project__in=project_list(user=user))
        .select_related("request__project", "admin", "closed_by")
        .order_by("closed_at", "due_at")
    )
