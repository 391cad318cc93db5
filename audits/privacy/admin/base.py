"""What the privacy pages share: rows of the viewer's projects only, and actions for compliance
officers only (an auditor reads the same pages without them)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest

from audits.privacy.selectors import officer_projects, privacy_projects
from common.admin import ReadOnlyAdmin


def acts_somewhere(request: HttpRequest) -> bool:
    """Whether the viewer is a compliance officer of some project (platform admins: always), once
    per request: the pages offer actions, add links and action checkboxes only then."""
    cached = getattr(request, "_privacy_officer", None)
    if cached is None:
        cached = officer_projects(user=request.user).exists()
        request._privacy_officer = cached  # type: ignore[attr-defined]
    return cached


class PrivacyAdmin(ReadOnlyAdmin):
    """Rows of the projects where the user is a compliance officer or an auditor."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).filter(project__in=privacy_projects(user=request.user))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Actions need change permission on the list; the object pages stay read-only (their
        # buttons call the services). Readers without an officer's role get no actions at all.
        return (
            obj is None
            and request.user.has_perm(f"privacy.view_{self.model._meta.model_name}")
            and acts_somewhere(request)
        )

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return super().get_actions(request) if acts_somewhere(request) else {}
