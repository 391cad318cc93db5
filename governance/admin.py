"""Admin pages of the governance app. Read-only: changes go through the services (and the API),
so that every one of them is checked and recorded the same way."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyAdmin
from governance.models import ApiToken, Project, ServiceAccount
from governance.selectors import project_list
from governance.services import api_token_revoke


class ProjectScopedAdmin(ReadOnlyAdmin):
    """Read-only pages that show a user only the rows of the projects where they hold a role.
    ``project_path`` is the lookup from the model to its project (``"dataset__project"``)."""

    project_path = "project"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        return queryset.filter(**{f"{self.project_path}__in": project_list(user=request.user)})


@admin.register(Project)
class ProjectAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]


@admin.register(ServiceAccount)
class ServiceAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "owner", "created_at"]
    list_select_related = ["user", "owner"]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "user", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    list_filter = ["revoked_at"]
    exclude = ["digest"]
    actions = ["revoke"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Actions need change permission on the changelist; the form itself stays read-only.
        return obj is None and request.user.has_perm("governance.change_apitoken")

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            api_token_revoke(actor=request.user, token=token)
        messages.success(request, f"Revoked {queryset.count()} token(s).")
