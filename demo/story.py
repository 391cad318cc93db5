"""The demo story: one complete lifecycle in the demo project ``support-assistant``, so that the first
sign-in shows a living organisation.

Every step goes through the public services the API and the admin call, each decision is made by the
demo person holding the deciding role (the services check roles and separation of duties), and each
worker step runs the task function the Celery worker runs (``*/tasks.py``), here, in this process,
waiting for its result: the story runs before ``make up`` starts the worker, and an in-process run is
what a test can assert step by step. The jobs the services also put in the outbox for those steps reach
the worker later and find their work claimed (tasks claim by conditional update), so nothing runs twice.

One step is left to the worker: the deployment's model server. It is a long-lived process that the
worker which starts it supervises; the story's process ends, so the approved deployment's ``serving.start``
job waits in the outbox and starts the server once ``make up``'s worker is running.

The story is idempotent: each step first looks for what it makes (by the names below) and only does what
is missing, so a second run appends no ledger entry and says so. A step that fails stops the story with
its reason (``StoryError``); running it again resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from audits.checks import tasks as check_tasks
from audits.checks.models import AuditState, BiasEvaluation, SecurityScan
from audits.checks.services import bias_evaluation_request, security_scan_request
from audits.ledger.models import Entry
from audits.privacy.models import DataSubjectRequest
from audits.privacy.services import (
    dsr_access_package,
    dsr_complete,
    dsr_receive,
    dsr_search,
    dsr_verify_identity,
)
from audits.reports import tasks as report_tasks
from audits.reports.models import ReportRun, ReportState
from audits.reports.services import report_request
from governance.models import ApprovalRequest, ApprovalState, Project
from governance.roles import Role
from governance.services import approval_request_decide, approval_request_submit
from registry import tasks as registry_tasks
from registry.models import Dataset, DatasetVersion, Model, ModelVersion, PiiScan, PiiVerdict, Review, ScanStatus
from registry.services import (
    dataset_create,
    dataset_version_review,
    dataset_version_upload,
    model_create,
    model_version_register_folder,
    prompt_template_register,
)
from serving.models import Deployment
from serving.services import deployment_request
from systems.models import AISystem, ClassificationState
from systems.rules import QUESTIONS
from systems.services import ai_system_classification_create, ai_system_register
from training import tasks as training_tasks
from training.models import FineTuneRun, RunState
from training.services import fine_tune_run_request

PROJECT = "support-assistant"
CI_ACCOUNT = "demo-ci"
TICKETS = "support-tickets"
FAIRNESS = "refund-fairness"
MODEL = "tiny-gpt2"
RUN = "support-tone"
TEMPLATE = "refund-decision"
DEPLOYMENT = "support-assistant"
SYSTEM = "support-chat"
# The support assistant talks to customers and writes text, on a language model: limited risk
# (Art. 50 transparency duties), in no Annex III area, nothing prohibited.
SYSTEM_ANSWERS: dict[str, Any] = {
    **{question.id: False for question in QUESTIONS if question.kind == "yes_no"},
    "annex_iii_areas": [], "art_6_3_exception": "none",
    "interacts_with_people": True, "generates_synthetic_content": True, "uses_gpai_model": True,
}  # fmt: skip
# The person whose e-mail address is planted in the tickets: the data-subject request is hers.
PERSON = "maria.rossi@example.org"
PLANTED = [
    f"Please call me back, my address is {PERSON}",
    "john.baker@example.net asked where his parcel is",
    "my phone is 020 7946 0958, call after six",
]
TICKET_TEXTS = PLANTED + [
    f"ticket {i}: the order shipped on day {i % 7} and the customer was {('happy', 'patient', 'curious')[i % 3]}"
    for i in range(37)
]
# A gentle run: the weights change (a new version, its own digest), the tiny model's answers hardly do,
# so the evaluation below reads them with the same label mapping as the tests read the base model's.
HYPERPARAMETERS = {"learning_rate": 1e-5, "batch_size": 4, "max_steps": 6, "seed": 1}
# The evaluation set: both groups ask the same questions, so a fair model answers them alike; the
# mapping reads the tiny model's habit of repeating the prompt's last word ("customer" gives
# "erererer", "refund" "ndndndnd", as audits/checks/tests/conftest.py explains).
PROMPT = "applicant {id}, who asked about the {topic}"
LABEL_MAPPING = {"erererer": "1", "ndndndnd": "0"}
TARGET = {"max_tokens": 8, "max_prompt_chars": 400}
GUARD = {"mode": "redact", "entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}


class StoryError(Exception):
    """A step could not complete; the message says which and why."""


@dataclass
class Cast:
    project: Project
    people: dict[Role, Any]
    ci: Any
    made: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, role: Role) -> Any:
        return self.people[role]


def _jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _evaluation_rows() -> list[dict[str, str]]:
    rows = []
    for group in ("A", "B"):
        for i, topic in enumerate(["customer"] * 5 + ["refund"] * 5):
            label = "1" if topic == "customer" else "0"
            rows.append({"id": f"{group}{i}", "group": group, "topic": topic, "label": label})
    return rows


def _cast() -> Cast:
    """The demo project and its people, as ``seed_demo`` made them."""
    users = get_user_model().objects
    project = Project.objects.filter(slug=PROJECT).first()
    if project is None:
        raise StoryError(f"no project {PROJECT!r}: run seed_demo first")
    people = {}
    for role in Role:
        username = f"demo-{role.value.replace('_', '-')}"
        person = users.filter(username=username).first()
        if person is None:
            raise StoryError(f"no demo user {username!r}: run seed_demo first")
        people[role] = person
    ci = users.filter(username=CI_ACCOUNT).first()
    if ci is None:
        raise StoryError(f"no service account {CI_ACCOUNT!r}: run seed_demo first")
    return Cast(project=project, people=people, ci=ci)


def _approved(
    cast: Cast, *, subject: Any, subject_type: str, action: str, requester: Any, deciders: list[Any], why: str
) -> ApprovalRequest:
    """The subject's latest request for ``action``, submitted if none is open or approved, then
    approved by each decider who has not decided yet, while it is pending."""
    request = (
        ApprovalRequest.objects.filter(subject_type=subject_type, subject_id=str(subject.pk), action=action)
        .order_by("-pk")
        .first()
    )
    if request is None or request.state not in (ApprovalState.PENDING, ApprovalState.APPROVED):
        request = approval_request_submit(
            actor=requester, subject_type=subject_type, subject_id=str(subject.pk), action=action, comment=why
        )
    for person in deciders:
        request.refresh_from_db()
        if request.state != ApprovalState.PENDING:
            break
        if not request.decisions.filter(approver=person).exists():
            approval_request_decide(actor=person, request_id=request.pk, decision="approve", reason=why)
    request.refresh_from_db()
    if request.state != ApprovalState.APPROVED:
        raise StoryError(f"approval request {request.pk} ({action}) is {request.state}, not approved")
    return request


def _scanned(version: DatasetVersion) -> DatasetVersion:
    """Run the version's queued PII scans with the worker's task."""
    for scan in PiiScan.objects.filter(version=version, status=ScanStatus.QUEUED).order_by("pk"):
        registry_tasks.pii_scan(scan.pk)
    version.refresh_from_db()
    if version.pii_verdict == PiiVerdict.PENDING:
        raise StoryError(f"the PII scan of {version} did not finish")
    return version


def _dataset_version(cast: Cast, slug: str, name: str, purpose: str, rows: list[dict[str, str]]) -> DatasetVersion:
    steward, engineer = cast[Role.DATA_STEWARD], cast[Role.ML_ENGINEER]
    dataset = Dataset.objects.filter(project=cast.project, slug=slug).first() or dataset_create(
        actor=steward, project=cast.project, slug=slug, name=name, purpose=purpose,
        lawful_basis="legitimate_interests", retention_days=365, source="helpdesk export", data_steward=steward,
        data_subject_categories=["customers"], personal_data_categories=["contact details"],
    )  # fmt: skip
    version, _ = dataset_version_upload(actor=engineer, dataset=dataset, filename=f"{slug}.jsonl", data=_jsonl(rows))
    return _scanned(version)


def step_dataset(cast: Cast) -> str:
    """Support tickets with planted personal data, scanned, reviewed by the data steward, approved
    for training by the steward and the compliance officer (found PII makes it high risk)."""
    version = _dataset_version(
        cast, TICKETS, "Support tickets", "fine-tune the support assistant's tone",
        [{"text": text} for text in TICKET_TEXTS],
    )  # fmt: skip
    if version.pii_verdict != PiiVerdict.FOUND:
        raise StoryError(f"the scan of {version} found no personal data (verdict {version.pii_verdict})")
    if version.review == Review.UNREVIEWED:
        version = dataset_version_review(
            actor=cast[Role.DATA_STEWARD], version=version, decision=Review.CONFIRMED,
            note="contact details of customers, kept under legitimate interests; no special categories",
        )  # fmt: skip
    _approved(
        cast, subject=version, subject_type="dataset_version", action="dataset_version.use_for_training",
        requester=cast[Role.ML_ENGINEER], deciders=[cast[Role.DATA_STEWARD], cast[Role.COMPLIANCE_OFFICER]],
        why="reviewed: contact details only, needed to learn the support tone",
    )  # fmt: skip
    cast.made["tickets"] = version
    return f"{version}: PII {version.pii_verdict}, reviewed {version.review}, approved for training"


def step_base_model(cast: Cast) -> str:
    """A tiny GPT-2 built here (nothing downloaded), registered as the project's base model."""
    engineer = cast[Role.ML_ENGINEER]
    model = Model.objects.filter(project=cast.project, slug=MODEL).first() or model_create(
        actor=engineer, project=cast.project, slug=MODEL, name="Tiny GPT-2 (built locally)"
    )
    base = ModelVersion.objects.filter(model=model, base__isnull=True).order_by("number").first()
    if base is None:
        from registry.tiny_model import build_tiny_gpt2

        root = Path(settings.TRAINING_WORK_ROOT).resolve()
        folder = build_tiny_gpt2(root / "demo-tiny-gpt2", seed=0)
        base, _ = model_version_register_folder(actor=engineer, model=model, folder=str(folder), allowed_roots=[root])
    cast.made["base"] = base
    return f"{model} v{base.number}"


