"""The mirror of model versions in the MLflow model registry (in the worker). MLflow holds no
governance fact: the ledger records the MLflow ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction

from audits.ledger.services import Subject, ledger_append
from common.tracking import mlflow_client, project_experiment_id


def mlflow_model_name(model_version: Any) -> str:
    return f"{model_version.model.project.slug}.{model_version.model.slug}"


def model_version_mirror_to_mlflow(*, model_version_id: int, actor: Any) -> Any:
    """Mirror a model version into the MLflow model registry (a run holding its weights digest,
    a registered version, and the alias ``registry-v<number>``). Idempotent: a mirrored version
    is left alone. The ledger records the MLflow ids; MLflow holds no governance fact."""
    from registry.models import ModelVersion

    version = ModelVersion.objects.select_related("model__project").get(pk=model_version_id)
    if version.mlflow_version:
        return version
    client = mlflow_client()
    experiment_id = project_experiment_id(client, version.model.project.slug)
    run_id = version.lineage.get("mlflow_run_id")  # a fine-tune's own run holds its parameters
    if not run_id:
        run_id = client.create_run(experiment_id, tags={"governance.model_version": str(version.pk)}).info.run_id
        client.log_param(run_id, "weights_digest", version.weights_digest)
        client.log_param(run_id, "files", len(version.files))
        client.set_terminated(run_id)
    name = mlflow_model_name(version)
    if not _registered(client, name):
        client.create_registered_model(name, tags={"governance.project": version.model.project.slug})
    registered = client.create_model_version(name, source=Path(version.source).as_uri(), run_id=run_id)
    alias = f"registry-v{version.number}"
    client.set_registered_model_alias(name, alias, registered.version)
    with transaction.atomic():
        version.mlflow_run_id, version.mlflow_model_name = run_id, name
        version.mlflow_version, version.mlflow_alias = str(registered.version), alias
        version.save(update_fields=["mlflow_run_id", "mlflow_model_name", "mlflow_version", "mlflow_alias"])
        ledger_append(
            actor=actor, action="model_version.mirrored_to_mlflow",
            subject=Subject("model_version", str(version.pk), version.weights_digest),
            payload={"run_id": run_id, "model": name, "version": str(registered.version), "alias": alias},
        )  # fmt: skip
    return version


def _registered(client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True
