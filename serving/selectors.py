"""Reads of the serving app; each takes the user and returns only what that user may see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count, QuerySet

from common.errors import DomainError, NotFound
from governance.selectors import project_list
from serving.models import Deployment


def deployment_list(*, user: Any) -> QuerySet[Deployment]:
    return Deployment.objects.filter(project__in=project_list(user=user)).select_related(
        "project", "model_version__model", "requested_by"
    )


def deployment_get(*, user: Any, pk: int) -> Deployment:
    deployment = deployment_list(user=user).filter(pk=pk).first()
    if deployment is None:
        raise NotFound("not_found", f"no deployment {pk}")
    return deployment


def inference_log_path(deployment: Deployment) -> Path:
    """Where the deployment's server writes its inference log (the embedded default: a local
    folder shared by the worker and the web process)."""
    return Path(settings.SERVING_ROOT) / f"deployment-{deployment.pk}" / "inference.jsonl"


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
