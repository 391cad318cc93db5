"""Service accounts and API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from common.db import rows
from common.errors import Conflict, DomainError, PermissionDenied
from governance.models import ApiToken, ServiceAccount
from governance.permissions import is_platform_admin, require_platform_admin

User = get_user_model()

NAME_MAX_LENGTH = ApiToken._meta.get_field("name").max_length


def service_account_create(
    *, actor: AbstractBaseUser, username: str, description: str = "", owner: AbstractBaseUser | None = None
) -> ServiceAccount:
    """A service account logs in by API token only: its password is unusable and it is never staff."""
    require_platform_admin(actor, "create service accounts")
    with transaction.atomic():
        if User.objects.filter(username=username).exists():
            raise Conflict("username_taken", f"a user named {username!r} already exists")
        user = User(username=username, is_staff=False, is_superuser=False)
        user.set_unusable_password()
        user.full_clean()
        user.save()
        account = ServiceAccount.objects.create(user=user, description=description, owner=owner)
        ledger_append(
            actor=actor,
            action="service_account.created",
            subject=Subject("user", str(user.pk)),
            payload={"username": username, "owner": owner.get_username() if owner else None},
        )
        return account


def _token_digest(token: str) -> str:
    # Tokens carry 256 bits of randomness, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def _token_insert(
    *, actor: AbstractBaseUser, user: AbstractBaseUser, name: str, expires_at: datetime | None
) -> tuple[ApiToken, str]:
    """Make and ledger a token for ``user`` (the callers check who may): the row and the token."""
    if not name.strip():
        raise DomainError("invalid_input", "a token needs a name", fields={"name": ["may not be blank"]})
    if len(name.strip()) > NAME_MAX_LENGTH:
        raise DomainError(
            "invalid_input", f"a token's name is at most {NAME_MAX_LENGTH} characters",
            fields={"name": [f"at most {NAME_MAX_LENGTH} characters"]},
        )  # fmt: skip
    if expires_at is not None and expires_at <= timezone.now():
        raise DomainError(
            "invalid_input", "expires_at is in the past", fields={"expires_at": ["must be in the future"]}
        )
    prefix = secrets.token_hex(6)
    token = f"{settings.API_TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        row = ApiToken.objects.create(
            user=user, name=name.strip(), prefix=prefix, digest=_token_digest(token), expires_at=expires_at
        )
        ledger_append(
            actor=actor,
            action="api_token.created",
            subject=Subject("api_token", prefix),
            payload={
                "user": user.get_username(),
                "name": row.name,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return row, token


def api_token_create(
    *, actor: AbstractBaseUser, user: AbstractBaseUser, name: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a token for ``user``, with any expiry or none; returns the row and the token, which is
    never stored in clear. A global admin's (and the shell's) path: people use
    ``api_token_create_own``, and the managers of a service account
    ``api_token_create_for_service_account``, both of which bound the expiry."""
    if actor.pk != user.pk and not is_platform_admin(actor):
        raise PermissionDenied("permission_denied", "only a platform admin may create tokens for another user")
    return _token_insert(actor=actor, user=user, name=name, expires_at=expires_at)


def _expiry_in_days(expires_in_days: int) -> datetime:
    longest = settings.API_TOKEN_MAX_DAYS
    if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, int) or not 1 <= expires_in_days <= longest:
        raise DomainError(
            "invalid_input", f"a token expires in 1 to {longest} days (API_TOKEN_MAX_DAYS)",
            fields={"expires_in_days": [f"a whole number of days from 1 to {longest}"]},
        )  # fmt: skip
    return timezone.now() + timedelta(days=expires_in_days)


def api_token_create_own(*, actor: AbstractBaseUser, name: str, expires_in_days: int) -> tuple[ApiToken, str]:
    """A person's token for themselves (the admin's "Add API token" page and ``POST /api/v1/tokens/``):
    it always expires, within 1 to ``API_TOKEN_MAX_DAYS`` days. Returns the row and the token, to
    show once.

    Service accounts get their tokens from those who manage them
    (``api_token_create_for_service_account``), never from themselves: a leaked CI token must not
    be able to mint more. The API also refuses a token-authenticated caller here (a new token needs
    a session that passed the second factor)."""
    if hasattr(actor, "service_account"):
        raise PermissionDenied(
            "permission_denied",
            "a service account's tokens are created by a platform admin of its project or its owner",
        )
    expires_at = _expiry_in_days(expires_in_days)
    return _token_insert(actor=actor, user=actor, name=name, expires_at=expires_at)


