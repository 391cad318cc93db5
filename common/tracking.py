"""The service's MLflow tracking: one client configuration and one experiment per project, for
every app that writes runs or registered models (the registry's mirror, training).

mlflow is a slow import: it is imported inside these functions, which only worker code paths
call, never at Django start-up."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def mlflow_client() -> Any:
    """An ``MlflowClient`` on the configured tracking and registry stores."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_REGISTRY_URI)


def project_experiment_id(client: Any, project_slug: str) -> str:
    """The id of the project's experiment (``governance/<slug>``), created with the configured
    artifact location when it does not exist yet. Two workers may both find it missing: the one
    whose create is refused takes the experiment the other created."""
    from mlflow.exceptions import MlflowException

    name = f"governance/{project_slug}"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=settings.MLFLOW_ARTIFACT_LOCATION))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)
