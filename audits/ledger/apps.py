from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "audits.ledger"
    label = "ledger"
    verbose_name = "Ledger"

    def ready(self) -> None:
        from audits.ledger import checks  # noqa: F401  (registers the signing-key system check)
