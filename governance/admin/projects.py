"""Projects and service accounts."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyAdmin
from governance.models import Project, ServiceAccount
from governance.permissions import is_platform_admin
from governance.selectors import project_list


@admin.register(Project)
class ProjectAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The projects where the user holds a role (all of them for a platform admin), as in the API.
        return super().get_queryset(request).filter(pk__in=project_list(user=request.user).values("pk"))


@admin.register(ServiceAccount)
class ServiceAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "owner", "created_at"]
    list_select_related = ["user", "owner"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The accounts the user owns (all of them for a platform admin, who creates them).
        queryset = super().get_queryset(request)
        return queryset if is_platform_admin(request.user) else queryset.filter(owner=request.user)
