"""Client credentials of deployments: issuing and revoking them (platform admins), and the signed
client lists that tell each running model server which credentials it accepts.

A credential issued through a deployment holds for the deployment's name and environment in its
project (the versions that replace it, or that a rollback puts back, accept it too). The list of
a running deployment (``starting`` or ``live``) is written to its folder when its server starts,
after each issue or revocation commits, and by the supervisor (``deployments_supervise``, every
15 s) whenever it differs from what the database says: so a revocation reaches a local server at
once, and within one supervision period if the write after the commit was lost (a web process
that died, or that cannot reach ``SERVING_ROOT``). The server reads the file again whenever it
changes (``serving.clients``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.errors import Conflict, DomainError, PermissionDenied
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role
from serving.models import Deployment, DeploymentClientCredential, DeploymentState
from serving.rules import RUNNING_STATES, deployment_subject
from serving.selectors import client_credentials_of_scope, client_list_path
from serving.services.grants import signer_keys

logger = logging.getLogger(__name__)

ISSUING_ROLES = (Role.PLATFORM_ADMIN,)
# A deployment that may still serve: credentials can be issued for it ahead of its start.
ISSUABLE_STATES = (
    DeploymentState.REQUESTED, DeploymentState.STARTING, DeploymentState.HANDED_OFF, DeploymentState.LIVE,
)  # fmt: skip
NAME_MAX_LENGTH = DeploymentClientCredential._meta.get_field("name").max_length


def client_credential_may_manage(actor: Any, deployment: Deployment) -> bool:
    """Platform admins of the deployment's project (and global admins) issue and revoke its
    credentials: they run its servers."""
    held = project_roles_held(actor, deployment.project)
    return is_platform_admin(actor) or any(role in held for role in ISSUING_ROLES)


def _require_manager(actor: Any, deployment: Deployment, doing: str) -> None:
    if not client_credential_may_manage(actor, deployment):
        raise PermissionDenied("permission_denied", f"{doing} needs platform_admin in {deployment.project.slug}")


def deployment_client_credential_issue(
    *, actor: Any, deployment: Deployment, name: str, expires_in_days: int
) -> tuple[DeploymentClientCredential, str]:
    """Issue a client credential for the deployment's name and environment; returns the row and
    the credential, which is shown once and never stored in clear.

    Refused: 403 for anyone but a platform admin of the project; 400 naming the field for a blank
    or long name or an expiry outside 1 to ``SERVING_CLIENT_CREDENTIAL_MAX_DAYS`` days; 409
    ``not_serving`` for a deployment that will not serve again (refused, failed, expired,
    replaced, retired). Records ``deployment.client_credential_issued`` (the prefix, name and
    expiry; never the credential or its hash)."""
    from serving.clients import credential_digest, credential_new

    _require_manager(actor, deployment, "issuing client credentials")
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > NAME_MAX_LENGTH:
        problem = "may not be blank" if not name else f"at most {NAME_MAX_LENGTH} characters"
        raise DomainError("invalid_input", f"name: {problem}", fields={"name": [problem]})
    longest = settings.SERVING_CLIENT_CREDENTIAL_MAX_DAYS
    if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, int) or not 1 <= expires_in_days <= longest:
        raise DomainError(
            "invalid_input", f"expires_in_days: a client credential expires in 1 to {longest} days "
            "(SERVING_CLIENT_CREDENTIAL_MAX_DAYS)",
            fields={"expires_in_days": [f"a whole number of days from 1 to {longest}"]},
        )  # fmt: skip
    prefix, credential = credential_new()
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if locked.state not in ISSUABLE_STATES:
            raise Conflict(
                "not_serving", f"deployment {deployment.pk} is {locked.state}: it will not serve again, so it takes "
                "no credential",
            )  # fmt: skip
        row = DeploymentClientCredential.objects.create(
            deployment=deployment, name=name, prefix=prefix, digest=credential_digest(credential),
            created_by=actor, expires_at=timezone.now() + timedelta(days=expires_in_days),
        )  # fmt: skip
        ledger_append(
            actor=actor, action="deployment.client_credential_issued", subject=deployment_subject(deployment),
            payload={"prefix": prefix, "name": name, "expires_at": row.expires_at.isoformat(),
                     "scope": {"name": deployment.name, "environment": deployment.environment}},
        )  # fmt: skip
        transaction.on_commit(lambda: client_lists_refresh(deployment=deployment))
    return row, credential


def deployment_client_credential_revoke(*, actor: Any, credential: DeploymentClientCredential) -> bool:
    """Revoke a client credential; ``True`` if this call did, ``False`` if it was already revoked.
    Refused (403) for anyone but a platform admin of the deployment's project. Records
    ``deployment.client_credential_revoked``; the running servers of its scope stop accepting it
    as soon as their client list is rewritten (after the commit; at the latest within one
    supervision period)."""
    deployment = credential.deployment
    _require_manager(actor, deployment, "revoking client credentials")
    with transaction.atomic():
        current = DeploymentClientCredential.objects.select_for_update().get(pk=credential.pk)
        if current.revoked_at is not None:
            credential.revoked_at, credential.revoked_by_id = current.revoked_at, current.revoked_by_id
            return False
        credential.revoked_at, credential.revoked_by = timezone.now(), actor
        credential.save(update_fields=["revoked_at", "revoked_by"])
        ledger_append(
            actor=actor, action="deployment.client_credential_revoked", subject=deployment_subject(deployment),
            payload={"prefix": credential.prefix, "name": credential.name},
        )  # fmt: skip
        transaction.on_commit(lambda: client_lists_refresh(deployment=deployment))
    return True


# --- Client lists ----------------------------------------------------------------------------


def client_list_statement(deployment: Deployment) -> dict[str, Any]:
    """The client list of ``deployment`` as the database says now (unsigned): its scope's
    credentials that are neither revoked nor expired."""
    now = timezone.now()
    live = client_credentials_of_scope(deployment).filter(revoked_at__isnull=True, expires_at__gt=now)
    entries = [
        {"expires_at": expires_at.isoformat(), "prefix": prefix, "sha256": digest}
        for prefix, digest, expires_at in live.order_by("prefix").values_list("prefix", "digest", "expires_at")
    ]
    return {"credentials": entries, "deployment": deployment.pk, "issued_at": now.isoformat()}


def _written_credentials(path: Path) -> Any:
    """The credentials of the list at ``path`` as written (its first line), or ``None``."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.loads(handle.readline()).get("credentials")
    except (OSError, ValueError, AttributeError):
        return None