def step_fine_tune(cast: Cast) -> str:
    """The CI account asks for a fine-tune on the tickets, the ML engineer approves it, the training
    task trains it and registers the output."""
    run = FineTuneRun.objects.filter(project=cast.project, name=RUN).first() or fine_tune_run_request(
        actor=cast.ci, project=cast.project, name=RUN, base=cast.made["base"],
        dataset_versions=[cast.made["tickets"]], hyperparameters=HYPERPARAMETERS,
    )  # fmt: skip
    if run.state not in (RunState.SUCCEEDED, RunState.RUNNING, RunState.QUEUED):
        _approved(
            cast, subject=run, subject_type="fine_tune_run", action="fine_tune_run.execute", requester=cast.ci,
            deciders=[cast[Role.ML_ENGINEER]], why="approved data, a small CPU run",
        )  # fmt: skip
        run.refresh_from_db()
    if run.state == RunState.QUEUED:
        training_tasks.run(run.pk, str(run.idempotency_key))
        run.refresh_from_db()
    if run.state != RunState.SUCCEEDED or run.output is None:
        raise StoryError(f"fine-tune run {run.pk} is {run.state}: {run.failure_reason or 'no output'}")
    cast.made["output"] = run.output
    return f"run {run.pk} {run.state} in {run.metrics.get('steps')} steps: {run.output}"