def api_token_create_for_service_account(
    *, actor: AbstractBaseUser, account: AbstractBaseUser, name: str, expires_in_days: int
) -> tuple[ApiToken, str]:
    """A token for a service account, made by one who manages it: its owner, a platform admin of a
    project where it holds a role, or a global admin (``service_accounts_managed``). It always
    expires, within 1 to ``API_TOKEN_MAX_DAYS`` days. Returns the row and the token, to show once.
    A person's tokens are made by that person alone (``api_token_create_own``)."""
    from governance.selectors import service_accounts_managed

    if hasattr(actor, "service_account"):  # whatever roles it holds: a leaked token must mint nothing
        raise PermissionDenied("permission_denied", "a service account creates no tokens; a person who manages it does")
    if not hasattr(account, "service_account"):
        raise DomainError(
            "invalid_input", f"{account.get_username()} is a person: people make their own tokens",
            fields={"user": ["a service account you manage, or leave it out for a token of your own"]},
        )  # fmt: skip
    if not service_accounts_managed(user=actor).filter(user_id=account.pk).exists():
        raise PermissionDenied(
            "permission_denied",
            f"only the owner of service account {account.get_username()}, a platform admin of a project it "
            "works in, or a global admin may create its tokens",
        )
    expires_at = _expiry_in_days(expires_in_days)
    return _token_insert(actor=actor, user=account, name=name, expires_at=expires_at)


def api_token_may_revoke(actor: AbstractBaseUser, token: ApiToken) -> bool:
    """Its owner, a global admin, or whoever manages the account that holds it
    (``accounts_managed``): for a service account its owner or a platform admin of a project
    where it holds a role; for a person, a platform admin of a project where they hold a role."""
    if actor.pk == token.user_id or is_platform_admin(actor):
        return True
    from governance.selectors import accounts_managed

    return accounts_managed(user=actor).filter(pk=token.user_id).exists()


def api_token_revoke(*, actor: AbstractBaseUser, token: ApiToken, reason: str = "") -> bool:
    """Revoke ``token``; ``True`` if this call did, ``False`` if it was already revoked. ``reason``
    (optional: why, such as "leaked in a CI log") is kept in the ledger entry as written."""
    if not api_token_may_revoke(actor, token):
        raise PermissionDenied(
            "permission_denied",
            "only the token's holder, a platform admin of a project the holder works in, the owner of "
            "the holder's service account, or a global admin may revoke it",
        )
    with transaction.atomic():
        # Locked and read again: of two concurrent revocations, one writes the row and the entry.
        current = ApiToken.objects.select_for_update().get(pk=token.pk)
        if current.revoked_at is not None:
            token.revoked_at = current.revoked_at
            return False
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        # Whose token: a platform admin may revoke a project member's or a service account's.
        payload = {"user": User.objects.values_list("username", flat=True).get(pk=token.user_id)}
        if reason.strip():
            payload["reason"] = reason.strip()
        ledger_append(
            actor=actor, action="api_token.revoked", subject=Subject("api_token", token.prefix), payload=payload
        )
    return True


def api_token_authenticate(token: str) -> ApiToken | None:
    """The live token row for ``token``, or ``None``. Constant-time comparison of the digest."""
    parts = token.split("_", 2)  # the secret part may itself hold "_"
    if len(parts) != 3 or parts[0] != settings.API_TOKEN_PREFIX:
        return None
    # Every API request runs this: one hand-written join (common/db/rows.py), not a queryset.
    found = rows.fetch(
        f"SELECT {rows.columns(ApiToken, 't')}, {rows.columns(User, 'u')} FROM {rows.table(ApiToken)} t "  # noqa: S608 (names from model metadata)
        f"INNER JOIN {rows.table(User)} u ON u.id = t.user_id WHERE t.prefix = %s",
        [parts[1]],
    )
    row = rows.load(ApiToken, found[0]) if found else None
    if row is not None:
        row.user = rows.load(User, found[0], rows.width(ApiToken))
    if row is None or not hmac.compare_digest(row.digest, _token_digest(token)):
        return None
    now = timezone.now()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now) or not row.user.is_active:
        return None
    # Record use at most once a minute: a write per request would serialise all API traffic.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row
