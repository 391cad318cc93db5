"""Writes of the training app: requesting, queueing, executing, cancelling and reaping fine-tune
runs, and GPU quotas. Each checks the actor, changes the rows and appends its ledger entries in one
transaction; execution runs in a Celery task (``training.run``) on the ``gpu`` or ``cpu`` queue.

One module per sub-domain; every public name is importable from here, as it always was:

- ``quotas``: a project's GPU-hour quota;
- ``runs``: a run's request, queueing, restart, cancellation and the reaper of lost workers;
- ``execution``: the worker's side, from the claim to the record of the attempt's end;
- ``workdirs``: the workers' training folders and their scrubbing;
- ``optimisation``: optimisation runs (governed int8 quantisation of a model version) and the
  evidence that bounds a quantised version's quality loss.

Rules that change nothing live in ``training.rules`` and reads in ``training.selectors``; they
are re-exported here for the callers that name them here. A test that replaces a name replaces
it in the module that looks it up (``training.services.execution._train``), not here.
"""

from __future__ import annotations

from training.rules import (
    ACTION,
    DATASET_ACTION,
    HYPERPARAMETERS,
    datasets_approved,
    fine_tune_run_digest,
    resource_tier,
)
from training.selectors import gpu_usage
from training.services.execution import MILESTONES, ClaimLost, code_version, fine_tune_run_execute, resolve_device
from training.services.optimisation import (
    OPTIMISATION_ACTION,
    evaluation_set_approved,
    on_optimisation_run_approved,
    optimisation_run_cancel,
    optimisation_run_digest,
    optimisation_run_execute,
    optimisation_run_request,
    optimisation_run_request_submit,
    optimisation_run_start,
    optimisation_runs_reap,
    quantisation_within_bounds,
)
from training.services.quotas import gpu_quota_set
from training.services.runs import (
    fine_tune_run_cancel,
    fine_tune_run_request,
    fine_tune_run_request_submit,
    fine_tune_run_start,
    fine_tune_runs_reap,
    on_run_approved,
)
from training.services.workdirs import fine_tune_workdirs_sweep

__all__ = [
    "ACTION",
    "DATASET_ACTION",
    "HYPERPARAMETERS",
    "MILESTONES",
    "OPTIMISATION_ACTION",
    "ClaimLost",
    "code_version",
    "datasets_approved",
    "evaluation_set_approved",
    "fine_tune_run_cancel",
    "fine_tune_run_digest",
    "fine_tune_run_execute",
    "fine_tune_run_request",
    "fine_tune_run_request_submit",
    "fine_tune_run_start",
    "fine_tune_runs_reap",
    "fine_tune_workdirs_sweep",
    "gpu_quota_set",
    "gpu_usage",
    "on_optimisation_run_approved",
    "on_run_approved",
    "optimisation_run_cancel",
    "optimisation_run_digest",
    "optimisation_run_execute",
    "optimisation_run_request",
    "optimisation_run_request_submit",
    "optimisation_run_start",
    "optimisation_runs_reap",
    "quantisation_within_bounds",
    "resolve_device",
    "resource_tier",
]
