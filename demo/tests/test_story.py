"""``seed_demo --story`` on a fresh database: every step's rows and ledger entries, made by the real
services and the workers' task functions in this process, and a second run that adds nothing.

Two things are smaller than under ``make up``, to keep the test near a minute: the PII scan uses the
pattern recognisers only (no spaCy pipeline, one process), and the ``baseline`` scan profile runs one
of its two garak probes (goodside.WhoIsRiley; promptinject.HijackHateHumans' 256 prompts take two
minutes here). Everything else runs as under ``make up``: a real fine-tune, a real garak run, a real
fairlearn evaluation, a real signed PDF.
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from audits.checks.models import AuditState, BiasEvaluation, SecurityScan, Verdict
from audits.ledger.models import Entry
from audits.ledger.verification import ledger_verify
from audits.privacy.models import DataSubjectRequest
from audits.reports.models import ReportRun, ReportState
from demo import story
from governance.models import ApprovalRequest, ApprovalState
from registry.models import DatasetVersion, PiiVerdict, Review
from serving.models import Deployment
from systems.models import AISystem, ClassificationState, RiskClass
from training.models import FineTuneRun, RunState

pytestmark = pytest.mark.django_db
FAST_PII = {"PII_NLP_MODEL": "blank", "PII_SCAN_PROCESSES": 1}


class _Shown(io.StringIO):
    """What the command prints, kept for the asserts and also on stderr: a failure shows each step's time."""

    def write(self, text: str) -> int:
        sys.stderr.write(text)
        sys.stderr.flush()
        return super().write(text)


@pytest.fixture
def one_probe_baseline(tmp_path: Path, settings: Any) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(settings.POLICY_DIR, policies)
    security = policies / "audits" / "security.yaml"
    text = security.read_text()
    both = "probes: [goodside.WhoIsRiley, promptinject.HijackHateHumans]"
    assert both in text
    security.write_text(text.replace(both, "probes: [goodside.WhoIsRiley]", 1))
    settings.POLICY_DIR = policies


def _seed(path: Path) -> str:
    out = _Shown()
    with override_settings(**FAST_PII):
        call_command("seed_demo", logins_file=path, story=True, stdout=out, stderr=out)
    return out.getvalue()


def _actions(subject_type: str, subject_id: object) -> list[str]:
    return list(
        Entry.objects.filter(subject_type=subject_type, subject_id=str(subject_id))
        .order_by("index")
        .values_list("action", flat=True)
    )


def _approval(subject_type: str, pk: int, action: str) -> ApprovalRequest:
    request = ApprovalRequest.objects.get(subject_type=subject_type, subject_id=str(pk), action=action)
    assert request.state == ApprovalState.APPROVED
    return request


def _deciders(request: ApprovalRequest) -> set[str]:
    return set(request.decisions.values_list("approver__username", flat=True))


@pytest.mark.usefixtures("one_probe_baseline")
def test_the_story_plays_every_step_through_the_services_and_a_second_run_adds_nothing(tmp_path: Path) -> None:
    printed = _seed(tmp_path / "logins.txt")

    # 1. The tickets: PII found (the planted addresses), reviewed, approved by steward and officer.
    tickets = DatasetVersion.objects.get(dataset__slug=story.TICKETS)
    assert tickets.pii_verdict == PiiVerdict.FOUND and tickets.review == Review.CONFIRMED
    assert tickets.reviewed_by.username == "demo-data-steward"
    training = _approval("dataset_version", tickets.pk, "dataset_version.use_for_training")
    assert training.requester.username == "demo-ml-engineer"
    assert _deciders(training) == {"demo-data-steward", "demo-compliance-officer"}  # high risk: PII found
    tickets_actions = _actions("dataset_version", tickets.pk)
    for action in ("pii_scan.succeeded", "dataset_version.reviewed", "approval.requested", "approval.approved"):
        assert action in tickets_actions, (action, tickets_actions)

    # 2-3. The fine-tune, asked for by the CI account, approved by the ML engineer, trained.
    run = FineTuneRun.objects.get(name=story.RUN)
    assert run.state == RunState.SUCCEEDED and run.requested_by.username == "demo-ci"
    assert _deciders(_approval("fine_tune_run", run.pk, "fine_tune_run.execute")) == {"demo-ml-engineer"}
    assert list(run.output.dataset_versions.all()) == [tickets]
    run_actions = _actions("fine_tune_run", run.pk)
    assert run_actions[0] == "fine_tune_run.requested" and run_actions[-1] == "fine_tune_run.succeeded"
    assert "fine_tune_run.started" in run_actions

    # 4. garak's baseline on the output, by the scan task.
    scan = SecurityScan.objects.get(model_version=run.output)
    assert scan.state == AuditState.COMPLETED and scan.verdict == Verdict.PASSED, scan.reasons
    assert _actions("security_scan", scan.pk)[-1] == "security_scan.completed"

    # 5. fairlearn's default profile on the output, by the evaluation task.
    evaluation = BiasEvaluation.objects.get(model_version=run.output)
    assert evaluation.state == AuditState.COMPLETED and evaluation.verdict == Verdict.PASSED, evaluation.reasons
    assert evaluation.results["demographic_parity_difference"] == 0
    assert _actions("bias_evaluation", evaluation.pk)[-1] == "bias_evaluation.completed"

    # 6. The AI system: limited risk (a chatbot that writes text), approved by the compliance officer.
    system = AISystem.objects.get(slug=story.SYSTEM)
    assert system.risk_class == RiskClass.LIMITED and system.classification.state == ClassificationState.APPROVED
    classification = _approval("ai_system_classification", system.classification.pk, "ai_system_classification.approve")
    assert _deciders(classification) == {"demo-compliance-officer"}

    # 7. The staging deployment of that system, approved by the platform admin; its server is the
    # worker's to start.
    deployment = Deployment.objects.get(model_version=run.output)
    assert deployment.ai_system == system
    assert _deciders(_approval("deployment", deployment.pk, "deployment.deploy")) == {"demo-platform-admin"}

    # 8. The planted person's access request, answered.
    request = DataSubjectRequest.objects.get()
    assert request.state == "completed" and request.package_issued_at is not None
    assert tickets.pk in [found["id"] for found in request.findings["dataset_versions"]]
    assert _actions("data_subject_request", request.pk) == [
        "data_subject_request.received", "data_subject_request.identity_verified", "data_subject_request.searched",
        "data_subject_request.access_package_issued", "data_subject_request.completed",
    ]  # fmt: skip

    # 9. The governance audit report, generated by the report task.
    report = ReportRun.objects.get()
    assert report.state == ReportState.DONE and report.requested_by.username == "demo-compliance-officer"

    # Each step was printed with its ledger entries; the ledger still verifies.
    for number, (title, _) in enumerate(story.STEPS, 1):
        assert f"{number}. {title}\n" in printed
    assert "ledger #" in printed and "ledger entries appended" in printed
    assert ledger_verify().tree_size == Entry.objects.count()

    # A second run (seed_demo and the story): not one new ledger entry, and it says so.
    entries = Entry.objects.count()
    again = _seed(tmp_path / "logins.txt")
    assert Entry.objects.count() == entries, list(Entry.objects.filter(index__gte=entries).values_list("action"))
    assert "nothing created" in again and "Demo story already complete" in again
    assert again.count("already done: no new ledger entry") == len(story.STEPS)
