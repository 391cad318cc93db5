from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        from common import security_log
        from governance import checks, ledger_scopes  # noqa: F401  (checks: registers the policy system check)

        security_log.connect_signals()  # session logins, failed logins and logouts: security events
        ledger_scopes.register()  # which project each ledger entry is about, and who reads it


class MfaAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with the site that asks for a second factor (governance/mfa.py):
    every ``admin.site.register`` of every app lands on it."""

    default = False  # "governance" itself is GovernanceConfig
    default_site = "governance.mfa.MfaAdminSite"
