"""Every entry a project's work appends is attributed to that project, whichever app appended it,
and migration 0003 attributes the entries of a ledger written before attribution existed the same
way (audits/ledger/scopes.py, docs/ledger.md#who-reads-which-entries)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection

from audits.ledger import triggers
from audits.ledger.models import Entry, EntryScope
from tests.test_permission_matrix import MEMBERS, _scenario

# The subjects that belong to no project: people and their tokens, the policy set, the vault's data
# subjects. Every other entry of the scenario is about something of a project.
OF_THE_ORGANISATION = {"user", "api_token", "policy_set", "data_subject"}


def _project_of(entry: Entry) -> int | None:
    """The test's own reckoning of an entry's project, from its subject's row."""
    from audits.checks.models import BiasEvaluation, SecurityScan
    from audits.privacy.models import DataSubjectRequest, LegalHold
    from audits.reports.models import ReportRun
    from governance.models import Project
    from incidents.models import Incident
    from registry.models import Dataset, DatasetVersion, Model, ModelVersion, PromptTemplate
    from serving.models import Deployment, DeploymentAlert
    from systems.models import AISystem, AISystemClassification
    from training.models import FineTuneRun, OptimisationRun

    kind, pk = entry.subject_type, entry.subject_id
    if kind == "project":
        project = Project.objects.filter(slug=pk).first() or Project.objects.get(pk=int(pk))
        return project.pk
    if kind == "dataset_version":
        return DatasetVersion.objects.get(pk=pk).dataset.project_id
    if kind == "model_version":
        return ModelVersion.objects.get(pk=pk).model.project_id
    if kind == "ai_system_classification":
        return AISystemClassification.objects.get(pk=pk).system.project_id
    if kind == "deployment_alert":
        return DeploymentAlert.objects.get(pk=pk).deployment.project_id
    models: dict[str, Any] = {
        "dataset": Dataset, "model": Model, "prompt_template": PromptTemplate, "fine_tune_run": FineTuneRun,
        "security_scan": SecurityScan, "bias_evaluation": BiasEvaluation, "deployment": Deployment,
        "data_subject_request": DataSubjectRequest, "legal_hold": LegalHold, "report": ReportRun,
        "optimisation_run": OptimisationRun, "ai_system": AISystem, "incident": Incident,
    }  # fmt: skip
    assert kind in models or kind in OF_THE_ORGANISATION, (
        f"entry {entry.index}: a subject type the test does not know: {kind}"
    )
    if kind == "report":  # a report's entries name it by its UUID
        return ReportRun.objects.get(report_id=pk).project_id
    return models[kind].objects.get(pk=pk).project_id if kind in models else None


@pytest.mark.django_db
def test_every_entry_is_attributed_to_the_project_of_its_subject_now_and_by_the_migration(
    people: dict[str, Any],
) -> None:
    User = get_user_model()
    _scenario("own", people, {role: User.objects.create_user(username=f"m-{role}") for role in MEMBERS})
    entries = list(Entry.objects.order_by("index"))
    expected = {entry.index: _project_of(entry) for entry in entries}
    attributed = dict(EntryScope.objects.values_list("entry_id", "project_id"))
    assert attributed == expected
    kinds = {entry.subject_type for entry in entries if expected[entry.index] is not None}
    assert len(kinds) >= 12, kinds  # the scenario reaches most subject types of every app

    # A ledger from before attribution: the same entries with no attribution, which the migration adds.
    migration = importlib.import_module("audits.ledger.migrations.0003_entry_scopes_and_organisation_auditors")
    triggers.drop_rollback_unsafe(connection, ("ledger_entryscope",))
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ledger_entryscope")
    migration.attribute_existing_entries(apps, None)
    triggers.install(connection, ("ledger_entryscope",))
    # The migration knows the subject types of its day; a ledger written before attribution holds
    # no entry of a type that came later (AI systems, incidents, optimisation runs, alerts).
    known = {"project", *migration.SUBJECT_PROJECT}
    migrated = {entry.index: expected[entry.index] if entry.subject_type in known else None for entry in entries}
    assert dict(EntryScope.objects.values_list("entry_id", "project_id")) == migrated
