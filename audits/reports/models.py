"""Compliance reports.

A report run is requested by a compliance officer or auditor, generated on the worker and
stored content-addressed as a signed PDF; its digest is a ledger entry. Rows change only through
``audits.reports.services``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from governance.models import Project


class ReportKind(models.TextChoices):
    GOVERNANCE_AUDIT = "governance_audit", "Governance audit (approvals, duties, break-glass, waivers, roles)"
    RECORDS_OF_PROCESSING = "records_of_processing", "Records of processing (GDPR Art. 30(1))"
    ANNEX_IV = "annex_iv", "Technical documentation (EU AI Act Annex IV) of a model version"
    DPIA = "dpia", "Data protection impact assessment draft (GDPR Art. 35(7)) of a model version"
    CCPA_REQUEST_LOG = "ccpa_request_log", "CCPA request log (§7101)"
    AI_SYSTEM_ANNEX_IV = "ai_system_annex_iv", "Technical documentation (EU AI Act Annex IV) of an AI system"


class ReportState(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed"


class ReportRun(models.Model):
    report_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=32, choices=ReportKind.choices)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    model_version_id = models.IntegerField(null=True, blank=True)
    ai_system_id = models.IntegerField(null=True, blank=True)
    period_start = models.DateField()
    period_end = models.DateField()
    state = models.CharField(max_length=16, choices=ReportState.choices, default=ReportState.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="percent")
    step = models.CharField(max_length=200, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True, help_text="the worker process generating it")
    claimed_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    pdf_sha256 = models.CharField(max_length=64, blank=True)
    pdf_size = models.BigIntegerField(null=True, blank=True)
    checkpoint_size = models.BigIntegerField(null=True, blank=True, help_text="the ledger checkpoint it cites")
    ledger_index = models.BigIntegerField(null=True, blank=True, help_text="the entry recording the PDF's digest")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.period_start}..{self.period_end} ({self.state})"
