"""Celery tasks of serving. They take ids, re-read rows and call services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="serving.start", acks_late=True)
def start(deployment_id: int, grant_id: str) -> str:
    from serving.services import deployment_start

    return deployment_start(deployment_id=deployment_id, grant_id=grant_id).state


@shared_task(name="serving.export", acks_late=True)
def export(deployment_id: int) -> str:
    from serving.services import deployment_export_onnx

    return deployment_export_onnx(deployment_id=deployment_id).state


@shared_task(name="serving.supervise")
def supervise() -> int:
    from serving.services import deployments_supervise

    return deployments_supervise()


@shared_task(name="serving.summarise_logs")
def summarise_logs() -> int:
    from serving.services import inference_logs_summarise

    return inference_logs_summarise()


@shared_task(name="serving.expire_transcripts")
def expire_transcripts() -> dict[int, int]:
    """Drop the transcripts' turns past ``SERVING_TRANSCRIPT_RETENTION_DAYS`` (the beat, daily)."""
    from django.contrib.auth import get_user_model

    from governance.permissions import SYSTEM_USERNAME
    from serving.services.transcripts import transcripts_expire

    return transcripts_expire(actor=get_user_model().objects.get(username=SYSTEM_USERNAME))


@shared_task(name="serving.export_feedback", acks_late=True)
def export_feedback(deployment_id: int, approval_request_id: int) -> int | None:
    """Build the preference dataset version an approved ``deployment.export_feedback`` asks for;
    the dataset version's id, or None when the export failed (the failure is in the ledger)."""
    from serving.services.preference import deployment_feedback_export_run

    version = deployment_feedback_export_run(deployment_id=deployment_id, approval_request_id=approval_request_id)
    return version.pk if version is not None else None
