"""Monitoring that acts: a deployment's traffic against the bounds of its monitoring policy
(``policies/deployment.monitor.yaml``), reviews of the crossings, and pausing and resuming.

After each summarised stretch of a deployment's inference log (``serving.summarise_logs``), the
worker judges every window of the log against the first monitoring rule that matches the
deployment (``serving.monitoring.thresholds``). A crossing opens a review (``DeploymentAlert``;
``deployment_alert.opened``), one per deployment and metric while it is open: a later crossing of
the same metric updates it (``deployment_alert.updated``), and a window a resolved review covered
is not judged again. It mails the deployment's requester, the project's holders of the rules'
``notify`` roles and the AI system's owner, after commit; where the rule says ``pause``, the
server is stopped and the deployment is ``paused`` (``deployment.paused``). People acknowledge
and resolve reviews with a reason; a platform admin resumes a paused deployment once every review
of it is resolved, on its grant if that still holds.

Caveat: the judge reads the deployment's whole log each time a segment is summarised, as the
monitoring page does (fine for the logs of months at these sizes).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.errors import Conflict, NotFound, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role
from governance.services import approval_holds
from serving.models import AlertState, Deployment, DeploymentAlert, DeploymentState
from serving.rules import ACTION, deployment_digest, deployment_subject
from serving.selectors import deployment_list, inference_log_path, system_account
from serving.services.supervision import server_stop
from serving.specs import invalid_input

logger = logging.getLogger(__name__)

MONITOR_ACTION = "deployment.monitor"
# Deployments whose traffic is judged: a paused one still has its last lines judged (its reviews
# are updated), but it is not paused twice.
MONITORED_STATES = (DeploymentState.LIVE, DeploymentState.PAUSED)
ALERT_REVIEW_ROLES = (Role.PLATFORM_ADMIN, Role.COMPLIANCE_OFFICER)


def _context(deployment: Deployment) -> dict[str, str]:
    return {"project": deployment.project.slug, "environment": deployment.environment}


def deployment_monitor_check(*, deployment_id: int) -> list[DeploymentAlert]:
    """Judge the deployment's inference log against its monitoring rule, as the system account:
    open or update one review per metric that crossed its bound, mail who must know, pause where
    the rule says so. Returns the reviews opened or updated (none when nothing changed, so running
    it twice on the same log changes nothing the second time)."""
    from governance.policy import current_policy_set
    from serving import monitoring
    from serving.monitoring.thresholds import breaches, observations

    deployment = Deployment.objects.select_related("project").get(pk=deployment_id)
    if deployment.state not in MONITORED_STATES:
        return []
    policies = current_policy_set()
    rule = policies.rule_for(MONITOR_ACTION, _context(deployment))
    path = inference_log_path(deployment)
    if rule is None or not path.is_file():
        return []
    records, _, _ = monitoring.read_log_skipping_unreadable(path)
    times = {r["request_id"]: r["time"] for r in records if isinstance(r.get("request_id"), str)}
    ratings = [
        {"time": times[str(request_id)], "rating": rating}
        for request_id, rating in deployment.feedback.values_list("request_id", "rating")
        if str(request_id) in times
    ]
    try:
        windows = monitoring.window_stats(records, window_s=rule.window_s)
    except ValueError:
        logger.exception("monitoring of deployment %s: the log cannot be windowed", deployment.pk)
        return []
    found = [b for o in observations(windows, ratings) for b in breaches(o, rule.thresholds)]
    changed = []
    for breach in found:
        alert = _breach_record(deployment.pk, breach, rule, policies.hash)
        if alert is not None:
            changed.append(alert)
    return changed


def _breach_record(deployment_id: int, breach: Any, rule: Any, policy_hash: str) -> DeploymentAlert | None:
    """Open or update the review of one crossing, in one transaction under the deployment's lock."""
    system = system_account()
    window = breach.window_start.isoformat()
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().select_related("project").get(pk=deployment_id)
        alerts = list(DeploymentAlert.objects.filter(deployment=deployment, metric=breach.metric))
        current = next((a for a in alerts if a.state != AlertState.RESOLVED), None)
        if current is None and any(window in a.windows for a in alerts):
            return None  # a review of this window was resolved: it is not opened again
        payload = {**breach.describe(), "rule": rule.describe()}
        if current is not None:
            if window in current.windows and (
                current.window_start != breach.window_start  # an earlier window: it is not judged again
                or (current.observed, current.requests) == (breach.observed, breach.requests)  # judged as it is now
            ):
                return None
            current.observed, current.threshold, current.requests = breach.observed, breach.threshold, breach.requests
            current.window_start, current.window_end = breach.window_start, breach.window_end
            current.windows = [*current.windows, window] if window not in current.windows else current.windows
            current.policy_hash = policy_hash
            current.save()
            ledger_append(
                actor=system, action="deployment_alert.updated", subject=deployment_subject(deployment),
                payload={"alert": current.pk, **payload}, policy_hash=policy_hash,
            )  # fmt: skip
            return current
        alert = DeploymentAlert.objects.create(
            deployment=deployment, metric=breach.metric, observed=breach.observed, threshold=breach.threshold,
            window_start=breach.window_start, window_end=breach.window_end, requests=breach.requests,
            windows=[window], policy_hash=policy_hash, rule=rule.describe(), ledger_index=-1,
        )  # fmt: skip
        entry = ledger_append(
            actor=system, action="deployment_alert.opened", subject=deployment_subject(deployment),
            payload={"alert": alert.pk, **payload}, policy_hash=policy_hash,
        )  # fmt: skip
        alert.ledger_index = entry.index
        if rule.on_breach.get("pause") and deployment.state == DeploymentState.LIVE:
            _pause(deployment, system, f"{breach.metric} {breach.observed:g} above {breach.threshold:g}", alert)
            alert.paused = True
        alert.notified = _recipients(deployment, rule.on_breach.get("notify", []))
        alert.save(update_fields=["ledger_index", "paused", "notified"])
        alert_id = alert.pk
        transaction.on_commit(lambda: _notify(alert_id))
    return alert


