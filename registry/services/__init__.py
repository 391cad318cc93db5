"""Writes of the registry. Each checks the actor's role in the project, changes the rows and
appends its ledger entries in one transaction; scans are dispatched after commit.

One module per sub-domain; every public name is importable from here, as it always was:

- ``datasets``: datasets, version uploads and registration from the server's files;
- ``pii_scans``: PII scans, their reaper, the steward's review of their findings;
- ``pii_findings``: a steward's look at the record behind one finding, and marks on findings;
- ``derived``: deduplicated and anonymised versions;
- ``data_subjects``: a data subject's lookup and the erasure of their records;
- ``model_versions``: models, weights registered from a folder, materialised for the workers;
- ``prompts``: prompt templates and chains;
- ``mlflow_mirror``: model versions mirrored in the MLflow model registry.

Rules that change nothing live in ``registry.rules`` and reads in ``registry.selectors``; they are
re-exported here for the callers that name them here. A test that replaces a name replaces it in
the module that looks it up (``registry.services.datasets.dispatch_on_commit``), not here.
"""

from __future__ import annotations

from registry.rules import dataset_version_digest, use_status, weights_digest
from registry.selectors import dataset_version_bytes, dataset_version_get
from registry.services.data_subjects import data_subject_lookup, dataset_version_erase_records
from registry.services.datasets import (
    WRITERS,
    _blob_delete_unless_live,  # noqa: F401 (tests of other apps delete blobs as an erasure does)
    dataset_create,
    dataset_version_register_path,
    dataset_version_upload,
)
from registry.services.derived import (
    dataset_version_anonymise_request,
    dataset_version_anonymise_run,
    dataset_version_deduplicate,
)
from registry.services.mlflow_mirror import mlflow_model_name, model_version_mirror_to_mlflow
from registry.services.model_versions import model_create, model_version_materialise, model_version_register_folder
from registry.services.pii_findings import pii_finding_mark, pii_finding_view
from registry.services.pii_scans import (
    dataset_version_review,
    pii_scan_request,
    pii_scan_run,
    pii_scan_shard_run,
    pii_scans_reap,
)
from registry.services.prompts import prompt_template_register

__all__ = [
    "WRITERS",
    "data_subject_lookup",
    "dataset_create",
    "dataset_version_anonymise_request",
    "dataset_version_anonymise_run",
    "dataset_version_bytes",
    "dataset_version_deduplicate",
    "dataset_version_digest",
    "dataset_version_erase_records",
    "dataset_version_get",
    "dataset_version_register_path",
    "dataset_version_review",
    "dataset_version_upload",
    "mlflow_model_name",
    "model_create",
    "model_version_materialise",
    "model_version_mirror_to_mlflow",
    "model_version_register_folder",
    "pii_finding_mark",
    "pii_finding_view",
    "pii_scan_request",
    "pii_scan_run",
    "pii_scan_shard_run",
    "pii_scans_reap",
    "prompt_template_register",
    "use_status",
    "weights_digest",
]
