"""Reads of the serving app. Those a person asks for take the user and return only what that
user may see; the others (evidence, the system's account, a deployment's files, the promotion a
request would duplicate, whether a request was served) are asked by the services and the
governance plug-in, which check the actor themselves."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, QuerySet

from common.errors import DomainError, NotFound
from governance.permissions import SYSTEM_USERNAME
from governance.selectors import project_list
from governance.services import approval_holds
from registry.services import dataset_version_digest
from serving.models import Deployment, DeploymentClientCredential, Environment
from serving.rules import PROMOTION_OPEN_STATES, deployment_digest


def deployment_list(*, user: Any) -> QuerySet[Deployment]:
    return Deployment.objects.filter(project__in=project_list(user=user)).select_related(
        "project", "model_version__model", "requested_by"
    )


def deployment_get(*, user: Any, pk: int) -> Deployment:
    deployment = deployment_list(user=user).filter(pk=pk).first()
    if deployment is None:
        raise NotFound("not_found", f"no deployment {pk}")
    return deployment


def system_account() -> Any:
    """The service account the system acts through (the worker, the supervisor)."""
    return get_user_model().objects.get(username=SYSTEM_USERNAME)


def deployment_folder(deployment: Deployment) -> Path:
    """The deployment's folder on the worker: its weights, grant, verifier keys, the server's
    output and its inference log (the embedded default: a local folder shared by the worker and
    the web process)."""
    return Path(settings.SERVING_ROOT) / f"deployment-{deployment.pk}"


def client_list_path(deployment: Deployment) -> Path:
    """Where the service writes the deployment's signed client list and its server reads it."""
    return deployment_folder(deployment) / "clients.note"


def client_credentials_of_scope(deployment: Deployment) -> QuerySet[DeploymentClientCredential]:
    """The client credentials a server of ``deployment`` may accept: those issued through any
    deployment of its project, name and environment (revoked and expired ones included)."""
    return DeploymentClientCredential.objects.filter(
        deployment__project_id=deployment.project_id, deployment__name=deployment.name,
        deployment__environment=deployment.environment,
    )  # fmt: skip


def client_credential_list(*, user: Any, deployment: Deployment) -> QuerySet[DeploymentClientCredential]:
    """The credentials of a deployment the user may see (``deployment`` came from
    ``deployment_get``), newest first, with who issued and revoked them."""
    return client_credentials_of_scope(deployment).select_related("deployment", "created_by", "revoked_by")


def client_credential_get(*, user: Any, pk: int) -> DeploymentClientCredential:
    """A credential of a deployment the user may see; 404 otherwise (hidden and missing alike)."""
    found = (
        DeploymentClientCredential.objects.filter(pk=pk, deployment__in=deployment_list(user=user))
        .select_related("deployment__project", "created_by", "revoked_by")
        .first()
    )
    if found is None:
        raise NotFound("not_found", f"no client credential {pk}")
    return found


def inference_log_path(deployment: Deployment) -> Path:
    """Where the deployment's server writes its inference log."""
    return deployment_folder(deployment) / "inference.jsonl"


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


def deployment_promotion_twin(deployment: Deployment) -> Deployment | None:
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


def deployment_served_request(deployment: Deployment, request_id: uuid.UUID) -> bool:
    """Did the deployment's server answer ``request_id``? Its inference log has one line per
    request, written and flushed before the answer goes out, each with the ``request_id`` it
    answered with (``X-Request-Id``) and the grant's deployment. Only lines that name the id are
    parsed; an unreadable line never counts as served."""
    from serving.monitoring import parse_log_line

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


def deployment_monitoring(*, deployment: Deployment, window_s: int) -> dict[str, Any]:
    """Latency, error rates, prompt lengths and guard hits per window of the deployment's
    inference log, with the drift of each window against the first, and the feedback given. Reads
    the whole log (fine for the months one log file holds at these sizes; a log that outgrows it
    wants the segments' summaries instead). Lines that cannot be read (torn by a crash, corrupted)
    are left out and counted in ``unreadable_lines``."""
    from serving import monitoring

    path = inference_log_path(deployment)
    records, _, unreadable = monitoring.read_log_skipping_unreadable(path) if path.is_file() else ([], 0, 0)
    feedback = [
        {"time": f.created_at, "request_id": str(f.request_id), "rating": f.rating} for f in deployment.feedback.all()
    ]
    try:
        windows = monitoring.window_stats(records, window_s=window_s, feedback=feedback)
    except ValueError as exc:  # the log spans more windows than one answer holds
        raise DomainError("invalid_input", f"window_s: {exc}", fields={"window_s": [str(exc)]}) from None
    result = monitoring.summary(windows)
    result["unreadable_lines"] = unreadable
    result["feedback_by_category"] = dict(
        deployment.feedback.values_list("category").annotate(n=Count("id")).order_by("category")
    )
    return result
