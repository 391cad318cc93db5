"""The organisation profile: the controller's identity and contacts, its EU representative, its data
protection officer, its lead supervisory authority, its security measures and its CCPA contact,
which the compliance reports print (``governance.models.OrganisationProfile``).

Only a global admin (``is_platform_admin``) changes it. A project's compliance officer does not:
their authority is one project's, and the profile is printed in the signed reports of every
project, so one project's officer could otherwise change what all the others' reports say of the
organisation. They (and the auditors) read it in the admin, and ask a global admin for a change;
the ledger shows who made each one.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from common.errors import DomainError
from governance.models import OrganisationProfile
from governance.permissions import require_platform_admin

SUBJECT = Subject("organisation", "profile")


def _invalid(fields: dict[str, list[str]]) -> DomainError:
    named = "; ".join(f"{field}: {' '.join(problems)}" for field, problems in fields.items())
    return DomainError("invalid_input", f"the organisation profile was not changed: {named}", fields=fields)


def _cleaned_input(fields: dict[str, Any]) -> dict[str, str]:
    unknown = sorted(set(fields) - set(OrganisationProfile.EDITABLE))
    if unknown:
        raise _invalid({name: ["not a field of the organisation profile"] for name in unknown})
    cleaned, problems = {}, {}
    for name, value in fields.items():
        if value is None:
            value = ""
        if not isinstance(value, str):
            problems[name] = [f"expected text, got {type(value).__name__}"]
        elif "\x00" in value:
            problems[name] = ["may not contain NUL characters"]
        else:
            cleaned[name] = value.strip()
    if problems:
        raise _invalid(problems)
    return cleaned


def organisation_profile_update(*, actor: AbstractBaseUser, **fields: Any) -> OrganisationProfile:
    """Set the fields named (of ``OrganisationProfile.EDITABLE``; text, blank to clear) and leave
    the others as they are; the first call creates the profile. A global admin only.

    In one transaction: the row changes and one ledger entry ``organisation.profile_updated``
    records each changed field's old and new value (business contact details and statements of the
    organisation only), and the row keeps that entry's index, who changed it and when. Input that
    does not validate (an unknown field, a malformed e-mail, phone or web address, a representative
    named without a contact or together with a reason why none is required...) is refused with
    every problem named per field, and nothing changes. A call that changes nothing writes nothing
    and returns the profile as it was.
    """
    require_platform_admin(actor, "change the organisation profile")
    cleaned = _cleaned_input(fields)
    with transaction.atomic():
        profile = OrganisationProfile.objects.select_for_update().filter(pk=1).first() or OrganisationProfile(pk=1)
        changes = {
            name: {"old": getattr(profile, name), "new": value}
            for name, value in cleaned.items()
            if getattr(profile, name) != value
        }
        if not changes:
            return profile
        for name, change in changes.items():
            setattr(profile, name, change["new"])
        try:
            profile.full_clean(exclude=["updated_at", "updated_by", "ledger_index"], validate_constraints=False)
        except ValidationError as exc:
            raise _invalid({field: list(messages) for field, messages in exc.message_dict.items()}) from None
        entry = ledger_append(
            actor=actor,
            action="organisation.profile_updated",
            subject=SUBJECT,
            payload={"changed": {name: changes[name] for name in OrganisationProfile.EDITABLE if name in changes}},
        )
        profile.updated_at, profile.updated_by, profile.ledger_index = timezone.now(), actor, entry.index
        profile.save()
    return profile