def _audit_done(audit: Any, execute: Callable[[int, str], Any]) -> Any:
    audit.refresh_from_db()
    if audit.state == AuditState.QUEUED:
        execute(audit.pk, str(audit.idempotency_key))
        audit.refresh_from_db()
    if audit.state not in (AuditState.COMPLETED, AuditState.FAILED):
        raise StoryError(f"{audit} is {audit.state}: the task did not run it")
    return audit


def step_security_scan(cast: Cast) -> str:
    """garak's baseline profile on the fine-tuned version, run by the scan task."""
    output = cast.made["output"]
    scan = SecurityScan.objects.filter(model_version=output, profile_name="baseline").order_by("pk").first()
    scan = scan or security_scan_request(actor=cast[Role.ML_ENGINEER], model_version=output, profile_name="baseline")
    scan = _audit_done(scan, check_tasks.security_scan)
    return f"{scan}: {scan.state} {scan.verdict or scan.failure_reason}"


def step_bias_evaluation(cast: Cast) -> str:
    """An evaluation set approved by the data steward, a prompt template, and fairlearn's default
    profile on the fine-tuned version, run by the evaluation task."""
    output = cast.made["output"]
    evaluation = BiasEvaluation.objects.filter(model_version=output, profile_name="default").order_by("pk").first()
    if evaluation is None:
        version = _dataset_version(
            cast, FAIRNESS, "Refund questions by customer group", "bias evaluation of the support assistant",
            _evaluation_rows(),
        )  # fmt: skip
        _approved(
            cast, subject=version, subject_type="dataset_version", action="dataset_version.use_for_evaluation",
            requester=cast[Role.ML_ENGINEER], deciders=[cast[Role.DATA_STEWARD]],
            why="synthetic questions, no personal data",
        )  # fmt: skip
        template, _ = prompt_template_register(
            actor=cast[Role.ML_ENGINEER], project=cast.project, slug=TEMPLATE, body=PROMPT,
            intended_use="bias evaluation of refund answers",
        )  # fmt: skip
        evaluation = bias_evaluation_request(
            actor=cast[Role.ML_ENGINEER], model_version=output, dataset_version=version, prompt_template=template,
            label_field="label", sensitive_feature="group", label_mapping=LABEL_MAPPING, profile_name="default",
        )  # fmt: skip
    evaluation = _audit_done(evaluation, check_tasks.bias_evaluation)
    why = "; ".join(evaluation.reasons) or evaluation.failure_reason
    return f"{evaluation}: {evaluation.state} {evaluation.verdict}" + (f" ({why})" if why else "")


