"""The base of the pages that show a user only their projects' rows."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyAdmin
from governance.selectors import project_list


class ProjectScopedAdmin(ReadOnlyAdmin):
    """Read-only pages that show a user only the rows of the projects where they hold a role.
    ``project_path`` is the lookup from the model to its project (``"dataset__project"``)."""

    project_path = "project"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        return queryset.filter(**{f"{self.project_path}__in": project_list(user=request.user)})
