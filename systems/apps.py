from django.apps import AppConfig


class SystemsConfig(AppConfig):
    name = "systems"
    label = "systems"
    verbose_name = "AI systems"

    def ready(self) -> None:
        from audits.ledger.scopes import project_by_field, register_subject_project
        from systems.governed import register
        from systems.models import AISystem

        register()
        # The ledger attributes a system's entries to its project (classifications are governed
        # subjects: governance answers for them).
        register_subject_project("ai_system", project_by_field(AISystem, "project_id"))
