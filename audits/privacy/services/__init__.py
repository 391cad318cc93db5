"""Writes of the data-subject request workflow. Each checks the actor's role (a compliance officer
of the request's project, or a platform admin), changes the rows and appends its ledger entries in
one transaction; bad input or a bad transition raises a ``DomainError`` and changes nothing.

The requester's identifiers are sealed in the ledger vault under the request's ``subject_ref``;
ledger payloads hold ids, keyed hashes and sealed values only. Erasure shreds that key last.

The services live in modules by stage: ``intake`` (receive, confirm receipt, verify identity,
search), ``access`` (the access package and its signed letter), ``responses`` (extend, deny, withdraw, complete),
``erasure`` (the erasure's plan, erase, close a model review), ``holds`` (legal holds) and ``flagging`` (deadline
flags). The rules they apply are in ``audits.privacy.identifiers`` and
``audits.privacy.deadlines``; where a person's data lies is read by ``audits.privacy.selectors``.
"""

from audits.privacy.identifiers import ENTITY_OF_KIND, IDENTIFIER_KINDS
from audits.privacy.selectors import models_trained_on
from audits.privacy.services.access import (
    AUTOMATED_DECISIONS,
    RIGHTS,
    dsr_access_package,
    dsr_letter_record,
    package_sha256,
)
from audits.privacy.services.erasure import ErasurePlan, dsr_erase, dsr_erasure_plan, model_review_close
from audits.privacy.services.flagging import DUE_SOON, deadline_status, dsr_deadlines_flag
from audits.privacy.services.holds import legal_hold_place, legal_hold_release
from audits.privacy.services.intake import (
    EARLIEST_RECEIVED,
    dsr_confirm_receipt,
    dsr_receive,
    dsr_search,
    dsr_verify_identity,
)
from audits.privacy.services.responses import dsr_complete, dsr_deny, dsr_extend, dsr_withdraw
from audits.privacy.services.shared import request_digest

__all__ = [
    "AUTOMATED_DECISIONS",
    "DUE_SOON",
    "EARLIEST_RECEIVED",
    "ENTITY_OF_KIND",
    "IDENTIFIER_KINDS",
    "RIGHTS",
    "ErasurePlan",
    "deadline_status",
    "dsr_access_package",
    "dsr_complete",
    "dsr_confirm_receipt",
    "dsr_deadlines_flag",
    "dsr_deny",
    "dsr_erase",
    "dsr_erasure_plan",
    "dsr_extend",
    "dsr_letter_record",
    "dsr_receive",
    "dsr_search",
    "dsr_verify_identity",
    "dsr_withdraw",
    "legal_hold_place",
    "legal_hold_release",
    "model_review_close",
    "models_trained_on",
    "package_sha256",
    "request_digest",
]
