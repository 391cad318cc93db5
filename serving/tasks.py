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
