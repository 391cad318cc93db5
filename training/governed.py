"""Training's governed subject (``fine_tune_run``) and evidence check, plugged into governance."""

from __future__ import annotations

from typing import Any

from governance.evidence import register_check
from governance.subjects import SubjectType, register_subject_type


def _run(pk: str) -> Any:
    from training.models import FineTuneRun

    # Only ASCII digits in the database's range: '²' is a digit to str.isdigit but not to int(),
    # and an id past 2**63 - 1 names nothing; both answer like a missing subject.
    if not (str(pk).isascii() and str(pk).isdigit()) or int(pk) >= 2**63:
        return None
    return FineTuneRun.objects.select_related("project", "base__model", "prompt_template").filter(pk=int(pk)).first()


def _describe(run: Any) -> dict[str, Any]:
    from training.services import datasets_approved

    holds, detail = datasets_approved(run)
    return {
        "name": run.name,
        "base": f"{run.base.model} v{run.base.number} ({run.base.weights_digest})",
        "dataset_versions": [f"{v.dataset} v{v.number}" for v in run.dataset_versions.all()],
        "hyperparameters": run.hyperparameters,
        "resources": {"gpu_type": run.gpu_type, "gpu_count": run.gpu_count,
                      "gpu_hours_estimate": str(run.gpu_hours_estimate)},
        "datasets_approved": holds,
        "datasets_detail": detail,
    }  # fmt: skip


def register() -> None:
    from training.services import datasets_approved, fine_tune_run_digest, on_run_approved, resource_tier

    register_subject_type(
        SubjectType(
            name="fine_tune_run",
            get=_run,
            project=lambda run: run.project,
            digest=fine_tune_run_digest,
            describe=_describe,
            context=lambda run: {"resource_tier": resource_tier(run)},
            on_approved=on_run_approved,
            authors=lambda run: [run.requested_by_id],
        )
    )
    register_check("datasets_approved", "fine_tune_run", datasets_approved)
