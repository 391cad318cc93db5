"""Reads of the data-subject request workflow. Requests, holds and reviews are seen by the
compliance officers and auditors of their project (and platform admins). An object of a project
where the caller holds no role answers 404; a member without one of those roles gets 403."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from audits.privacy.models import DataSubjectRequest, LegalHold, ModelReview
from common.errors import NotFound, PermissionDenied
from governance.models import Project
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role
from governance.selectors import project_list

READER_ROLES = frozenset({Role.COMPLIANCE_OFFICER, Role.AUDITOR})


def privacy_projects(*, user: Any) -> QuerySet[Project]:
    """Projects where ``user`` is a compliance officer or an auditor; platform admins see all."""
    return project_list(user=user, roles=READER_ROLES)


def require_reader(*, user: Any, project: Project) -> None:
    if not (is_platform_admin(user) or project_roles_held(user, project) & READER_ROLES):
        raise PermissionDenied(
            "permission_denied", f"data-subject requests of {project.slug} are for compliance officers and auditors"
        )


def request_list(*, user: Any) -> QuerySet[DataSubjectRequest]:
    return DataSubjectRequest.objects.filter(project__in=privacy_projects(user=user)).select_related(
        "project", "received_by", "verified_by", "closed_by"
    )


def _visible(queryset: QuerySet[Any], user: Any, pk: int, what: str) -> Any:
    """404 outside the caller's projects, 403 for a member without a reader role."""
    obj = queryset.filter(pk=pk, project__in=project_list(user=user)).select_related("project").first()
    if obj is None:
        raise NotFound("not_found", f"no {what} {pk}")
    require_reader(user=user, project=obj.project)
    return obj


def request_get(*, user: Any, pk: int) -> DataSubjectRequest:
    return _visible(DataSubjectRequest.objects.all(), user, pk, "data-subject request")


def legal_hold_list(*, user: Any) -> QuerySet[LegalHold]:
    return LegalHold.objects.filter(project__in=privacy_projects(user=user)).select_related(
        "project", "placed_by", "released_by"
    )


def legal_hold_get(*, user: Any, pk: int) -> LegalHold:
    return _visible(LegalHold.objects.all(), user, pk, "legal hold")


def model_review_list(*, user: Any) -> QuerySet[ModelReview]:
    return ModelReview.objects.filter(project__in=privacy_projects(user=user)).select_related(
        "project", "model_version__model", "closed_by"
    )


def model_review_get(*, user: Any, pk: int) -> ModelReview:
    return _visible(ModelReview.objects.all(), user, pk, "model review")


def request_log(*, user: Any, project: Project, since: datetime | None = None) -> list[dict[str, Any]]:
    """The CCPA §7101(a) record of consumer requests: the date of the request, its nature and
    manner, the date and nature of the response, and the basis for a denial. Every request is
    kept (requests are never deleted), so the log covers at least the 24 months §7101(b) asks."""
    require_reader(user=user, project=project)
    queryset = DataSubjectRequest.objects.filter(project=project).order_by("received_at", "pk")
    if since is not None:
        queryset = queryset.filter(received_at__gte=since)
    return [
        {
            "id": r.pk,
            "regime": r.regime,
            "request_date": r.received_at,
            "nature": r.kind,
            "nature_display": r.get_kind_display(),
            "manner": r.channel,
            "state": r.state,
            "response_date": r.responded_at,
            "response_nature": r.response_nature,
            "denial_basis": r.denial_basis,
            "respond_by": r.respond_by,
            "extended": r.extended,
        }
        for r in queryset
    ]
