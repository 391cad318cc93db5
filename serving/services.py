"""Writes of the serving app: deployment requests, signed grants, starting and supervising the
model server, rollback and retirement. Each checks the actor, changes the rows and appends its
ledger entries in one transaction; starting a server runs in a Celery task (``serving.start``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from common.claims import claim_abandoned, worker_identity
from common.digests import canonical_digest
from common.errors import Conflict, DomainError, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.permissions import SYSTEM_USERNAME, is_platform_admin, project_roles_held
from governance.roles import Role
from governance.services import approval_holds
from registry.models import ModelVersion, PromptTemplate
from registry.services import dataset_version_digest, model_version_materialise
from serving.grants import RUNTIMES
from serving.models import Deployment, DeploymentGrant, DeploymentState, Environment

logger = logging.getLogger(__name__)

ACTION = "deployment.deploy"
GUARD_MODES = ("off", "redact", "block")
GUARD_ENTITIES = ("EMAIL_ADDRESS", "CREDIT_CARD", "PHONE_NUMBER", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "PERSON")


def _system() -> Any:
    return get_user_model().objects.get(username=SYSTEM_USERNAME)


def _invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


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
        }
    )


def _subject(deployment: Deployment) -> Subject:
    return Subject("deployment", str(deployment.pk), deployment_digest(deployment))


TARGET_FIELDS = ("gpu_type", "gpu_count", "replicas", "max_batch", "max_tokens", "max_prompt_chars")
GUARD_FIELDS = ("mode", "entities")


def _unknown_fields(field: str, raw: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(str(name) for name in set(raw) - set(known))
    if unknown:
        raise _invalid(field, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _target(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _invalid("target", f"expected an object, got {type(raw).__name__}")
    _unknown_fields("target", raw, TARGET_FIELDS)
    gpu_type = raw.get("gpu_type", "")
    if not isinstance(gpu_type, str):
        raise _invalid("target.gpu_type", f"must be a string, got {gpu_type!r}")
    target = {
        "gpu_type": gpu_type.strip().lower(),
        "gpu_count": raw.get("gpu_count", 0),
        "replicas": raw.get("replicas", 1),
        "max_batch": raw.get("max_batch", 1),
        "max_tokens": raw.get("max_tokens", 64),
        "max_prompt_chars": raw.get("max_prompt_chars", 4000),
    }
    limits = {"gpu_count": (0, settings.TRAINING_MAX_GPUS), "replicas": (1, 16), "max_batch": (1, 256),
              "max_tokens": (1, settings.SERVING_MAX_TOKENS), "max_prompt_chars": (1, 100_000)}  # fmt: skip
    for name, (low, high) in limits.items():
        value = target[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _invalid(f"target.{name}", f"must be a whole number from {low} to {high}, got {value!r}")
    if target["gpu_count"] and target["gpu_type"] not in settings.TRAINING_GPU_TYPES:
        raise _invalid(
            "target.gpu_type",
            f"this platform has no GPU type {target['gpu_type']!r}; it has {', '.join(settings.TRAINING_GPU_TYPES)}",
        )
    if not target["gpu_count"] and target["gpu_type"]:
        raise _invalid("target.gpu_type", "a GPU type needs a gpu_count of 1 or more")
    return target


def _guard(raw: Any) -> dict[str, Any]:
    """The runtime guard, checked field by field: anything else is refused, naming the field,
    before a row or an entry is written (a non-string entity once crashed ``set()``)."""
    if not isinstance(raw, dict):
        raise _invalid("guard", f"expected an object, got {type(raw).__name__}")
    _unknown_fields("guard", raw, GUARD_FIELDS)
    mode = raw.get("mode", "redact")
    if not isinstance(mode, str) or mode not in GUARD_MODES:
        raise _invalid("guard.mode", f"one of {', '.join(GUARD_MODES)}, got {mode!r}")
    entities = raw.get("entities", list(GUARD_ENTITIES))
    if not isinstance(entities, list):
        raise _invalid("guard.entities", f"expected a list of entity types, got {type(entities).__name__}")
    for position, entity in enumerate(entities):
        if not isinstance(entity, str) or entity not in GUARD_ENTITIES:
            raise _invalid(
                f"guard.entities[{position}]", f"known entity types: {', '.join(GUARD_ENTITIES)}; got {entity!r}"
            )
    return {"mode": mode, "entities": sorted(set(entities))}


def deployment_request(
    *,
    actor: Any,
    model_version: ModelVersion,
    name: str,
    environment: str,
    target: dict[str, Any],
    guard: dict[str, Any],
    prompt_template: PromptTemplate | None = None,
    runtime: str = "transformers",
) -> Deployment:
    """Ask to deploy a model version (ML engineers). It starts once a policy's approvals and
    evidence are given to its digest. ``runtime`` is ``transformers`` or ``onnx`` (the worker
    exports the approved weights to ONNX and the grant names the export's digest)."""
    from django.utils.text import slugify

    project = model_version.model.project
    if not (is_platform_admin(actor) or Role.ML_ENGINEER in project_roles_held(actor, project)):
        raise PermissionDenied("permission_denied", f"requesting a deployment needs ml_engineer in {project.slug}")
    if not name or slugify(name) != name:
        raise _invalid("name", f"a slug (lowercase letters, digits, hyphens), got {name!r}")
    if environment not in Environment.values:
        raise _invalid("environment", f"one of {', '.join(Environment.values)}, got {environment!r}")
    target, guard = _target(target), _guard(guard)
    if runtime not in RUNTIMES:
        raise _invalid("runtime", f"one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if settings.SERVING_PLATFORM != "local":
        from serving.manifests import platform_refusal

        refusal = platform_refusal(settings.SERVING_PLATFORM, runtime, target, guard)
        if refusal is None and runtime == "onnx":
            refusal = "runtime: ONNX exports are made by the local worker; on a platform, deploy transformers weights"
        if refusal:
            field, message = refusal.split(": ", 1)
            raise _invalid(field, f"{message} (SERVING_PLATFORM={settings.SERVING_PLATFORM})")
    if prompt_template is not None and prompt_template.project_id != project.pk:
        raise _invalid("prompt_template", f"prompt template {prompt_template.pk} belongs to another project")
    with transaction.atomic():
        deployment = Deployment.objects.create(
            project=project, name=name, model_version=model_version, environment=environment, target=target,
            guard=guard, prompt_template=prompt_template, requested_by=actor, runtime=runtime,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="deployment.requested", subject=_subject(deployment),
            payload={"name": name, "environment": environment, "weights": model_version.weights_digest,
                     "runtime": runtime, "target": target, "guard": guard},
        )  # fmt: skip
    return deployment


# --- Evidence for deployments --------------------------------------------------------------------


def training_data_approved(deployment: Deployment) -> tuple[bool, str]:
    """Evidence: every dataset version the model was trained on (its lineage, through its base
    versions) is still approved for training as it is now."""
    versions, seen, current = [], set(), deployment.model_version
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        versions.extend(current.dataset_versions.all())
        current = current.base
    for version in versions:
        if not approval_holds(
            subject_type="dataset_version", subject_id=str(version.pk), action="dataset_version.use_for_training",
            digest=dataset_version_digest(version),
        ):  # fmt: skip
            return (
                False,
                f"dataset version {version.pk} ({version.dataset} v{version.number}) is not approved for training",
            )
    return True, f"{len(versions)} dataset version(s) in the lineage, each approved for training"


# --- Grants --------------------------------------------------------------------------------------


def _signers() -> list[Any]:
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
    text = sign_grant(statement, _signers())
    entry = ledger_append(
        actor=actor, action="deployment.granted", subject=_subject(deployment),
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
        actor=actor, action="deployment.manifests_rendered", subject=_subject(deployment),
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


def deployment_export_onnx(*, deployment_id: int) -> Deployment:
    """On the worker, for an approved ``onnx`` deployment: copy out the approved weights (checked
    against their digest), export them to ONNX, record the export's digest next to the source's,
    sign the grant for the export, and start the server on it. A second delivery finds the grant
    and only starts. A failed export refuses the deployment, on record."""
    from serving.grants import folder_weights_digest
    from serving.onnx_model import OnnxModelError, export_onnx

    me = worker_identity()
    claimed = _export_claim(deployment_id, me)
    if isinstance(claimed, DeploymentGrant):
        return deployment_start(deployment_id=deployment_id, grant_id=str(claimed.grant_id))
    if claimed is None:
        return Deployment.objects.get(pk=deployment_id)
    deployment = claimed
    folder = _folder(deployment)
    source, weights = folder / "source", folder / "weights"
    for stale in (source, weights):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        model_version_materialise(deployment.model_version, source)
        export_onnx(source, weights)
        digest = folder_weights_digest(weights)
    except (DomainError, OnnxModelError) as exc:
        return _refused(deployment, f"ONNX export failed: {getattr(exc, 'message', None) or exc}", claimed_by=me)
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
            actor=_system(), action="deployment.exported", subject=_subject(deployment),
            payload={"runtime": "onnx", "source_weights_digest": deployment.model_version.weights_digest,
                     "weights_digest": digest},
        )  # fmt: skip
        grant = grant_issue(deployment, _system(), weights_digest=digest)
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
        if lost and not claim_abandoned(lost, deployment.claimed_at, lease_s=_start_lease_s()):
            logger.info("export of deployment %s: %s is exporting it; nothing to do", deployment.pk, lost)
            return None
        if lost:
            logger.warning("export of deployment %s taken over from %s (its worker is gone)", deployment.pk, lost)
        deployment.claimed_by, deployment.claimed_at = me, timezone.now()
        deployment.save(update_fields=["claimed_by", "claimed_at"])
    return deployment


# --- The model server (on the worker) ------------------------------------------------------------


def _folder(deployment: Deployment) -> Path:
    return Path(settings.SERVING_ROOT) / f"deployment-{deployment.pk}"


def _stdout_events(stdout: Path, *, finished: bool) -> list[dict[str, Any]]:
    """The JSON events the server printed so far, from whole lines only: while it runs, a last line
    without its newline is still being written and is left for the next read (once it has exited,
    that line is complete). A line that is not a JSON object (a library's print) is skipped."""
    data = stdout.read_bytes()
    if not finished:
        data = data[: data.rfind(b"\n") + 1]
    events = []
    for line in data.decode(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s: skipped a line that is not JSON: %.200s", stdout, line)
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _read_event(stdout: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
    """The server's first decisive line: ``serving`` or ``refused`` (or ``None`` if it died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in _stdout_events(stdout, finished=False):
            if event.get("event") in ("serving", "refused"):
                return event
        if proc.poll() is not None:
            time.sleep(0.2)
            return next((e for e in _stdout_events(stdout, finished=True) if e.get("event") == "refused"), None)
        time.sleep(0.2)
    return None


def _start_lease_s() -> float:
    """How long a start's claim holds against a worker on another host, which cannot be checked:
    well past the server's start timeout, so a slow start is never taken over."""
    return float(max(1800, 4 * settings.SERVING_START_TIMEOUT_S))


def _start_refusal(deployment: Deployment, grant: DeploymentGrant) -> str | None:
    """Why a claimed start may not go ahead now, or ``None``: its grant must be unexpired and its
    approval must still hold for the deployment's digest as it is now."""
    if grant.expires_at <= timezone.now():
        return f"grant {grant.grant_id} expired at {grant.expires_at:%Y-%m-%d %H:%M:%S} UTC before the server started"
    if not approval_holds(
        subject_type="deployment", subject_id=str(deployment.pk), action=ACTION, digest=deployment_digest(deployment)
    ):
        return (
            f"no approval of {ACTION} holds for deployment {deployment.pk} as it is now "
            "(its digest changed, or the approval expired or was revoked)"
        )
    return None


def _start_claim(deployment_id: int, grant_id: str, me: str) -> tuple[Deployment, DeploymentGrant] | None:
    """Claim the start of a deployment for worker ``me``: only a deployment in ``starting`` whose
    latest grant is ``grant_id``, unclaimed, or claimed by a worker that is gone
    (``common.claims.claim_abandoned``). A conditional update under the row's lock, so two
    deliveries never both start it. ``None``: not this delivery's to start (logged, nothing
    recorded)."""
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("model_version__model__project", "project")
            .get(pk=deployment_id)
        )
        if deployment.state != DeploymentState.STARTING:
            logger.info("start of deployment %s: it is %s; nothing to do", deployment.pk, deployment.state)
            return None
        grant = deployment.grants.order_by("-issued_at").first()
        if grant is None or str(grant.grant_id) != str(grant_id):
            logger.info("start of deployment %s: grant %s is not its latest; nothing to do", deployment.pk, grant_id)
            return None
        now = timezone.now()
        waiting = Deployment.objects.filter(pk=deployment.pk, state=DeploymentState.STARTING)
        if not waiting.filter(claimed_by="").update(claimed_by=me, claimed_at=now):
            lost = deployment.claimed_by
            if not claim_abandoned(lost, deployment.claimed_at, lease_s=_start_lease_s()):
                logger.info("start of deployment %s: %s is starting it; nothing to do", deployment.pk, lost)
                return None
            if not waiting.filter(claimed_by=lost).update(claimed_by=me, claimed_at=now):
                return None
            logger.warning("start of deployment %s taken over from %s (its worker is gone)", deployment.pk, lost)
            # The lost worker's server may have outlived it (it runs in its own session): stop it,
            # where it can be reached, so that one deployment never has two servers.
            if lost.rpartition(":")[0] == me.rpartition(":")[0]:
                _stop_process(deployment)
            elif deployment.pid:
                logger.warning("deployment %s: a server %s may still run on %s", deployment.pk, deployment.pid, lost)
            waiting.filter(claimed_by=me).update(pid=None)
        deployment.refresh_from_db()
    return deployment, grant


def deployment_start(*, deployment_id: int, grant_id: str) -> Deployment:
    """Start the model server for a granted deployment: it checks the grant itself and serves
    only weights whose digest the grant names. The refusal, or the start, reaches the ledger.

    Run by the ``serving.start`` task (late ack: a delivery may come twice, or after a crash) and
    after an ONNX export. Only a deployment in ``starting`` under its latest grant is started, by
    the one delivery that claims it; any other delivery changes nothing and returns the row as it
    is. A grant that expired, or an approval that no longer holds, refuses it on record. A
    deployment retired while its server starts stays retired (the new server is stopped)."""
    me = worker_identity()
    claimed = _start_claim(deployment_id, grant_id, me)
    if claimed is None:
        return Deployment.objects.get(pk=deployment_id)
    deployment, grant = claimed
    refusal = _start_refusal(deployment, grant)
    if refusal:
        return _refused(deployment, refusal, claimed_by=me)
    try:
        return _launch(deployment, grant, me)
    except Exception as exc:  # the start fails on record, never left in ``starting``; the worker lives on
        logger.exception("start of deployment %s failed", deployment.pk)
        return _refused(deployment, f"the server could not be started: {type(exc).__name__}: {exc}", claimed_by=me)


def _prepare_weights(deployment: Deployment, weights: Path) -> str | None:
    """Put the approved weights in the deployment's folder; returns why they cannot be, or ``None``."""
    if not weights.exists() and deployment.runtime == "onnx":
        return f"the ONNX export of deployment {deployment.pk} is missing from {weights}"
    if weights.exists() and deployment.runtime != "onnx":
        # A copy left from an earlier start is reused only if it is still the approved weights
        # (the server checks again; this spares a refusal for a stale or foreign copy).
        from serving.grants import folder_weights_digest

        try:
            stale = folder_weights_digest(weights) != deployment.model_version.weights_digest
        except ValueError:
            stale = True
        if stale:
            shutil.rmtree(weights, ignore_errors=True)
    if not weights.exists():
        try:
            model_version_materialise(deployment.model_version, weights)
        except DomainError as exc:
            return exc.message
    return None


def _launch(deployment: Deployment, grant: DeploymentGrant, me: str) -> Deployment:
    """Launch the server for a start claimed by ``me`` and record the outcome, as long as the
    claim holds (the deployment may be retired meanwhile: then the new server is stopped)."""
    folder = _folder(deployment)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "weights"
    problem = _prepare_weights(deployment, weights)
    if problem:
        return _refused(deployment, problem, claimed_by=me)
    (folder / "grant.note").write_text(grant.text)
    (folder / "verifier.keys").write_text("".join(k.verifier().encode() + "\n" for k in _signers()))
    stdout = folder / "server.out"
    command = [
        sys.executable, "-m", "serving.server", "--grant", str(folder / "grant.note"),
        "--verifier-keys", str(folder / "verifier.keys"), "--weights", str(weights),
        "--host", settings.SERVING_HOST, "--port", "0", "--log", str(folder / "inference.jsonl"),
        "--nlp-model", settings.SERVING_GUARD_NLP_MODEL,
    ]  # fmt: skip
    if settings.TRAINING_ALLOW_CPU_FALLBACK:
        command.append("--allow-cpu-fallback")
    claim = Deployment.objects.filter(pk=deployment.pk, state=DeploymentState.STARTING, claimed_by=me)
    with stdout.open("wb") as out, (folder / "server.err").open("wb") as err:
        proc = subprocess.Popen(
            command, cwd=settings.BASE_DIR, stdout=out, stderr=err, start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )  # fmt: skip
    try:
        # Recorded at once, so that a retirement, or a worker taking over after a crash, can stop it.
        if not claim.update(pid=proc.pid):
            logger.warning("start of deployment %s: no longer this worker's to start; server stopped", deployment.pk)
            _kill(proc)
            return Deployment.objects.get(pk=deployment.pk)
        event = _read_event(stdout, proc, settings.SERVING_START_TIMEOUT_S)
        if event is None or event["event"] == "refused":
            _kill(proc)
            timeout = f"the server did not start within {settings.SERVING_START_TIMEOUT_S} s"
            return _refused(deployment, str(event.get("reason", "refused")) if event else timeout, claimed_by=me)
        fallback = any(e.get("event") == "cpu_fallback" for e in _stdout_events(stdout, finished=False))
        with transaction.atomic():
            deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
            if deployment.state != DeploymentState.STARTING or deployment.claimed_by != me:
                logger.warning(
                    "start of deployment %s: it became %s while its server started; server stopped",
                    deployment.pk, deployment.state,
                )  # fmt: skip
                _kill(proc)
                return deployment
            deployment.state, deployment.pid, deployment.url = (
                DeploymentState.LIVE,
                proc.pid,
                f"http://{settings.SERVING_HOST}:{event['port']}",
            )
            deployment.device, deployment.cpu_fallback, deployment.started_at = (
                event.get("device", ""),
                fallback,
                timezone.now(),
            )
            deployment.save()
            ledger_append(
                actor=_system(), action="deployment.live", subject=_subject(deployment),
                payload={"grant_id": str(grant.grant_id), "url": deployment.url, "device": deployment.device,
                         "cpu_fallback": fallback},
            )  # fmt: skip
            _replace_previous(deployment)
        return deployment
    except BaseException:
        _kill(proc)
        raise


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server this worker launched (its whole session) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def _refused(deployment: Deployment, reason: str, *, claimed_by: str | None = None) -> Deployment:
    """Refuse a deployment that is starting, on record; with ``claimed_by``, only while that worker
    holds the start. Otherwise nothing changes (it was retired, or another worker has it)."""
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.state != DeploymentState.STARTING or (
            claimed_by is not None and deployment.claimed_by != claimed_by
        ):
            logger.warning("deployment %s is %s; refusal not recorded: %s", deployment.pk, deployment.state, reason)
            return deployment
        deployment.state, deployment.refusal_reason, deployment.pid = DeploymentState.REFUSED, reason, None
        deployment.save(update_fields=["state", "refusal_reason", "pid"])
        ledger_append(
            actor=_system(), action="deployment.refused", subject=_subject(deployment), payload={"reason": reason}
        )
    return deployment


RUNNING_STATES = (DeploymentState.STARTING, DeploymentState.LIVE)


def _server_process(deployment: Deployment) -> Any:
    """The deployment's server process, or ``None``: only while the deployment is starting or live,
    and only if the process at ``pid`` is still the server started for it (its command line names
    the deployment's grant file). A pid left from a server that exited may since belong to any
    other process, which must never be signalled."""
    import psutil

    if not deployment.pid or deployment.state not in RUNNING_STATES:
        return None
    try:
        proc = psutil.Process(deployment.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc if str(_folder(deployment) / "grant.note") in cmdline else None


def _stop_process(deployment: Deployment) -> None:
    """Stop the deployment's server (its whole session), if it is still the one started for it.
    The caller clears ``pid`` as the deployment leaves ``starting`` or ``live``."""
    if _server_process(deployment) is None:
        return
    try:
        os.killpg(deployment.pid, signal.SIGTERM)  # type: ignore[arg-type]
    except ProcessLookupError:
        pass


def _replace_previous(deployment: Deployment) -> None:
    """The live deployment of the same name and environment gives way to ``deployment``."""
    live = (
        Deployment.objects.select_for_update()
        .filter(project=deployment.project, name=deployment.name, environment=deployment.environment,
                state=DeploymentState.LIVE)
        .exclude(pk=deployment.pk)
    )  # fmt: skip
    for old in live:
        _stop_process(old)
        old.state, old.stopped_at, old.pid = DeploymentState.REPLACED, timezone.now(), None
        old.save(update_fields=["state", "stopped_at", "pid"])
        if deployment.previous_id is None:
            deployment.previous = old
            deployment.save(update_fields=["previous"])
        ledger_append(
            actor=_system(), action="deployment.replaced", subject=_subject(old), payload={"by": deployment.pk}
        )


# --- Lifecycle -----------------------------------------------------------------------------------


PROMOTION_OPEN_STATES = (
    DeploymentState.REQUESTED, DeploymentState.STARTING, DeploymentState.HANDED_OFF, DeploymentState.LIVE,
)  # fmt: skip


def _promotion_twin(deployment: Deployment) -> Deployment | None:
    """The production deployment a promotion of ``deployment`` would duplicate: same project and
    name, and the same digest as the promotion would have (weights, runtime, target, guard, prompt
    template), still requested, starting, handed off or live."""
    candidate = Deployment(
        project=deployment.project, name=deployment.name, model_version=deployment.model_version,
        environment=Environment.PRODUCTION, runtime=deployment.runtime, target=deployment.target,
        guard=deployment.guard, prompt_template=deployment.prompt_template,
    )  # fmt: skip
    digest = deployment_digest(candidate)
    open_twins = Deployment.objects.filter(
        project=deployment.project, name=deployment.name, environment=Environment.PRODUCTION,
        state__in=PROMOTION_OPEN_STATES,
    ).select_related("project", "model_version", "prompt_template")  # fmt: skip
    return next((twin for twin in open_twins.order_by("pk") if deployment_digest(twin) == digest), None)


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
        twin = _promotion_twin(deployment)
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
        raise _invalid("reason", "may not be blank")
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.state in (DeploymentState.RETIRED,):
            raise Conflict("deployment_retired", f"deployment {deployment.pk} is already retired")
        was = deployment.state
        _stop_process(deployment)
        deployment.state, deployment.stopped_at, deployment.pid = DeploymentState.RETIRED, timezone.now(), None
        deployment.save(update_fields=["state", "stopped_at", "pid"])
        ledger_append(
            actor=actor, action="deployment.retired", subject=_subject(deployment), payload={"reason": reason}
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
        raise _invalid("reason", "may not be blank")
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
        _stop_process(deployment)
        deployment.state, deployment.stopped_at, deployment.pid = DeploymentState.REPLACED, timezone.now(), None
        deployment.save(update_fields=["state", "stopped_at", "pid"])
        ledger_append(
            actor=actor, action="deployment.rolled_back", subject=_subject(deployment),
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


# --- Supervision and the inference log -----------------------------------------------------------


def deployments_supervise() -> int:
    """Record live deployments whose server stopped: ``expired`` when its grant ran out (the
    server stops itself then), ``failed`` otherwise. Returns how many changed."""
    changed = 0
    for deployment in Deployment.objects.filter(state=DeploymentState.LIVE):
        grant = deployment.grants.first()
        expired = grant is not None and grant.expires_at <= timezone.now()
        if _server_process(deployment) is not None and not expired:
            continue
        _stop_process(deployment)
        with transaction.atomic():
            if not Deployment.objects.filter(pk=deployment.pk, state=DeploymentState.LIVE).update(
                state=DeploymentState.EXPIRED if expired else DeploymentState.FAILED,
                stopped_at=timezone.now(),
                pid=None,
            ):
                continue
            reason = f"the grant expired at {grant.expires_at:%Y-%m-%d %H:%M:%S} UTC" if expired and grant else (
                "the server process exited"
            )  # fmt: skip
            Deployment.objects.filter(pk=deployment.pk).update(refusal_reason=reason)
            ledger_append(
                actor=_system(), action="deployment.expired" if expired else "deployment.failed",
                subject=_subject(deployment), payload={"reason": reason},
            )  # fmt: skip
            changed += 1
    return changed


def inference_logs_summarise() -> int:
    """Append one ledger entry per deployment for the log lines written since the last one:
    counts by status and guard action, and the SHA-256 of those bytes. Returns the segments made.

    A line that cannot be read (torn by a crash, corrupted; see
    ``serving.monitoring.read_log_skipping_unreadable``) is counted in ``unreadable_lines``, not
    in the requests; its bytes are still in the segment and its hash, so it is read once. A log
    that cannot be read at all is logged and left for the next run; the other deployments' logs
    are summarised all the same."""
    made = 0
    for deployment in Deployment.objects.exclude(state=DeploymentState.REQUESTED):
        try:
            made += _inference_log_summarise(deployment)
        except OSError:
            logger.exception("inference log of deployment %s: cannot be read; left for the next run", deployment.pk)
        except IntegrityError:
            # A concurrent run recorded this segment first (its transaction rolled back, entry included).
            logger.info("inference log of deployment %s: already summarised by another run", deployment.pk)
    return made


def _inference_log_summarise(deployment: Deployment) -> int:
    """One deployment's new segment, under its row's lock: overlapping runs take turns, and the
    later one starts where the earlier one's segment ended."""
    with transaction.atomic():
        Deployment.objects.select_for_update().values_list("pk", flat=True).get(pk=deployment.pk)
        return _inference_log_segment_record(deployment)


def _inference_log_segment_record(deployment: Deployment) -> int:
    import hashlib
    from collections import Counter

    from serving.models import InferenceLogSegment
    from serving.monitoring import parse_log_line, record_problem

    log = _folder(deployment) / "inference.jsonl"
    if not log.is_file():
        return 0
    last = deployment.log_segments.order_by("-end_offset").first()
    start = last.end_offset if last else 0
    with log.open("rb") as handle:
        handle.seek(start)
        data = handle.read()
    data = data[: data.rfind(b"\n") + 1]  # whole lines only
    if not data:
        return 0
    statuses: Counter[str] = Counter()
    guard: Counter[str] = Counter()
    latencies = []
    unreadable = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = parse_log_line(line)
        except ValueError:
            record = None
        if record is None or record_problem(record) is not None:
            unreadable += 1
            continue
        statuses[str(record.get("status"))] += 1
        for side, decision in (record.get("guard") or {}).items():
            action = decision.get("action") if isinstance(decision, dict) else decision
            guard[f"{side}:{action}"] += 1
        if isinstance(record.get("latency_ms"), int | float):
            latencies.append(record["latency_ms"])
    if unreadable:
        logger.warning("inference log of deployment %s: %d unreadable line(s) from byte %d", deployment.pk,
                       unreadable, start)  # fmt: skip
    latencies.sort()
    summary = {
        "requests": sum(statuses.values()), "statuses": dict(statuses), "guard": dict(guard),
        "latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
        "latency_ms_max": latencies[-1] if latencies else None, "unreadable_lines": unreadable,
    }  # fmt: skip
    digest = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        entry = ledger_append(
            actor=_system(), action="deployment.inference_log", subject=_subject(deployment),
            payload={"start_offset": start, "end_offset": start + len(data), "sha256": digest, **summary},
        )  # fmt: skip
        InferenceLogSegment.objects.create(
            deployment=deployment, start_offset=start, end_offset=start + len(data),
            requests=summary["requests"], summary=summary, sha256=digest, ledger_index=entry.index,
        )  # fmt: skip
    return 1


# --- Feedback on outputs (post-market monitoring) ------------------------------------------------

SERVED_STATES = (
    DeploymentState.LIVE, DeploymentState.EXPIRED, DeploymentState.REPLACED, DeploymentState.RETIRED,
    DeploymentState.FAILED,
)  # fmt: skip


FEEDBACK_ROLES = tuple(role for role in Role if role != Role.AUDITOR)


def _served_request(deployment: Deployment, request_id: uuid.UUID) -> bool:
    """Did the deployment's server answer ``request_id``? Its inference log has one line per
    request, written and flushed before the answer goes out, each with the ``request_id`` it
    answered with (``X-Request-Id``) and the grant's deployment. Only lines that name the id are
    parsed; an unreadable line never counts as served."""
    from serving.monitoring import parse_log_line
    from serving.selectors import inference_log_path

    log = inference_log_path(deployment)
    if not log.is_file():
        return False
    needle = str(request_id).encode()
    with log.open("rb") as handle:
        for line in handle:
            if needle not in line or not line.endswith(b"\n"):
                continue
            try:
                record = parse_log_line(line)
            except ValueError:
                continue
            if record.get("request_id") == str(request_id) and record.get("deployment") == deployment.pk:
                return True
    return False


def deployment_feedback_give(*, actor: Any, deployment: Deployment, request_id: str, rating: int, category: str) -> Any:
    """Rate one completion of a deployment: any member of its project except an auditor (auditors
    are read-only: 403 naming the roles that may). One rating per person and request; the ledger
    records it with the request id, never the text.

    ``request_id`` must be one the deployment's server answered with: it is looked up in the
    deployment's inference log (400 ``invalid_input`` on ``request_id`` otherwise). Caveat: each
    call reads the log through, and the log must be readable here (the embedded default's shared
    ``SERVING_ROOT``); deployments handed off to a serving platform are never ``served`` here."""
    from serving.models import FeedbackCategory, InferenceFeedback

    roles = project_roles_held(actor, deployment.project)
    if not (is_platform_admin(actor) or roles):
        raise DomainError("not_found", f"no deployment {deployment.pk}", status_code=404)
    if not (is_platform_admin(actor) or roles & set(FEEDBACK_ROLES)):
        raise PermissionDenied(
            "permission_denied",
            f"giving feedback needs one of {', '.join(FEEDBACK_ROLES)} in {deployment.project.slug} "
            "(auditors are read-only)",
        )
    try:
        request_uuid = uuid.UUID(str(request_id))
    except ValueError:
        raise _invalid("request_id", f"the id the server returned (a UUID), got {request_id!r}") from None
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
        raise _invalid("rating", f"a whole number from 1 to 5, got {rating!r}")
    if category not in FeedbackCategory.values:
        raise _invalid("category", f"one of {', '.join(FeedbackCategory.values)}, got {category!r}")
    if deployment.state not in SERVED_STATES:
        raise Conflict("not_served", f"deployment {deployment.pk} has not served any request ({deployment.state})")
    if not _served_request(deployment, request_uuid):
        raise _invalid("request_id", f"deployment {deployment.pk} served no request {request_uuid}")
    given = Conflict("feedback_given", f"you already rated request {request_uuid}")
    with transaction.atomic():
        if InferenceFeedback.objects.filter(deployment=deployment, request_id=request_uuid, given_by=actor).exists():
            raise given
        entry = ledger_append(
            actor=actor, action="deployment.feedback", subject=_subject(deployment),
            payload={"request_id": str(request_uuid), "rating": rating, "category": category},
        )  # fmt: skip
        try:
            with transaction.atomic():  # a twin request may insert between the check and here
                feedback = InferenceFeedback.objects.create(
                    deployment=deployment, request_id=request_uuid, rating=rating, category=category, given_by=actor
                )
        except IntegrityError:
            raise given from None
    feedback.ledger_index = entry.index
    return feedback
