"""Admin pages of the governance app, one module per topic. Read-only: changes go through the
services (and the API), so that every one of them is checked and recorded the same way; the forms
that edit (the organisation profile) save through a service too."""

from governance.admin import approvals, break_glass, organisation, pii_lists, projects, second_factor, tokens
from governance.admin.scoped import ProjectScopedAdmin

__all__ = [
    "ProjectScopedAdmin",
    "approvals",
    "break_glass",
    "organisation",
    "pii_lists",
    "projects",
    "second_factor",
    "tokens",
]
