"""The roles of the service. Each is a Django group (created by a migration) and, per project, a
django-guardian object permission ``governance.role_<name>`` on the project.

One role is not a project's: the organisation-wide auditor (``ORGANISATION_AUDITOR``) reads every
ledger entry, of every project and of the organisation. It is a Django group holding
``ledger.read_all_entries`` (made by the ledger's migration 0003), granted and revoked by
``organisation_auditor_grant`` and ``organisation_auditor_revoke``, both ledgered."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ML_ENGINEER = "ml_engineer"
    DATA_STEWARD = "data_steward"
    SECURITY_REVIEWER = "security_reviewer"
    FAIRNESS_REVIEWER = "fairness_reviewer"
    COMPLIANCE_OFFICER = "compliance_officer"
    AUDITOR = "auditor"
    PLATFORM_ADMIN = "platform_admin"

    @property
    def codename(self) -> str:
        return f"role_{self.value}"

    @property
    def perm(self) -> str:
        return f"governance.{self.codename}"


ROLE_DESCRIPTIONS: dict[Role, str] = {
    Role.ML_ENGINEER: "requests fine-tune runs, scans, evaluations and deployments",
    Role.DATA_STEWARD: "registers datasets and reviews their personal data",
    Role.SECURITY_REVIEWER: "judges security scan evidence and approves or rejects",
    Role.FAIRNESS_REVIEWER: "judges bias evaluation evidence and approves or rejects",
    Role.COMPLIANCE_OFFICER: "approves what policies ask of compliance; handles data-subject requests",
    Role.AUDITOR: "reads everything in the project; changes nothing",
    Role.PLATFORM_ADMIN: "grants roles, manages quotas and service accounts",
}

# Roles whose holders work in the Django admin (every role a person holds: ML engineers follow
# their requests, runs and deployments there and manage their own API tokens).
STAFF_ROLES = frozenset(
    {
        Role.ML_ENGINEER,
        Role.DATA_STEWARD,
        Role.SECURITY_REVIEWER,
        Role.FAIRNESS_REVIEWER,
        Role.COMPLIANCE_OFFICER,
        Role.AUDITOR,
        Role.PLATFORM_ADMIN,
    }
)

# The project roles whose holders read the project's ledger entries (``ledger_readable_project_ids``).
LEDGER_READER_ROLES = frozenset({Role.AUDITOR, Role.COMPLIANCE_OFFICER})

ORGANISATION_AUDITOR = "organisation_auditor"
