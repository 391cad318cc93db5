"""The ONNX export of an approved ``onnx`` deployment, on the worker: the export is made, hashed
and recorded once, by the delivery that claims it, and then the server is started on it."""

from __future__ import annotations

import logging
import shutil

from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.claims import claim_abandoned, worker_identity
from common.errors import DomainError
from registry.services import model_version_materialise
from serving.models import Deployment, DeploymentGrant, DeploymentState
from serving.rules import deployment_subject
from serving.selectors import deployment_folder, system_account
from serving.services.grants import grant_issue
from serving.services.start import deployment_refuse, deployment_start, start_lease_s

logger = logging.getLogger(__name__)


def deployment_export_onnx(*, deployment_id: int) -> Deployment:
    """On the worker, for an approved ``onnx`` deployment: copy out the approved weights (checked
    against their digest), export them to ONNX, record the export's digest next to the source's,
    sign the grant for the export, and start the server on it. A model version that is an ONNX
    export already (``model.onnx`` beside its tokenizer: a quantised version) is copied out and
    served as it is; the grant then names its own weights digest. A second delivery finds the
    grant and only starts. A failed export refuses the deployment, on record."""
    from serving.grants import folder_weights_digest
    from serving.onnx_model import MODEL_FILE, OnnxModelError, export_onnx

    me = worker_identity()
    claimed = _export_claim(deployment_id, me)
    if isinstance(claimed, DeploymentGrant):
        return deployment_start(deployment_id=deployment_id, grant_id=str(claimed.grant_id))
    if claimed is None:
        return Deployment.objects.get(pk=deployment_id)
    deployment = claimed
    folder = deployment_folder(deployment)
    source, weights = folder / "source", folder / "weights"
    for stale in (source, weights):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        if MODEL_FILE in deployment.model_version.files:
            # Already an ONNX export (a quantised version): served as registered, not exported again.
            model_version_materialise(deployment.model_version, weights)
        else:
            model_version_materialise(deployment.model_version, source)
            export_onnx(source, weights)
        digest = folder_weights_digest(weights)
    except (DomainError, OnnxModelError) as exc:
        return deployment_refuse(
            deployment, f"ONNX export failed: {getattr(exc, 'message', None) or exc}", claimed_by=me
        )
    finally:
        shutil.rmtree(source, ignore_errors=True)
    with transaction.atomic():
        # Retired (or taken over, or granted by another delivery) while it exported: record nothing.
        current = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if current.state != DeploymentState.STARTING or current.claimed_by != me or current.grants.exists():
            logger.warning(
                "export of deployment %s: it is %s (claimed by %s) and no longer this delivery's; nothing recorded",
                current.pk, current.state, current.claimed_by or "nobody",
            )  # fmt: skip
            if current.state != DeploymentState.STARTING:  # otherwise the folder is the claimant's
                shutil.rmtree(weights, ignore_errors=True)
            return current
        ledger_append(
            actor=system_account(), action="deployment.exported", subject=deployment_subject(deployment),
            payload={"runtime": "onnx", "source_weights_digest": deployment.model_version.weights_digest,
                     "weights_digest": digest},
        )  # fmt: skip
        grant = grant_issue(deployment, system_account(), weights_digest=digest)
        # The export's claim ends here: the start claims the deployment afresh under the grant.
        current.claimed_by, current.claimed_at = "", None
        current.save(update_fields=["claimed_by", "claimed_at"])
    return deployment_start(deployment_id=deployment.pk, grant_id=str(grant.grant_id))


def _export_claim(deployment_id: int, me: str) -> Deployment | DeploymentGrant | None:
    """Claim the ONNX export of a deployment for worker ``me`` under the row's lock, as a start is
    claimed (``_start_claim``): the deployment, to export; its grant, when another delivery
    already exported it (only the start is left); ``None``: not this delivery's (a delivery arriving
    while another exports, or a deployment no longer starting)."""
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("model_version__model__project", "project")
            .get(pk=deployment_id)
        )
        if deployment.state != DeploymentState.STARTING or deployment.runtime != "onnx":
            return None
        grant = deployment.grants.order_by("-issued_at").first()
        if grant is not None:
            return grant
        lost = deployment.claimed_by
        if lost and not claim_abandoned(lost, deployment.claimed_at, lease_s=start_lease_s()):
            logger.info("export of deployment %s: %s is exporting it; nothing to do", deployment.pk, lost)
            return None
        if lost:
            logger.warning("export of deployment %s taken over from %s (its worker is gone)", deployment.pk, lost)
        deployment.claimed_by, deployment.claimed_at = me, timezone.now()
        deployment.save(update_fields=["claimed_by", "claimed_at"])
    return deployment
