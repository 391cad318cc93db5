"""Rules of the training app that change nothing: the digest a run's approvals are given to, its
resource tier (a policy context), the ``datasets_approved`` evidence, and the checks of a
request's numbers and hyperparameters. Services, governance hooks, serializers and the admin ask
them here."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from common.digests import canonical_digest
from common.errors import DomainError, PermissionDenied
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role
from governance.services import approval_holds
from registry.rules import dataset_version_digest, use_status
from training import engine
from training.models import FineTuneRun

ACTION = "fine_tune_run.execute"


DATASET_ACTION = "dataset_version.use_for_training"


def _invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


def require_cancel(actor: Any, run: Any, reason: str) -> None:
    """Who may cancel a run, fine-tune or optimisation, and with what: its requester, an ML
    engineer or a platform admin of its project, with a reason that is not blank."""
    held = project_roles_held(actor, run.project)
    if not (
        is_platform_admin(actor) or actor.pk == run.requested_by_id or held & {Role.ML_ENGINEER, Role.PLATFORM_ADMIN}
    ):
        raise PermissionDenied("permission_denied", "cancelling needs the requester, ml_engineer or platform_admin")
    if not reason.strip():
        raise _invalid("reason", "may not be blank")


def fine_tune_run_digest(run: FineTuneRun) -> str:
    """Everything an approval of the run vouches for: the base weights, the dataset versions as
    they are now (content and review), the prompt template, the hyperparameters and the resources."""
    versions = sorted(run.dataset_versions.all(), key=lambda v: v.pk)
    return canonical_digest(
        {
            "project": run.project.slug,
            "base_weights": run.base.weights_digest,
            "dataset_versions": [dataset_version_digest(v) for v in versions],
            "prompt_template": run.prompt_template.content_digest if run.prompt_template else None,
            "text_field": run.text_field,
            "hyperparameters": run.hyperparameters,
            "resources": {
                "gpu_type": run.gpu_type,
                "gpu_count": run.gpu_count,
                "gpu_hours_estimate": str(run.gpu_hours_estimate),
            },
        }
    )


def resource_tier(run: FineTuneRun) -> str:
    """The policy context of a run's resources: ``cpu``, ``gpu`` (one) or ``multi_gpu``."""
    return "cpu" if run.gpu_count == 0 else ("gpu" if run.gpu_count == 1 else "multi_gpu")


def datasets_approved(run: FineTuneRun) -> tuple[bool, str]:
    """Evidence ``datasets_approved``: every dataset version is usable (personal data reviewed)
    and approved for training as it is now."""
    for version in sorted(run.dataset_versions.all(), key=lambda v: v.pk):
        usable, reason = use_status(version)
        if not usable:
            return False, f"dataset version {version.pk} ({version.dataset} v{version.number}): {reason}"
        if not approval_holds(
            subject_type="dataset_version", subject_id=str(version.pk), action=DATASET_ACTION,
            digest=dataset_version_digest(version),
        ):  # fmt: skip
            return False, (
                f"dataset version {version.pk} ({version.dataset} v{version.number}) has no approval for "
                f"{DATASET_ACTION} that holds for its current digest"
            )
    return True, "every dataset version is approved for training"


def _decimal(field: str, value: Any, *, minimum: Decimal) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(field, f"expected a number, got {value!r}") from None
    if not number.is_finite() or number < minimum:
        raise _invalid(field, f"must be at least {minimum}, got {value}")
    return number.quantize(Decimal("0.01"))


# name -> (type, default); ``None`` as default: required. ``epochs`` or ``max_steps``, one of them.
HYPERPARAMETERS: dict[str, tuple[type, Any]] = {
    "learning_rate": (float, None),
    "batch_size": (int, None),
    "seed": (int, 0),
    "method": (str, "full"),
    "epochs": (int, "unset"),
    "max_steps": (int, "unset"),
    "lora_r": (int, 8),
    "lora_alpha": (int, 16),
    "max_length": (int, 128),
    "beta": (float, "unset"),  # method dpo only: DPO's beta, engine.DPO_BETA_BOUNDS
}


def _hyperparameters(raw: Any) -> engine.Hyperparameters:
    """The engine's hyperparameters from a request's JSON, every field type-checked by name."""
    if not isinstance(raw, dict):
        raise _invalid("hyperparameters", "expected an object")
    unknown = sorted(set(raw) - set(HYPERPARAMETERS))
    if unknown:
        raise _invalid("hyperparameters", f"unknown field(s) {', '.join(unknown)}; known: {', '.join(HYPERPARAMETERS)}")
    values: dict[str, Any] = {}
    for name, (kind, default) in HYPERPARAMETERS.items():
        value = raw.get(name, default)
        if value is None:
            raise _invalid(f"hyperparameters.{name}", "is required")
        if value == "unset" and default == "unset":
            continue
        numeric = kind in (int, float) and not isinstance(value, bool)
        if kind is float and numeric and isinstance(value, int | float):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _invalid(f"hyperparameters.{name}", f"expected {kind.__name__}, got {value!r}")
        values[name] = value
    return engine.Hyperparameters(**values)