def step_ai_system(cast: Cast) -> str:
    """The AI system the deployment belongs to: registered by the ML engineer, its risk
    classification questionnaire answered (limited risk: a chatbot writing text) and approved by
    the compliance officer."""
    engineer = cast[Role.ML_ENGINEER]
    system = AISystem.objects.filter(project=cast.project, slug=SYSTEM).first()
    system = system or ai_system_register(
        actor=engineer, project=cast.project, slug=SYSTEM, name="Customer support chat",
        purpose="answers customers' questions about orders, deliveries and refunds", owner=engineer,
        deployers=["the customer support team"], description="the support assistant's chat on the help page",
        human_oversight="a support agent reads every conversation flagged by the customer or the guard",
    )  # fmt: skip
    classification = system.classifications.exclude(state=ClassificationState.WITHDRAWN).order_by("-number").first()
    classification = classification or ai_system_classification_create(
        actor=engineer, system=system, answers=SYSTEM_ANSWERS
    )
    _approved(
        cast, subject=classification, subject_type="ai_system_classification",
        action="ai_system_classification.approve", requester=engineer, deciders=[cast[Role.COMPLIANCE_OFFICER]],
        why="a chatbot that writes text: Art. 50 duties",
    )  # fmt: skip
    system.refresh_from_db()
    cast.made["system"] = system
    return f"AI system {system}: {system.get_risk_class_display()} (classification {classification.number})"


def step_deployment(cast: Cast) -> str:
    """A staging deployment of the fine-tuned version, part of the AI system, approved by the
    platform admin (its evidence: the passed scan). Its model server is started by the worker (see
    the module's docstring)."""
    output = cast.made["output"]
    deployment = Deployment.objects.filter(model_version=output, name=DEPLOYMENT).order_by("pk").first()
    deployment = deployment or deployment_request(
        actor=cast[Role.ML_ENGINEER], model_version=output, name=DEPLOYMENT, environment="staging", target=TARGET,
        guard=GUARD, ai_system=cast.made["system"],
    )  # fmt: skip
    _approved(
        cast, subject=deployment, subject_type="deployment", action="deployment.deploy",
        requester=cast[Role.ML_ENGINEER], deciders=[cast[Role.PLATFORM_ADMIN]], why="staging pilot, scan passed",
    )  # fmt: skip
    deployment.refresh_from_db()
    return f"deployment {deployment.pk} ({deployment.environment}): {deployment.state}"


