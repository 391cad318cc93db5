from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    label = "serving"
    verbose_name = "Serving"

    def ready(self) -> None:
        from serving.governed import register

        register()