def _pause(deployment: Deployment, actor: Any, reason: str, alert: DeploymentAlert | None) -> None:
    """Stop the server (while the deployment is still ``live``, so it is recognised as its own) and
    mark the deployment ``paused``; inside the caller's transaction."""
    server_stop(deployment)
    deployment.state, deployment.stopped_at, deployment.pid = DeploymentState.PAUSED, timezone.now(), None
    deployment.save(update_fields=["state", "stopped_at", "pid"])
    ledger_append(
        actor=actor, action="deployment.paused", subject=deployment_subject(deployment),
        payload={"reason": reason, "alert": alert.pk if alert else None},
    )  # fmt: skip


def _recipients(deployment: Deployment, roles: list[str]) -> list[int]:
    """Who is told of a review: the requester, the project's holders of ``roles``, the AI
    system's owner (user ids, in order)."""
    from guardian.shortcuts import get_users_with_perms

    ids = {deployment.requested_by_id}
    if roles:
        holders = get_users_with_perms(deployment.project, only_with_perms_in=[f"role_{r}" for r in roles])
        ids.update(user.pk for user in holders)
    if deployment.ai_system_id is not None:
        ids.add(deployment.ai_system.owner_id)
    return sorted(ids)


def _notify(alert_id: int) -> None:
    """After commit: mail the review's recipients, with the address of its admin page."""
    from django.contrib.auth import get_user_model
    from django.core.mail import send_mail
    from django.urls import reverse

    alert = DeploymentAlert.objects.select_related("deployment__project").get(pk=alert_id)
    users = get_user_model().objects.filter(pk__in=alert.notified)
    recipients = sorted({u.email for u in users if u.email})
    if not recipients:
        return
    deployment = alert.deployment
    page = reverse("admin:serving_deploymentalert_change", args=[alert.pk])
    send_mail(
        subject=f"Review needed: {alert.metric} crossed its bound on deployment {deployment.pk} ({deployment.name})",
        message=(
            f"Deployment {deployment} ({deployment.environment}): {alert.metric} was {alert.observed:g} in the "
            f"window from {alert.window_start:%Y-%m-%d %H:%M} UTC ({alert.requests} requests); the policy's bound "
            f"is {alert.threshold:g}.\n"
            + ("The deployment is paused until a platform admin resumes it.\n" if alert.paused else "")
            + f"Review #{alert.pk}: {settings.GOV_PUBLIC_URL}{page}\n"
        ),
        from_email=None,
        recipient_list=recipients,
        fail_silently=True,
    )


def _require_reviewer(actor: Any, deployment: Deployment) -> None:
    if not (is_platform_admin(actor) or set(ALERT_REVIEW_ROLES) & set(project_roles_held(actor, deployment.project))):
        raise PermissionDenied(
            "permission_denied",
            f"reviewing deployment alerts needs platform_admin or compliance_officer in {deployment.project.slug}",
        )


def _require_operator(actor: Any, deployment: Deployment) -> None:
    if not (is_platform_admin(actor) or Role.PLATFORM_ADMIN in project_roles_held(actor, deployment.project)):
        raise PermissionDenied(
            "permission_denied", f"operating deployments needs platform_admin in {deployment.project.slug}"
        )


def deployment_alert_acknowledge(*, actor: Any, alert: DeploymentAlert, reason: str) -> DeploymentAlert:
    """Say that someone looks into an open review (platform admins and compliance officers of the
    project); refused (409 ``alert_not_open``) once acknowledged or resolved."""
    _require_reviewer(actor, alert.deployment)
    if not reason.strip():
        raise invalid_input("reason", "may not be blank")
    with transaction.atomic():
        alert = DeploymentAlert.objects.select_for_update().select_related("deployment").get(pk=alert.pk)
        if alert.state != AlertState.OPEN:
            raise Conflict("alert_not_open", f"deployment alert {alert.pk} is {alert.state}, not open")
        alert.state, alert.acknowledged_by, alert.acknowledged_at = AlertState.ACKNOWLEDGED, actor, timezone.now()
        alert.save(update_fields=["state", "acknowledged_by", "acknowledged_at", "updated_at"])
        ledger_append(
            actor=actor, action="deployment_alert.acknowledged", subject=deployment_subject(alert.deployment),
            payload={"alert": alert.pk, "metric": alert.metric, "reason": reason},
        )  # fmt: skip
    return alert


