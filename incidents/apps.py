from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"
    label = "incidents"
    verbose_name = "Incidents"

    def ready(self) -> None:
        from audits.ledger.backup.journal import register_before_reapply
        from audits.ledger.scopes import project_by_field, register_subject_project
        from incidents.models import Incident
        from incidents.services import incident_text_erase_restored

        # The ledger attributes an incident's entries to its project (its reads are scoped by it).
        register_subject_project("incident", project_by_field(Incident, "project_id"))
        # A restore blanks again the free text an erasure blanked after the backup was taken.
        register_before_reapply(incident_text_erase_restored)
