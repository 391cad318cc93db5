"""Reads of the serving app; each takes the user and returns only what that user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from common.errors import NotFound
from governance.selectors import project_list
from serving.models import Deployment


def deployment_list(*, user: Any) -> QuerySet[Deployment]:
    return Deployment.objects.filter(project__in=project_list(user=user)).select_related(
        "project", "model_version__model", "requested_by"
    )


def deployment_get(*, user: Any, pk: int) -> Deployment:
    deployment = deployment_list(user=user).filter(pk=pk).first()
    if deployment is None:
        raise NotFound("not_found", f"no deployment {pk}")
    return deployment
