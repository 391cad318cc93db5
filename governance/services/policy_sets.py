"""The policy set in force, recorded in the ledger the first time it is used."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from audits.ledger.services import Subject, ledger_append
from governance.permissions import SYSTEM_USERNAME
from governance.selectors import policy_set_recorded

User = get_user_model()


def policy_set_in_force() -> Any:
    """The policy set on disk; the first decision under a new set records it in the ledger."""
    from governance.models import PolicySetRecord
    from governance.policy import current_policy_set

    policies = current_policy_set()
    if not policy_set_recorded(policies.hash):
        system = User.objects.get(username=SYSTEM_USERNAME)
        with transaction.atomic():
            # Another process may have recorded it since the read above: the unique hash decides,
            # and the loser leaves the record (and its ledger entry) to the winner.
            try:
                with transaction.atomic():
                    PolicySetRecord.objects.create(hash=policies.hash, files=policies.files)
            except IntegrityError:
                return policies
            ledger_append(
                actor=system, action="policy_set.changed", subject=Subject("policy_set", policies.hash),
                policy_hash=policies.hash, payload={"files": policies.files},
            )  # fmt: skip
    return policies
