from django.apps import AppConfig


class SystemsConfig(AppConfig):
    name = "systems"
    label = "systems"
    verbose_name = "AI systems"
