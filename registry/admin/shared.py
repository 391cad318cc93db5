"""What the registry's admin pages share: the roles a user holds in an object's project, and how a
service's refusal is told."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from common.errors import DomainError
from common.security_log import refusal
from governance.models import Project
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role


def roles_in(request: HttpRequest, project: Project) -> set[Role]:
    """The roles the user holds in ``project``; a platform admin holds them all (as the services
    let them act). Pages offer only what these roles may do; the services decide again."""
    if is_platform_admin(request.user):
        return set(Role)
    return project_roles_held(request.user, project)


def refused(request: HttpRequest, exc: DomainError, to: str, **fields: Any) -> HttpResponseRedirect:
    """Tell the user why the service refused (its own words), log it as the API logs a refusal,
    and go back to ``to``: nothing was changed."""
    refusal(request, exc, **fields)
    messages.error(request, exc.message)
    return HttpResponseRedirect(to)


@admin.display(description="created", ordering="created_at")
def created(_admin: Any, obj: Any) -> SafeString:
    """The moment a row was made, as a short local date and time (the whole moment on hover): the
    admin's long form ("Dec. 6, 2026, 4:02 p.m.") pushed the lists' last column out of the window."""
    moment = timezone.localtime(obj.created_at)
    short = f"{moment:%Y-%m-%d %H:%M}"
    return format_html('<time datetime="{}" title="{}">{}</time>', moment.isoformat(), moment, short)
