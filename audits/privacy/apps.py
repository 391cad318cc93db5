from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "audits.privacy"
    label = "privacy"
    verbose_name = "Data-subject requests"
