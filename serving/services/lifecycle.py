"""A deployment's life after it served: promotion to production, retirement and rollback (ML
engineers promote; platform admins retire and roll back)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.errors import Conflict, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role
from governance.services import approval_holds
from serving.models import Deployment, DeploymentState, Environment
from serving.rules import ACTION, deployment_digest, deployment_subject
from serving.selectors import deployment_promotion_twin
from serving.services.grants import grant_issue
from serving.services.requests import deployment_request
from serving.services.supervision import server_stop
from serving.specs import invalid_input


def deployment_promote(*, actor: Any, deployment: Deployment, comment: str = "") -> Deployment:
    """Ask for the same model version and configuration in production, and submit it for
    approval at once: refused, with nothing created, when the production policy's evidence does
    not hold.

    Refused (409 ``already_promoted``, naming it) while a production deployment of the same name
    with the same digest as this promotion would have (same weights, runtime, target, guard and
    prompt template) is still ``requested``, ``starting``, ``handed_off`` or ``live``: a second
    promotion would only open a second request for what is already asked for or serving. Once that
    one is refused, failed, expired, replaced or retired, promoting again is allowed. The staging
    row is locked while checking, so two concurrent promotions of it take turns (on PostgreSQL;
    SQLite serialises writers anyway)."""
    from governance.services import approval_request_submit

    if not (is_platform_admin(actor) or Role.ML_ENGINEER in project_roles_held(actor, deployment.project)):
        raise PermissionDenied("permission_denied", f"promoting needs ml_engineer in {deployment.project.slug}")
    if deployment.environment != Environment.STAGING or deployment.state != DeploymentState.LIVE:
        raise Conflict("not_promotable", f"deployment {deployment.pk} is not live in staging")
    with transaction.atomic():
        Deployment.objects.select_for_update().values_list("pk", flat=True).get(pk=deployment.pk)
        twin = deployment_promotion_twin(deployment)
        if twin is not None:
            raise Conflict(
                "already_promoted",
                f"production deployment {twin.pk} ({twin.name}) already has this configuration and is "
                f"{twin.state}; retire it before promoting deployment {deployment.pk} again",
            )
        promoted = deployment_request(
            actor=actor, model_version=deployment.model_version, name=deployment.name,
            environment=Environment.PRODUCTION, target=deployment.target, guard=deployment.guard,
            prompt_template=deployment.prompt_template, runtime=deployment.runtime,
        )  # fmt: skip
        approval_request_submit(
            actor=actor, subject_type="deployment", subject_id=str(promoted.pk), action=ACTION,
            comment=comment or f"promotion of staging deployment {deployment.pk}",
        )  # fmt: skip
    return promoted


def _require_operator(actor: Any, deployment: Deployment) -> None:
    if not (is_platform_admin(actor) or Role.PLATFORM_ADMIN in project_roles_held(actor, deployment.project)):
        raise PermissionDenied(
            "permission_denied", f"operating deployments needs platform_admin in {deployment.project.slug}"
        )


def deployment_retire(*, actor: Any, deployment: Deployment, reason: str) -> Deployment:
    """Retire a deployment (platform admins): its server, if one runs, is stopped. A deployment
    still waiting for approval (``requested``) also has its pending approval requests withdrawn,
    in the same transaction (``approval.withdrawn`` after ``deployment.retired``), so approvers are
    not left a request whose approval would do nothing. The withdrawal is the system account's
    (``approval_request_withdraw`` lets only the requester or a global admin withdraw), its reason
    naming the retirement."""
    _require_operator(actor, deployment)
    if not reason.strip():
        raise invalid_input("reason", "may not be blank")
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.state in (DeploymentState.RETIRED,):
            raise Conflict("deployment_retired", f"deployment {deployment.pk} is already retired")
        was = deployment.state
        server_stop(deployment)
        deployment.state, deployment.stopped_at, deployment.pid = DeploymentState.RETIRED, timezone.now(), None
        deployment.save(update_fields=["state", "stopped_at", "pid"])
        ledger_append(
            actor=actor, action="deployment.retired", subject=deployment_subject(deployment), payload={"reason": reason}
        )
        if was == DeploymentState.REQUESTED:
            _pending_requests_withdraw(deployment, actor, reason)
    return deployment


def _pending_requests_withdraw(deployment: Deployment, actor: Any, reason: str) -> None:
    from governance.services import subject_pending_requests_withdraw

    subject_pending_requests_withdraw(
        subject_type="deployment", subject_id=str(deployment.pk),
        reason=f"deployment {deployment.pk} retired by {actor.get_username()}: {reason}",
    )  # fmt: skip


def deployment_rollback(*, actor: Any, deployment: Deployment, reason: str) -> Deployment:
    """Put the deployment this one replaced back in service (its approval must still hold): a
    fresh grant for it, its server started again, this one stopped. Returns the restored one."""
    _require_operator(actor, deployment)
    if not reason.strip():
        raise invalid_input("reason", "may not be blank")
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.state != DeploymentState.LIVE or deployment.previous_id is None:
            raise Conflict("nothing_to_roll_back", f"deployment {deployment.pk} is not live over a previous version")
        # Only a version that gave way to this one comes back: a retired (or failed, expired...)
        # one stays as it is, and the lock keeps a concurrent retirement from slipping in between.
        previous = Deployment.objects.select_for_update().get(pk=deployment.previous_id)
        if previous.state != DeploymentState.REPLACED:
            raise Conflict(
                "previous_not_replaced",
                f"deployment {previous.pk}, which this one replaced, is {previous.state}, not replaced: "
                "it cannot be put back in service",
            )
        if not approval_holds(
            subject_type="deployment", subject_id=str(previous.pk), action=ACTION, digest=deployment_digest(previous)
        ):
            raise Conflict("not_approved", f"the approval of deployment {previous.pk} no longer holds")
        server_stop(deployment)
        deployment.state, deployment.stopped_at, deployment.pid = DeploymentState.REPLACED, timezone.now(), None
        deployment.save(update_fields=["state", "stopped_at", "pid"])
        ledger_append(
            actor=actor, action="deployment.rolled_back", subject=deployment_subject(deployment),
            payload={"restored": previous.pk, "reason": reason},
        )  # fmt: skip
        grant = grant_issue(previous, actor)
        # A fresh start under the fresh grant: the earlier start's claim and server are history.
        previous.state, previous.pid = DeploymentState.STARTING, None
        previous.claimed_by, previous.claimed_at = "", None
        previous.save(update_fields=["state", "claimed_by", "claimed_at", "pid"])
        queue = settings.TRAINING_GPU_QUEUE if previous.target["gpu_count"] else settings.TRAINING_CPU_QUEUE
        dispatch_on_commit("serving.start", args=(previous.pk, str(grant.grant_id)), queue=queue)
    return previous
