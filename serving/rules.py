"""Pure rules of the serving app: the action a deployment is approved under, what that approval
vouches for (the deployment's digest) and which states count as running, open or served. No
query and no write here; the services and selectors apply them."""

from __future__ import annotations

from typing import Any

from audits.ledger.services import Subject
from common.digests import canonical_digest
from governance.roles import Role
from serving.grants import DEFAULT_TRANSPARENCY
from serving.models import Deployment, DeploymentState

ACTION = "deployment.deploy"

# A server may run for a deployment only in these states; any other state clears its pid.
RUNNING_STATES = (DeploymentState.STARTING, DeploymentState.LIVE)

# A production deployment in one of these states blocks a second promotion of its configuration.
PROMOTION_OPEN_STATES = (
    DeploymentState.REQUESTED, DeploymentState.STARTING, DeploymentState.HANDED_OFF, DeploymentState.LIVE,
)  # fmt: skip

# States a deployment may have served requests in (so feedback on them can be given).
SERVED_STATES = (
    DeploymentState.LIVE, DeploymentState.EXPIRED, DeploymentState.REPLACED, DeploymentState.RETIRED,
    DeploymentState.FAILED,
)  # fmt: skip

FEEDBACK_ROLES = tuple(role for role in Role if role != Role.AUDITOR)


def deployment_digest(deployment: Deployment) -> str:
    """What an approval of a deployment vouches for: these weights, here, so configured."""
    return canonical_digest(
        {
            "project": deployment.project.slug,
            "name": deployment.name,
            "weights": deployment.model_version.weights_digest,
            "environment": deployment.environment,
            "runtime": deployment.runtime,
            "target": deployment.target,
            "guard": deployment.guard,
            "prompt_template": deployment.prompt_template.content_digest if deployment.prompt_template else None,
            **({"keep_transcripts": True} if deployment.keep_transcripts else {}),  # earlier digests unchanged
            **_transparency_member(deployment.transparency),
            **_ai_system_member(deployment),
        }
    )


def _ai_system_member(deployment: Deployment) -> dict[str, Any]:
    """The digest's ``ai_system`` key, only for a deployment of a registered AI system: the system
    and the number of its approved classification, so an approval given under one class stops
    counting once another classification is approved (the digests of other deployments unchanged)."""
    if deployment.ai_system_id is None:
        return {}
    system = deployment.ai_system
    number = system.classification.number if system.classification_id else None
    return {"ai_system": {"id": system.pk, "classification": number}}


def transparency_effective(transparency: dict[str, Any] | None) -> dict[str, Any]:
    """How a deployment's output is marked (``serving.grants.TRANSPARENCY_FIELDS``): its setting,
    or the defaults (marked, with the header) for one requested before the setting existed."""
    return {**DEFAULT_TRANSPARENCY, **(transparency or {})}


def _transparency_member(transparency: dict[str, Any] | None) -> dict[str, Any]:
    """The digest's ``transparency`` key, only where the marking differs from the defaults: the
    digests of deployments marked as by default (those requested before the setting, and a
    promotion's twin) stay what they were, and any change to the marking changes the digest."""
    effective = transparency_effective(transparency)
    return {} if effective == DEFAULT_TRANSPARENCY else {"transparency": effective}


def deployment_subject(deployment: Deployment) -> Subject:
    """The deployment as the ledger names it: type, id and its digest as it is now."""
    return Subject("deployment", str(deployment.pk), deployment_digest(deployment))
