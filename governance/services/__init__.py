"""Writes of the governance app. Every function takes the acting user and checks permission.

One module per sub-domain; every public name is importable from here, as it always was:

- ``projects``: projects, and the roles granted and revoked in them;
- ``auditors``: the organisation-wide auditors, who read every ledger entry;
- ``accounts``: service accounts and API tokens;
- ``policy_sets``: the policy set in force, recorded the first time it is used;
- ``approvals``: approval requests submitted, withdrawn, expired;
- ``decisions``: approvals and rejections, under separation of duties;
- ``break_glass``: emergency approvals and their review;
- ``organisation``: the organisation profile the reports print;
- ``pii_lists``: a project's PII allow-list and deny-list entries.

Rules that change nothing live in ``governance.rules`` and reads in ``governance.selectors``; the
ones callers have always named here are re-exported. A test that replaces a name replaces it in
the module that looks it up (``governance.services.approvals.approval_request_withdraw``), not here.
"""

from __future__ import annotations

from governance.rules import REQUESTER_ROLES, SEPARATION_OF_DUTIES_CODES, PolicyViolation
from governance.selectors import approval_holds
from governance.services.accounts import (
    api_token_authenticate,
    api_token_create,
    api_token_create_for_service_account,
    api_token_create_own,
    api_token_may_revoke,
    api_token_revoke,
    service_account_create,
)
from governance.services.approvals import (
    approval_request_submit,
    approval_request_withdraw,
    approval_requests_expire_due,
    subject_pending_requests_withdraw,
)
from governance.services.auditors import organisation_auditor_grant, organisation_auditor_revoke
from governance.services.break_glass import approval_break_glass, break_glass_review_close
from governance.services.decisions import approval_request_decide
from governance.services.organisation import organisation_profile_update
from governance.services.pii_lists import (
    allow_value_hash,
    pii_list_entry_add,
    pii_list_entry_remove,
    pii_rule_validate,
)
from governance.services.projects import project_create, project_role_grant, project_role_revoke

__all__ = [
    "REQUESTER_ROLES",
    "SEPARATION_OF_DUTIES_CODES",
    "PolicyViolation",
    "allow_value_hash",
    "api_token_authenticate",
    "api_token_create",
    "api_token_create_for_service_account",
    "api_token_create_own",
    "api_token_may_revoke",
    "api_token_revoke",
    "approval_break_glass",
    "approval_holds",
    "approval_request_decide",
    "approval_request_submit",
    "approval_request_withdraw",
    "approval_requests_expire_due",
    "break_glass_review_close",
    "organisation_auditor_grant",
    "organisation_auditor_revoke",
    "organisation_profile_update",
    "pii_list_entry_add",
    "pii_list_entry_remove",
    "pii_rule_validate",
    "project_create",
    "project_role_grant",
    "project_role_revoke",
    "service_account_create",
    "subject_pending_requests_withdraw",
]
