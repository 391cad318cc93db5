from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "audits.reports"
    label = "reports"
    verbose_name = "Compliance reports"

    def ready(self) -> None:
        from audits.ledger.scopes import project_by_field, register_subject_project
        from audits.reports import checks  # noqa: F401  (registers the report-signing settings check)
        from audits.reports.models import ReportRun

        # The ledger attributes a report's entries (named by its UUID) to its project; an organisation-wide
        # report has none.
        register_subject_project("report", project_by_field(ReportRun, "project_id", key="report_id"))
