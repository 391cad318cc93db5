from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "audits.ledger"
    label = "ledger"
    verbose_name = "Ledger"
