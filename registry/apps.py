from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    label = "registry"
    verbose_name = "Registry"

    def ready(self) -> None:
        from audits.ledger.scopes import project_by_field, register_subject_project
        from registry.governed import register
        from registry.models import Dataset, Model, PromptTemplate

        register()
        # The ledger attributes these subjects' entries to their project (its reads are scoped by it).
        for name, model in (("dataset", Dataset), ("model", Model), ("prompt_template", PromptTemplate)):
            register_subject_project(name, project_by_field(model, "project_id"))
