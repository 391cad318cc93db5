"""What governance tells the ledger about projects (``audits/ledger/scopes.py``), registered in
``GovernanceConfig.ready``: the project of a ``project`` subject, the project of every governed
subject type (through the subject-type registry, whichever app registered the type), and the
projects whose entries a user reads (``ledger_readable_project_ids``).

The apps above register their other subject types themselves (the registry its datasets, models
and prompt templates; the privacy app its requests and legal holds; the reports their runs).
"""

from __future__ import annotations

from audits.ledger import scopes
from governance.models import Project
from governance.permissions import ledger_readable_project_ids


def project_subject_project(subject_id: str) -> int | None:
    """A project's entries name it by slug; the GPU quota's name it by primary key."""
    text = str(subject_id)
    found = Project.objects.filter(slug=text).values_list("pk", flat=True).first()
    if found is None and text.isascii() and text.isdigit() and int(text) < 2**63:
        found = Project.objects.filter(pk=int(text)).values_list("pk", flat=True).first()
    return found


def governed_subject_project(subject_type: str, subject_id: str) -> int | None:
    """The project of a governed subject (``governance.subjects``); ``None`` for any other type."""
    from governance.subjects import subject_type as kind_of
    from governance.subjects import subject_types

    if subject_type not in subject_types():
        return None
    kind = kind_of(subject_type)
    obj = kind.get(subject_id)
    return None if obj is None else kind.project(obj).pk


def register() -> None:
    scopes.register_subject_project("project", project_subject_project)
    scopes.register_subject_project_fallback(governed_subject_project)
    scopes.register_readable_projects(ledger_readable_project_ids)
