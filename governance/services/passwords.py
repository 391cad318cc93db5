"""Passwords set for a person by someone else (an administrator, or the system seeding the demo):
a governed change of who can sign in, so it is ledgered like a role grant.

A person changing their own password goes through Django's own form, which asks for the old one;
this is the other path. The password itself never reaches the ledger, in clear or hashed.

Imported directly (``from governance.services.passwords import user_password_set``).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from audits.ledger.services import Subject, ledger_append
from common.errors import DomainError
from governance.permissions import require_platform_admin

User = get_user_model()


def user_password_set(*, actor: AbstractBaseUser, user: AbstractBaseUser, password: str, reason: str) -> None:
    """Set ``user``'s password (a reset by a platform admin or the system account), checked by the
    configured password validators, and ledger it as ``user.password_set`` with the reason.

    Refused, changing nothing: an actor who is not a platform admin, a blank reason, a password the
    validators reject (the error names the field and each rule), a service account (it signs in by
    API token only), an inactive user."""
    require_platform_admin(actor, "set another person's password")
    if not reason.strip():
        raise DomainError(
            "invalid_input", "say why: a password reset needs a reason", fields={"reason": ["may not be blank"]}
        )
    if hasattr(user, "service_account"):
        raise DomainError(
            "service_account", f"{user.get_username()!r} is a service account: it signs in by API token, not password"
        )
    if not user.is_active:
        raise DomainError("inactive_user", f"user {user.get_username()!r} is inactive")
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise DomainError(
            "invalid_input", "the password is refused: " + " ".join(exc.messages), fields={"password": exc.messages}
        ) from None
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        locked.set_password(password)
        locked.save(update_fields=["password"])
        ledger_append(
            actor=actor,
            action="user.password_set",
            subject=Subject("user", str(locked.pk)),
            payload={"username": locked.get_username(), "reason": reason.strip()},
        )
    user.password = locked.password  # type: ignore[attr-defined]