def client_list_write(deployment: Deployment, *, only_if_changed: bool = False) -> bool:
    """Sign and write the deployment's client list into its folder (a new file moved over the old,
    so a server never reads half a list). With ``only_if_changed``, a list whose credentials are
    already those written is left alone. Returns whether it wrote."""
    from serving.clients import sign_client_list

    statement = client_list_statement(deployment)
    path = client_list_path(deployment)
    if only_if_changed and _written_credentials(path) == statement["credentials"]:
        return False
    text = sign_client_list(statement, signer_keys())
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".clients-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def client_lists_refresh(*, deployment: Deployment | None = None) -> int:
    """Rewrite the client lists of the running deployments (of ``deployment``'s scope, or all)
    whose credentials changed; a deployment whose folder does not exist yet gets its list when its
    server starts. Failures are logged, never raised: this runs after a commit, and the supervisor
    tries again. Returns how many lists were written."""
    running = Deployment.objects.filter(state__in=RUNNING_STATES)
    if deployment is not None:
        running = running.filter(project_id=deployment.project_id, name=deployment.name,
                                 environment=deployment.environment)  # fmt: skip
    written = 0
    for each in running.select_related("project"):
        if not client_list_path(each).parent.is_dir():
            continue
        try:
            written += client_list_write(each, only_if_changed=True)
        except Exception:  # the supervisor's next pass writes it; the revocation stays recorded
            logger.exception("cannot write the client list of deployment %s", each.pk)
    return written
