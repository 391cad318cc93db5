"""Training's governed subjects (``fine_tune_run``, ``optimisation_run``) and evidence checks,
plugged into governance."""

from __future__ import annotations

from typing import Any

from governance.evidence import register_check
from governance.subjects import (
    Fact,
    SubjectType,
    authors_by_field,
    names_by_pk,
    register_subject_type,
    register_summary,
)


def _run(pk: str) -> Any:
    from training.models import FineTuneRun

    # Only ASCII digits in the database's range: '²' is a digit to str.isdigit but not to int(),
    # and an id past 2**63 - 1 names nothing; both answer like a missing subject.
    if not (str(pk).isascii() and str(pk).isdigit()) or int(pk) >= 2**63:
        return None
    return FineTuneRun.objects.select_related("project", "base__model", "prompt_template").filter(pk=int(pk)).first()


def _describe(run: Any) -> dict[str, Any]:
    from training.rules import datasets_approved

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


def _lineage_facts(run: Any) -> list[Fact]:
    """What the run would train on and with: its base model version, each dataset version with
    whether it may be used and is approved for training as it is now, the resources asked."""
    from governance.selectors import approval_holds
    from registry.rules import dataset_version_digest, use_status
    from training.rules import DATASET_ACTION

    facts = [
        Fact("state", run.get_state_display()),
        Fact("base model version", f"{run.base} ({run.base.weights_digest})", link=run.base),
    ]
    for version in sorted(run.dataset_versions.select_related("dataset__project"), key=lambda v: v.pk):
        usable, reason = use_status(version)
        approved = approval_holds(
            subject_type="dataset_version", subject_id=str(version.pk), action=DATASET_ACTION,
            digest=dataset_version_digest(version),
        )  # fmt: skip
        verdict = "approved for training" if approved else "not approved for training"
        tone = "ok" if usable and approved else "bad"
        facts.append(Fact("dataset version", f"{version}: {reason}; {verdict}", link=version, tone=tone))
    gpus = f"{run.gpu_count} x {run.gpu_type}" if run.gpu_count else "CPU only"
    facts.append(Fact("resources", f"{gpus}, about {run.gpu_hours_estimate} GPU-hours"))
    settings = ", ".join(f"{key}={value}" for key, value in sorted(run.hyperparameters.items()))
    facts.append(Fact("hyperparameters", settings or "defaults"))
    if run.prompt_template_id:
        facts.append(Fact("prompt template", str(run.prompt_template), link=run.prompt_template))
    return facts


def _optimisation_run(pk: str) -> Any:
    from training.models import OptimisationRun

    if not (str(pk).isascii() and str(pk).isdigit()) or int(pk) >= 2**63:
        return None
    related = ("project", "source__model", "evaluation_set__dataset")
    return OptimisationRun.objects.select_related(*related).filter(pk=int(pk)).first()


def _describe_optimisation(run: Any) -> dict[str, Any]:
    from training.services.optimisation import evaluation_set_approved

    holds, detail = evaluation_set_approved(run)
    return {
        "method": run.method,
        "source": f"{run.source.model} v{run.source.number} ({run.source.weights_digest})",
        "evaluation_set": f"{run.evaluation_set.dataset} v{run.evaluation_set.number}",
        "text_field": run.text_field,
        "max_length": run.max_length,
        "evaluation_set_approved": holds,
        "evaluation_set_detail": detail,
    }


def _optimisation_facts(run: Any) -> list[Fact]:
    """What the run would quantise and measure on, and, once done, what it measured."""
    from training.services.optimisation import evaluation_set_approved

    holds, detail = evaluation_set_approved(run)
    facts = [
        Fact("state", run.get_state_display()),
        Fact("method", run.get_method_display()),
        Fact("source model version", f"{run.source} ({run.source.weights_digest})", link=run.source),
        Fact("evaluation set", f"{run.evaluation_set}: {detail}", link=run.evaluation_set,
             tone="ok" if holds else "bad"),
    ]  # fmt: skip
    if run.metrics:
        m = run.metrics
        facts.append(Fact("perplexity", f"int8 {m['int8']['perplexity']:.4f}, fp32 {m['fp32']['perplexity']:.4f} "
                                        f"({m['perplexity_delta']:+.4%})"))  # fmt: skip
        facts.append(Fact("size", f"int8 {m['int8']['size_bytes']} bytes, fp32 {m['fp32']['size_bytes']} bytes"))
    if run.output_id:
        facts.append(Fact("output", str(run.output), link=run.output))
    return facts


def register() -> None:
    from training.models import FineTuneRun
    from training.rules import datasets_approved, fine_tune_run_digest, resource_tier
    from training.services import on_run_approved

    register_subject_type(
        SubjectType(
            name="fine_tune_run",
            get=_run,
            project=lambda run: run.project,
            digest=fine_tune_run_digest,
            describe=_describe,
            actions=("fine_tune_run.execute",),
            context=lambda run: {"resource_tier": resource_tier(run)},
            on_approved=on_run_approved,
            authors=lambda run: [run.requested_by_id],
            authors_by_id=authors_by_field(FineTuneRun, "requested_by"),
            names_by_id=names_by_pk(FineTuneRun, "project"),
        )
    )
    register_check("datasets_approved", "fine_tune_run", datasets_approved)
    register_summary("fine_tune_run", _lineage_facts)

    from training.models import OptimisationRun
    from training.services.optimisation import (
        OPTIMISATION_ACTION,
        evaluation_set_approved,
        on_optimisation_run_approved,
        optimisation_run_digest,
        quantisation_within_bounds,
    )

    register_subject_type(
        SubjectType(
            name="optimisation_run", get=_optimisation_run, project=lambda run: run.project,
            digest=optimisation_run_digest, describe=_describe_optimisation, actions=(OPTIMISATION_ACTION,),
            on_approved=on_optimisation_run_approved, authors=lambda run: [run.requested_by_id],
            authors_by_id=authors_by_field(OptimisationRun, "requested_by"),
            names_by_id=names_by_pk(OptimisationRun, "project", "source__model__project"),
        )
    )  # fmt: skip
    register_check("evaluation_set_approved", "optimisation_run", evaluation_set_approved)
    register_summary("optimisation_run", _optimisation_facts)
    # A quantised version's measured quality loss against the policy's bound: asked of the model
    # version, and of a deployment through its model version.
    bound = {"max_perplexity_increase": float}
    register_check("quantisation_within_bounds", "model_version", quantisation_within_bounds, bound)
    register_check(
        "quantisation_within_bounds", "deployment",
        lambda d, **p: quantisation_within_bounds(d.model_version, **p), bound,
    )  # fmt: skip
