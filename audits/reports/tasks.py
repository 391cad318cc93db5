"""Celery tasks of the reports app. They take ids, re-read rows and call services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="reports.generate", acks_late=True)
def generate(report_pk: int) -> str | None:
    from audits.reports.services import report_generate

    run = report_generate(report_pk=report_pk)
    return run.state if run else None


@shared_task(name="reports.reap")
def reap() -> int:
    from audits.reports.services import report_runs_reap

    return report_runs_reap()