def deployment_alert_resolve(*, actor: Any, alert: DeploymentAlert, reason: str) -> DeploymentAlert:
    """Close a review with what was found and done (platform admins and compliance officers of the
    project). Resolving does not resume a paused deployment: that is ``deployment_resume``."""
    _require_reviewer(actor, alert.deployment)
    if not reason.strip():
        raise invalid_input("reason", "may not be blank")
    with transaction.atomic():
        alert = DeploymentAlert.objects.select_for_update().select_related("deployment").get(pk=alert.pk)
        if alert.state == AlertState.RESOLVED:
            raise Conflict("alert_resolved", f"deployment alert {alert.pk} is already resolved")
        alert.state, alert.resolved_by, alert.resolved_at, alert.resolution = (
            AlertState.RESOLVED, actor, timezone.now(), reason,
        )  # fmt: skip
        alert.save(update_fields=["state", "resolved_by", "resolved_at", "resolution", "updated_at"])
        ledger_append(
            actor=actor, action="deployment_alert.resolved", subject=deployment_subject(alert.deployment),
            payload={"alert": alert.pk, "metric": alert.metric, "reason": reason},
        )  # fmt: skip
    return alert


def deployment_pause(*, actor: Any, deployment: Deployment, reason: str) -> Deployment:
    """Pause a live deployment by hand (platform admins): its server stops; it resumes with
    ``deployment_resume``."""
    _require_operator(actor, deployment)
    if not reason.strip():
        raise invalid_input("reason", "may not be blank")
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.state != DeploymentState.LIVE:
            raise Conflict("not_live", f"deployment {deployment.pk} is {deployment.state}, not live")
        _pause(deployment, actor, reason, None)
    return deployment


def deployment_resume(*, actor: Any, deployment: Deployment, reason: str) -> Deployment:
    """Serve a paused deployment again (platform admins), once every review of it is resolved:
    its server starts again on its grant (``starting``, then ``live``). Refused (409) while a
    review is open (``alerts_open``, naming them), and when the grant expired or the approval no
    longer holds (``grant_expired``, ``not_approved``): a new deployment request is needed then."""
    _require_operator(actor, deployment)
    if not reason.strip():
        raise invalid_input("reason", "may not be blank")
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.state != DeploymentState.PAUSED:
            raise Conflict("not_paused", f"deployment {deployment.pk} is {deployment.state}, not paused")
        open_ids = list(
            deployment.alerts.exclude(state=AlertState.RESOLVED).order_by("pk").values_list("pk", flat=True)
        )
        if open_ids:
            raise Conflict(
                "alerts_open",
                f"deployment {deployment.pk} has unresolved alerts ({', '.join(map(str, open_ids))}); "
                "resolve them before resuming",
            )
        grant = deployment.grants.first()
        if grant is None or grant.expires_at <= timezone.now():
            when = f" at {grant.expires_at:%Y-%m-%d %H:%M:%S} UTC" if grant else ""
            raise Conflict(
                "grant_expired",
                f"the grant of deployment {deployment.pk} expired{when}: request a new deployment to serve it again",
            )
        digest = deployment_digest(deployment)
        if not approval_holds(subject_type="deployment", subject_id=str(deployment.pk), action=ACTION, digest=digest):
            raise Conflict(
                "not_approved",
                f"the approval of deployment {deployment.pk} no longer holds: request a new deployment to serve it",
            )
        deployment.state, deployment.pid, deployment.claimed_by, deployment.claimed_at = (
            DeploymentState.STARTING, None, "", None,
        )  # fmt: skip
        deployment.save(update_fields=["state", "pid", "claimed_by", "claimed_at"])
        ledger_append(
            actor=actor, action="deployment.resumed", subject=deployment_subject(deployment),
            payload={"reason": reason, "grant": str(grant.grant_id)},
        )  # fmt: skip
        queue = settings.TRAINING_GPU_QUEUE if deployment.target.get("gpu_count") else settings.TRAINING_CPU_QUEUE
        dispatch_on_commit("serving.start", args=(deployment.pk, str(grant.grant_id)), queue=queue)
    return deployment


def deployment_alert_list(*, user: Any) -> QuerySet[DeploymentAlert]:
    """The alerts of the deployments ``user`` may see."""
    return DeploymentAlert.objects.filter(deployment__in=deployment_list(user=user)).select_related(
        "deployment__project", "acknowledged_by", "resolved_by"
    )


def deployment_alert_get(*, user: Any, pk: int) -> DeploymentAlert:
    """One alert ``user`` may see; 404 otherwise."""
    try:
        return deployment_alert_list(user=user).get(pk=pk)
    except DeploymentAlert.DoesNotExist:
        raise NotFound("not_found", f"no deployment alert {pk}") from None
