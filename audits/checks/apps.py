from django.apps import AppConfig


class ChecksConfig(AppConfig):
    name = "audits.checks"
    label = "checks"
    verbose_name = "Model audits"

    def ready(self) -> None:
        from audits.checks import checks  # noqa: F401  (registers the system check)
        from audits.checks.governed import register

        register()
