"""The contents of each report, read from the inventory and the ledger (read-only).

Each builder returns an ``audits.reports.pdf.Report``: tables whose rows cite the ledger index of
the entry they come from (only entries inside the checkpoint the report is built from), charts,
and the checkpoint's signed note. Reads are batched per table, so a report costs a handful of
queries per section, not one per row.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from audits.reports.builders.ai_systems import system_annex_iv
from audits.reports.builders.approvals import governance_audit
from audits.reports.builders.consumer_requests import ccpa_request_log
from audits.reports.builders.model_documents import annex_iv, dpia
from audits.reports.builders.organisation import organisation, organisation_sections
from audits.reports.builders.processing import records_of_processing
from audits.reports.builders.shared import Progress, scope
from audits.reports.claims import Claims
from audits.reports.models import ReportKind, ReportRun
from audits.reports.pdf import Report

__all__ = [
    "Progress",
    "annex_iv",
    "build",
    "ccpa_request_log",
    "dpia",
    "governance_audit",
    "records_of_processing",
    "system_annex_iv",
]


def build(run: ReportRun, *, checkpoint: Any, progress: Progress) -> Report:
    builder = {
        ReportKind.GOVERNANCE_AUDIT: governance_audit,
        ReportKind.RECORDS_OF_PROCESSING: records_of_processing,
        ReportKind.ANNEX_IV: annex_iv,
        ReportKind.DPIA: dpia,
        ReportKind.CCPA_REQUEST_LOG: ccpa_request_log,
        ReportKind.AI_SYSTEM_ANNEX_IV: system_annex_iv,
    }[ReportKind(run.kind)]
    claims = Claims()
    org, missing = organisation(checkpoint.tree_size, claims)
    title, sections = builder(run, checkpoint.tree_size, progress, claims, org)
    gaps = []
    if missing:
        gaps.append(f"the organisation profile lacks {', '.join(missing)}: a global admin completes it in the admin "
                    "(Organisation profile)")  # fmt: skip
    if claims.missing:
        gaps.append(f"the registry lacks {', '.join(claims.missing)}")
    draft = "; ".join(gaps) + ("; then the report is generated again" if gaps else "")
    return Report(
        title=title, scope=scope(run), period_start=run.period_start, period_end=run.period_end,
        generated_at=timezone.now().replace(microsecond=0), checkpoint_text=checkpoint.note,
        sections=[*organisation_sections(org, run.kind), *sections], kind=run.kind, report_id=str(run.report_id),
        claims=tuple(claims.items), draft_notice=draft,
    )  # fmt: skip