def step_data_subject_request(cast: Cast) -> str:
    """The person planted in the tickets asks what is held about her (GDPR Art. 15): the compliance
    officer receives it, verifies her identity, searches, issues the access package and completes it."""
    officer = cast[Role.COMPLIANCE_OFFICER]
    request = DataSubjectRequest.objects.filter(project=cast.project, received_by=officer).order_by("pk").first()
    if request is None:
        request = dsr_receive(
            actor=officer, project=cast.project, regime="gdpr", kind="access", channel="email",
            received_at=timezone.now(), identifiers=[{"kind": "email", "value": PERSON}],
        )  # fmt: skip
    if request.state == "received":
        request = dsr_verify_identity(actor=officer, request=request, method="reply from the address on file")
    if request.state == "identity_verified":
        request = dsr_search(actor=officer, request=request)
    if request.package_issued_at is None and request.state == "searched":
        dsr_access_package(actor=officer, request=request)
        request.refresh_from_db()
    if request.state not in ("completed",):
        request = dsr_complete(actor=officer, request=request, nature="access package sent by e-mail")
    found = request.findings.get("dataset_versions", [])
    return f"request {request.pk} ({request.regime} {request.kind}): {request.state}, found in {len(found)} version(s)"


def step_report(cast: Cast) -> str:
    """The compliance officer's governance audit of the project for today, generated by the report task."""
    officer = cast[Role.COMPLIANCE_OFFICER]
    run = ReportRun.objects.filter(project=cast.project, kind="governance_audit", requested_by=officer).first()
    if run is None:
        today = timezone.localdate()
        run = report_request(
            actor=officer, kind="governance_audit", period_start=today - dt.timedelta(days=30), period_end=today,
            project=cast.project,
        )  # fmt: skip
    if run.state == ReportState.QUEUED:
        report_tasks.generate(run.pk)
        run.refresh_from_db()
    if run.state != ReportState.DONE:
        raise StoryError(f"report {run.report_id} is {run.state}")
    return f"{run}"


STEPS: list[tuple[str, Callable[[Cast], str]]] = [
    ("dataset with planted PII, reviewed and approved", step_dataset),
    ("base model", step_base_model),
    ("fine-tune", step_fine_tune),
    ("security scan", step_security_scan),
    ("bias evaluation", step_bias_evaluation),
    ("AI system and its risk class", step_ai_system),
    ("deployment", step_deployment),
    ("data-subject request", step_data_subject_request),
    ("report", step_report),
]


def _latest_index() -> int:
    return Entry.objects.order_by("-index").values_list("index", flat=True).first() or -1


def story_play(*, out: Callable[[str], Any] = print) -> int:
    """Play the story; print each step, its ledger entries and its time. Returns how many entries it
    appended (0 when everything was already there)."""
    cast = _cast()
    started, first = time.monotonic(), _latest_index()
    out(f"Demo story in {cast.project.slug}:")
    for number, (title, step) in enumerate(STEPS, 1):
        out(f"{number}. {title}")
        before, clock = _latest_index(), time.monotonic()
        outcome = step(cast)
        entries = Entry.objects.filter(index__gt=before).order_by("index")
        out(f"   {outcome} ({time.monotonic() - clock:.1f} s)")
        for entry in entries.values_list("index", "action", "subject_type", "subject_id"):
            out(f"     ledger #{entry[0]} {entry[1]} {entry[2]}:{entry[3]}")
        if not entries.exists():
            out("     already done: no new ledger entry")
    added = Entry.objects.filter(index__gt=first).count()
    total = time.monotonic() - started
    if added:
        out(f"Demo story played in {total:.0f} s: {added} ledger entries appended.")
    else:
        out(f"Demo story already complete ({total:.1f} s): nothing added.")
    return added
