"""Granting an approved deployment: the grant signed with the ledger's keys, and what follows the
approval (the worker starts the server, or a serving platform gets manifests that carry the
grant). Each runs in the caller's transaction."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.digests import canonical_digest
from common.errors import Conflict
from common.tasks import dispatch_on_commit
from serving.models import Deployment, DeploymentGrant, DeploymentState
from serving.rules import ACTION, deployment_subject, transparency_effective


def signer_keys() -> list[Any]:
    """The ledger's signing keys: they sign grants, and the server is handed their verifier keys."""
    from audits.ledger.keys import load_signer_keys

    return load_signer_keys(Path(settings.LEDGER_SIGNING_KEY_FILE))


def _granted_weights(deployment: Deployment) -> str:
    """The weights a grant may name: the model version's, or for the ``onnx`` runtime the export
    the worker made from them and recorded (``deployment.exported``)."""
    if deployment.runtime != "onnx":
        return deployment.model_version.weights_digest
    earlier = deployment.grants.order_by("-issued_at").first()
    if earlier is None:
        raise Conflict("not_exported", f"deployment {deployment.pk} has no ONNX export yet")
    return str(earlier.statement["weights_digest"])


def grant_issue(deployment: Deployment, actor: Any, *, weights_digest: str | None = None) -> DeploymentGrant:
    """Sign a grant for the deployment with the ledger's keys and record it (in the caller's
    transaction). ``weights_digest`` names an ONNX export's digest, once, right after the export."""
    from serving.grants import sign_grant

    now = timezone.now()
    expires = now + timezone.timedelta(seconds=settings.SERVING_GRANT_TTL_S)
    statement = {
        "grant_id": str(uuid.uuid4()), "deployment": deployment.pk, "environment": deployment.environment,
        "model_version": deployment.model_version_id, "weights_digest": weights_digest or _granted_weights(deployment),
        "runtime": deployment.runtime, "target": deployment.target, "guard": deployment.guard,
        "issued_at": now.isoformat(), "expires_at": expires.isoformat(),
    }  # fmt: skip
    if deployment.keep_transcripts:  # absent otherwise: grants of other deployments read as before
        statement["keep_transcripts"] = True
    # Always stated, so the signed grant says how the server marks its output (Art. 50); a
    # deployment requested before the setting existed gets the defaults (marked).
    statement["transparency"] = transparency_effective(deployment.transparency)
    text = sign_grant(statement, signer_keys())
    entry = ledger_append(
        actor=actor, action="deployment.granted", subject=deployment_subject(deployment),
        payload={"grant_id": statement["grant_id"], "expires_at": statement["expires_at"],
                 "grant_sha256": canonical_digest({"text": text})},
    )  # fmt: skip
    return DeploymentGrant.objects.create(
        deployment=deployment, grant_id=statement["grant_id"], statement=statement, text=text, issued_at=now,
        expires_at=expires, ledger_index=entry.index,
    )  # fmt: skip


def deployment_manifests_render(deployment: Deployment, grant: DeploymentGrant, actor: Any) -> Any:
    """Render and schema-check the platform's manifests for a granted deployment, and record them
    (in the caller's transaction): the YAML's SHA-256 goes into the ledger."""
    import hashlib

    from serving import manifests
    from serving.models import DeploymentManifest

    platform = settings.SERVING_PLATFORM
    render = manifests.render_kserve if platform == "kserve" else manifests.render_vllm
    weights_hex = deployment.model_version.weights_digest.removeprefix("sha256:")
    name = f"{deployment.name[:30].strip('-')}-{deployment.environment[:4]}-{deployment.pk}"
    name = name if name[0].isalpha() else f"d-{name}"  # a DNS-1035 label starts with a letter
    try:
        rendered = render(
            grant.statement, grant.text, name=name,
            namespace=settings.SERVING_PLATFORM_NAMESPACE, image=settings.SERVING_PLATFORM_IMAGE,
            storage_uri=settings.SERVING_PLATFORM_STORAGE_URI.format(weights_hex=weights_hex),
        )  # fmt: skip
        for manifest in rendered:
            manifests.validate(manifest)
    except ValueError as exc:  # ManifestError and ManifestValidationError
        raise Conflict("manifests_invalid", f"cannot render {platform} manifests: {exc}") from None
    text = manifests.dump_yaml(rendered)
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    entry = ledger_append(
        actor=actor, action="deployment.manifests_rendered", subject=deployment_subject(deployment),
        payload={"platform": platform, "grant_id": str(grant.grant_id), "sha256": sha256,
                 "kinds": [m["kind"] for m in rendered]},
    )  # fmt: skip
    return DeploymentManifest.objects.create(
        deployment=deployment, grant=grant, platform=platform, text=text, sha256=sha256, ledger_index=entry.index
    )


def on_deployment_approved(deployment: Deployment, action: str, actor: Any) -> None:
    """The approval hook: grant, and start the server on the worker (or, with a serving
    platform, hand it the manifests that carry the grant)."""
    if action != ACTION or deployment.state != DeploymentState.REQUESTED:
        return
    if settings.SERVING_PLATFORM != "local":
        grant = grant_issue(deployment, actor)
        deployment_manifests_render(deployment, grant, actor)
        deployment.state = DeploymentState.HANDED_OFF
        deployment.save(update_fields=["state"])
        return
    deployment.state = DeploymentState.STARTING
    deployment.save(update_fields=["state"])
    queue = settings.TRAINING_GPU_QUEUE if deployment.target["gpu_count"] else settings.TRAINING_CPU_QUEUE
    if deployment.runtime == "onnx":  # the grant names the export, so it is signed after it
        dispatch_on_commit("serving.export", args=(deployment.pk,), queue=queue)
        return
    grant = grant_issue(deployment, actor)
    dispatch_on_commit("serving.start", args=(deployment.pk, str(grant.grant_id)), queue=queue)
