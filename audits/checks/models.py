"""Security scans (garak) and bias evaluations (fairlearn) of model versions.

Both are governed subjects whose digests cover the model's weights, the profile they ran under and
their report's content digest, so a waiver (an approval of ``security_scan.waive`` or
``bias_evaluation.waive``) counts only for the report it was given to. Rows change only through
``audits.checks.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from audits.checks.special_category import LEGAL_BASES, SPECIAL_CATEGORIES
from governance.models import Project
from registry.models import DatasetVersion, ModelVersion, PromptTemplate


class AuditState(models.TextChoices):
    REQUESTED = "requested", "requested (waiting for approval)"
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed to run"
    CANCELLED = "cancelled", "cancelled"


OPEN_STATES = (AuditState.REQUESTED, AuditState.QUEUED, AuditState.RUNNING)


class Verdict(models.TextChoices):
    NONE = "", "no verdict yet"
    PASSED = "passed", "passed"
    FAILED = "failed", "failed"


class Trigger(models.TextChoices):
    REQUEST = "request", "requested by a person"
    SCHEDULE = "schedule", "scheduled re-scan"


class _Audit(models.Model):
    """What scans and evaluations share: the model version, the profile, execution and verdict."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    weights_digest = models.CharField(max_length=71, help_text="the model version's digest when requested")
    profile_name = models.CharField(max_length=100)
    profile = models.JSONField(help_text="the profile as it was when requested")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.REQUEST)
    state = models.CharField(max_length=16, choices=AuditState.choices, default=AuditState.REQUESTED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    idempotency_key = models.UUIDField(null=True, blank=True, unique=True, default=None)
    claimed_by = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    verdict = models.CharField(max_length=8, choices=Verdict.choices, default=Verdict.NONE, blank=True)
    reasons = models.JSONField(default=list, blank=True, help_text="why the verdict is what it is")
    report_digest = models.CharField(max_length=71, blank=True, help_text="the report in the artifact store")
    regression_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="the passing run this one regressed from",
    )  # fmt: skip

    class Meta:
        abstract = True
        ordering = ["-created_at"]


class SecurityScan(_Audit):
    findings = models.JSONField(default=list, blank=True, help_text="per probe and detector")
    garak_version = models.CharField(max_length=50, blank=True)

    class Meta(_Audit.Meta):
        indexes = [models.Index(fields=["model_version", "profile_name", "state"], name="checks_scan_lookup")]

    def __str__(self) -> str:
        return f"security scan {self.pk} of {self.model_version} ({self.profile_name})"


class BiasEvaluation(_Audit):
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="+")
    prompt_template = models.ForeignKey(PromptTemplate, on_delete=models.PROTECT, related_name="+")
    label_field = models.CharField(max_length=200)
    sensitive_feature = models.CharField(max_length=200)
    special_category = models.CharField(
        max_length=40, blank=True, choices=list(SPECIAL_CATEGORIES.items()),
        help_text="the GDPR Art. 9 category of the sensitive feature; empty when it is none",
    )  # fmt: skip
    legal_basis = models.CharField(
        max_length=40, blank=True, choices=list(LEGAL_BASES.items()),
        help_text="the basis for processing special-category data for bias detection (AI Act Art. 10(5))",
    )  # fmt: skip
    safeguards_confirmed = models.JSONField(
        default=list, blank=True, help_text="the points (a)-(f) of Art. 10(5) the requester confirmed"
    )
    label_mapping = models.JSONField(help_text="answer prefix -> label")
    results = models.JSONField(default=dict, blank=True)
    chart_digest = models.CharField(max_length=71, blank=True)

    class Meta(_Audit.Meta):
        indexes = [models.Index(fields=["model_version", "profile_name", "state"], name="checks_eval_lookup")]

    def __str__(self) -> str:
        return f"bias evaluation {self.pk} of {self.model_version} ({self.profile_name})"
