from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "audits.privacy"
    label = "privacy"
    verbose_name = "Data-subject requests"

    def ready(self) -> None:
        from audits.ledger.scopes import project_by_field, register_subject_project
        from audits.privacy.models import DataSubjectRequest, LegalHold

        # The ledger attributes these subjects' entries to their project (its reads are scoped by it).
        register_subject_project("data_subject_request", project_by_field(DataSubjectRequest, "project_id"))
        register_subject_project("legal_hold", project_by_field(LegalHold, "project_id"))
