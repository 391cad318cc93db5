"""Starting the model server for a granted deployment, on the worker: one delivery claims the start,
the server checks the grant itself, and the outcome (live, or refused) reaches the ledger. A live
deployment replaces the one of its name and environment."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.claims import claim_abandoned, worker_identity
from common.errors import DomainError
from governance.services import approval_holds
from registry.services import model_version_materialise
from serving.models import Deployment, DeploymentGrant, DeploymentState
from serving.rules import ACTION, deployment_digest, deployment_subject
from serving.selectors import client_list_path, deployment_folder, system_account
from serving.services.clients import client_list_write
from serving.services.grants import signer_keys
from serving.services.supervision import server_stop

logger = logging.getLogger(__name__)


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


def start_lease_s() -> float:
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
            if not claim_abandoned(lost, deployment.claimed_at, lease_s=start_lease_s()):
                logger.info("start of deployment %s: %s is starting it; nothing to do", deployment.pk, lost)
                return None
            if not waiting.filter(claimed_by=lost).update(claimed_by=me, claimed_at=now):
                return None
            logger.warning("start of deployment %s taken over from %s (its worker is gone)", deployment.pk, lost)
            # The lost worker's server may have outlived it (it runs in its own session): stop it,
            # where it can be reached, so that one deployment never has two servers.
            if lost.rpartition(":")[0] == me.rpartition(":")[0]:
                server_stop(deployment)
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
        return deployment_refuse(deployment, refusal, claimed_by=me)
    try:
        return _launch(deployment, grant, me)
    except Exception as exc:  # the start fails on record, never left in ``starting``; the worker lives on
        logger.exception("start of deployment %s failed", deployment.pk)
        return deployment_refuse(
            deployment, f"the server could not be started: {type(exc).__name__}: {exc}", claimed_by=me
        )


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
    folder = deployment_folder(deployment)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "weights"
    problem = _prepare_weights(deployment, weights)
    if problem:
        return deployment_refuse(deployment, problem, claimed_by=me)
    (folder / "grant.note").write_text(grant.text)
    (folder / "verifier.keys").write_text("".join(k.verifier().encode() + "\n" for k in signer_keys()))
    client_list_write(deployment)
    stdout = folder / "server.out"
    command = [
        sys.executable, "-m", "serving.server", "--grant", str(folder / "grant.note"),
        "--verifier-keys", str(folder / "verifier.keys"), "--weights", str(weights),
        "--client-credentials", str(client_list_path(deployment)), "--rate-limit", settings.SERVING_CLIENT_RATE_LIMIT,
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
            return deployment_refuse(
                deployment, str(event.get("reason", "refused")) if event else timeout, claimed_by=me
            )
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
                actor=system_account(), action="deployment.live", subject=deployment_subject(deployment),
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


def deployment_refuse(deployment: Deployment, reason: str, *, claimed_by: str | None = None) -> Deployment:
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
            actor=system_account(),
            action="deployment.refused",
            subject=deployment_subject(deployment),
            payload={"reason": reason},
        )
    return deployment


def _replace_previous(deployment: Deployment) -> None:
    """The live deployment of the same name and environment gives way to ``deployment``."""
    live = (
        Deployment.objects.select_for_update()
        .filter(project=deployment.project, name=deployment.name, environment=deployment.environment,
                state=DeploymentState.LIVE)
        .exclude(pk=deployment.pk)
    )  # fmt: skip
    for old in live:
        server_stop(old)
        old.state, old.stopped_at, old.pid = DeploymentState.REPLACED, timezone.now(), None
        old.save(update_fields=["state", "stopped_at", "pid"])
        if deployment.previous_id is None:
            deployment.previous = old
            deployment.save(update_fields=["previous"])
        ledger_append(
            actor=system_account(),
            action="deployment.replaced",
            subject=deployment_subject(old),
            payload={"by": deployment.pk},
        )
