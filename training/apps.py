from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    label = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from training.governed import register

        register()
