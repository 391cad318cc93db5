from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    label = "registry"
    verbose_name = "Registry"

    def ready(self) -> None:
        from registry.governed import register

        register()
