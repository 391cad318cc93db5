"""Writes of the governance app. Every function takes the acting user and checks permission."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from audits.ledger.services import Subject, ledger_append
from common.errors import Conflict, DomainError, PermissionDenied
from governance.models import ApiToken, Project, ServiceAccount
from governance.permissions import is_platform_admin
from governance.roles import STAFF_ROLES, Role

User = get_user_model()


def _require_platform_admin(actor: AbstractBaseUser, what: str) -> None:
    if not is_platform_admin(actor):
        raise PermissionDenied("permission_denied", f"only a platform admin may {what}")


def project_create(*, actor: AbstractBaseUser, slug: str, name: str, description: str = "") -> Project:
    _require_platform_admin(actor, "create a project")
    with transaction.atomic():
        if Project.objects.filter(slug=slug).exists():
            raise Conflict("project_exists", f"a project with slug {slug!r} already exists")
        project = Project(slug=slug, name=name, description=description)
        project.full_clean()
        project.save()
        ledger_append(
            actor=actor, action="project.created", subject=Subject("project", project.slug), payload={"name": name}
        )
    return project


def project_role_grant(*, actor: AbstractBaseUser, project: Project, user: AbstractBaseUser, role: Role) -> None:
    """Give ``user`` the ``role`` in ``project`` (and membership of the role's group)."""
    _require_platform_admin(actor, "grant roles")
    if not user.is_active:
        raise DomainError("inactive_user", f"user {user.get_username()!r} is inactive")
    with transaction.atomic():
        group = Group.objects.get(name=role.value)
        user.groups.add(group)  # type: ignore[attr-defined]
        assign_perm(role.perm, user, project)
        if role in STAFF_ROLES and not user.is_staff and not hasattr(user, "service_account"):
            user.is_staff = True  # type: ignore[attr-defined]
            user.save(update_fields=["is_staff"])
        ledger_append(
            actor=actor,
            action="project.role_granted",
            subject=Subject("project", project.slug),
            payload={"user": user.get_username(), "user_id": str(user.pk), "role": role.value},
        )


def project_role_revoke(*, actor: AbstractBaseUser, project: Project, user: AbstractBaseUser, role: Role) -> None:
    _require_platform_admin(actor, "revoke roles")
    with transaction.atomic():
        remove_perm(role.perm, user, project)
        ledger_append(
            actor=actor,
            action="project.role_revoked",
            subject=Subject("project", project.slug),
            payload={"user": user.get_username(), "user_id": str(user.pk), "role": role.value},
        )


def service_account_create(
    *, actor: AbstractBaseUser, username: str, description: str = "", owner: AbstractBaseUser | None = None
) -> ServiceAccount:
    """A service account logs in by API token only: its password is unusable and it is never staff."""
    _require_platform_admin(actor, "create service accounts")
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


def api_token_create(
    *, actor: AbstractBaseUser, user: AbstractBaseUser, name: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns the row and the token, which is never stored in clear."""
    if actor.pk != user.pk and not is_platform_admin(actor):
        raise PermissionDenied("permission_denied", "only a platform admin may create tokens for another user")
    if not name.strip():
        raise DomainError("invalid_input", "a token needs a name", fields={"name": ["may not be blank"]})
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


def api_token_revoke(*, actor: AbstractBaseUser, token: ApiToken) -> ApiToken:
    if actor.pk != token.user_id and not is_platform_admin(actor):
        raise PermissionDenied("permission_denied", "only the token's owner or a platform admin may revoke it")
    with transaction.atomic():
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            ledger_append(
                actor=actor, action="api_token.revoked", subject=Subject("api_token", token.prefix), payload={}
            )
    return token


def api_token_authenticate(token: str) -> ApiToken | None:
    """The live token row for ``token``, or ``None``. Constant-time comparison of the digest."""
    parts = token.split("_", 2)  # the secret part may itself hold "_"
    if len(parts) != 3 or parts[0] != settings.API_TOKEN_PREFIX:
        return None
    row = ApiToken.objects.select_related("user").filter(prefix=parts[1]).first()
    if row is None or not hmac.compare_digest(row.digest, _token_digest(token)):
        return None
    now = timezone.now()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now) or not row.user.is_active:
        return None
    # Record use at most once a minute: a write per request would serialise all API traffic.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row
