"""A person planted in the registry through the real services, for the admin tests and the
browser walk: dataset versions holding their e-mail (scanned for real, pattern recogniser only),
a model version registered as trained on one, and a deployment of it requested."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from django.test import override_settings

from registry.models import Dataset, DatasetVersion, PiiScan

ANA = "ana.silva@example.org"
PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}
CONTACTS = [
    {"text": f"Please call me back, my address is {ANA}"},
    {"text": "bob.jones@example.net asked about his invoice"},
    {"text": "the parcel arrived late but intact"},
    {"text": "hana.silva@example.org is a different customer"},
] + [{"text": f"ticket {i}: the order shipped on day {i % 7}"} for i in range(8)]


def jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def scan(version: DatasetVersion, system: Any, *, wait_s: float = 180) -> DatasetVersion:
    """Run the version's queued PII scans here and now (the worker's task body). Where a live
    Celery worker claimed one first, wait for it to finish (the claim is a conditional update:
    one of the two runs it)."""
    from registry.services import pii_scan_run

    with override_settings(**PATTERN_ONLY):
        for queued in PiiScan.objects.filter(version=version, status="queued"):
            pii_scan_run(scan_id=queued.pk, actor=system)
    finished = time.monotonic() + wait_s
    while PiiScan.objects.filter(version=version, status__in=["queued", "running"]).exists():
        assert time.monotonic() < finished, f"the PII scan of {version} did not finish in {wait_s:.0f} s"
        time.sleep(0.2)
    version.refresh_from_db()
    return version


def planted_version(people: dict[str, Any], slug: str, rows: list[dict[str, str]] = CONTACTS) -> DatasetVersion:
    """A new dataset ``slug`` with one version of ``rows``, uploaded and scanned."""
    from registry.services import dataset_version_upload
    from registry.tests.conftest import make_dataset

    dataset = Dataset.objects.filter(project=people["project"], slug=slug).first() or make_dataset(people, slug=slug)
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename=f"{slug}.jsonl", data=jsonl(rows)
    )
    return scan(version, people["system"])


def trained_and_deployed(people: dict[str, Any], version: DatasetVersion, slug: str = "tone") -> tuple[Any, Any]:
    """A model version registered as trained on ``version`` (small stand-in weights: lineage is
    what the search and the erasure follow) and a staging deployment of it, requested. A data
    steward reviews the version's personal data first, as training on it requires."""
    from registry.models import Review
    from registry.services import dataset_version_review, model_create, model_version_register_folder
    from serving.services import deployment_request

    if version.review == Review.UNREVIEWED:
        version = dataset_version_review(
            actor=people["data_steward"], version=version, decision="confirmed", note="customer contacts, contract"
        )

    model = model_create(actor=people["ml_engineer"], project=people["project"], slug=slug, name=slug.title())
    # The registry copies every file into its blob store, so the folder goes once registered.
    with tempfile.TemporaryDirectory(prefix="dsr-weights-") as folder:
        weights = Path(folder)
        (weights / "model.safetensors").write_bytes(b"weights of " + slug.encode())
        with override_settings(REGISTRY_ALLOWED_ROOTS=[weights.resolve()]):
            model_version, _ = model_version_register_folder(
                actor=people["ml_engineer"], model=model, folder=str(weights), dataset_versions=[version]
            )
    deployment = deployment_request(
        actor=people["ml_engineer"], model_version=model_version, name=f"{slug}-assistant", environment="staging",
        target={"max_tokens": 16}, guard={"mode": "redact", "entities": ["EMAIL_ADDRESS"]},
    )  # fmt: skip
    return model_version, deployment
