"""System check: the report-signing settings are usable (key, certificate chain, trust anchors).
The embedded default's key and certificate not made yet is no problem: they are made on first use."""

from __future__ import annotations

from typing import Any

from django.core import checks


@checks.register("reports")
def check_report_signing(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from audits.reports.services import report_signing_problem

    problem = report_signing_problem()
    # The problem starts with the setting at fault (REPORTS_SIGNING_KEY_FILE: ...).
    return [] if problem is None else [checks.Error(problem, id="reports.E001")]
