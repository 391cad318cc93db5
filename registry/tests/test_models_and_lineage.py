"""Model versions by weights digest, prompt templates, derived dataset versions and lineage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from audits.ledger.models import Entry
from common.errors import Conflict, DomainError
from registry.models import DatasetVersion, PiiScan
from registry.selectors import lineage_of_dataset_version, lineage_of_model_version
from registry.services import (
    dataset_version_deduplicate,
    dataset_version_upload,
    model_create,
    model_version_register_folder,
    pii_scan_run,
    prompt_template_register,
    weights_digest,
)
from registry.tiny_model import build_tiny_gpt2

pytestmark = pytest.mark.django_db
PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS", "PHONE_NUMBER"], "PII_SCAN_PROCESSES": 1}


def _scanned(people: dict[str, Any], version: DatasetVersion) -> DatasetVersion:
    with override_settings(**PATTERN_ONLY):
        for scan in PiiScan.objects.filter(version=version, status="queued"):
            pii_scan_run(scan_id=scan.pk, actor=people["system"])
    version.refresh_from_db()
    return version


def test_weights_digest_lineage_and_refusals(people: dict[str, Any], dataset: Any, tmp_path: Path) -> None:
    raw, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl",
        data=b'{"text": "refunds take two days"}\n{"text": "refunds take two days"}\n{"text": "ok"}\n',
    )  # fmt: skip
    raw = _scanned(people, raw)
    assert raw.pii_verdict == "none"
    dedup, created = dataset_version_deduplicate(actor=people["ml_engineer"], version=raw)
    assert created and dedup.parent == raw and dedup.derivation == "deduplicated"
    assert (dedup.record_count, dedup.duplicate_count) == (2, 0)
    with pytest.raises(Conflict, match="no duplicate"):
        dataset_version_deduplicate(actor=people["ml_engineer"], version=dedup)
    dedup = _scanned(people, dedup)

    root = tmp_path / "imports"
    base_dir = build_tiny_gpt2(root / "base")
    model = model_create(actor=people["ml_engineer"], project=people["project"], slug="assistant", name="Assistant")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[root.resolve()]):
        base, created = model_version_register_folder(actor=people["ml_engineer"], model=model, folder=str(base_dir))
        again, created_again = model_version_register_folder(
            actor=people["ml_engineer"], model=model, folder=str(base_dir)
        )
        assert created and not created_again and again.pk == base.pk
        expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in base_dir.iterdir()}
        assert base.files == expected
        assert base.weights_digest == weights_digest(expected)
        tuned_dir = build_tiny_gpt2(root / "tuned", seed=1)
        tuned, _ = model_version_register_folder(
            actor=people["ml_engineer"], model=model, folder=str(tuned_dir), base=base, dataset_versions=[dedup]
        )
        assert tuned.number == 2 and tuned.weights_digest != base.weights_digest
        with pytest.raises(DomainError, match="outside the allowed roots"):
            model_version_register_folder(actor=people["ml_engineer"], model=model, folder=str(tmp_path))
        blocked, _ = dataset_version_upload(
            actor=people["ml_engineer"],
            dataset=dataset,
            filename="b.jsonl",
            data=b'{"text": "mail me at a@example.com"}\n',
        )
        blocked = _scanned(people, blocked)
        with pytest.raises(DomainError, match="personal data was found"):
            model_version_register_folder(
                actor=people["ml_engineer"], model=model, folder=str(root / "base"), dataset_versions=[blocked]
            )

    downstream = lineage_of_dataset_version(raw)
    assert downstream["derived_dataset_versions"] == [dedup]
    assert downstream["model_versions"] == [tuned]
    assert lineage_of_dataset_version(blocked) == {"derived_dataset_versions": [], "model_versions": []}
    upstream = lineage_of_model_version(tuned)
    assert upstream == {"base_model_versions": [base], "dataset_versions": [dedup, raw]}

    registered = json.loads(bytes(Entry.objects.filter(action="model_version.registered").order_by("-index")[0].body))
    assert registered["subject"]["digest"] == tuned.weights_digest
    assert registered["payload"]["base"] == base.weights_digest


def test_prompt_templates_are_versioned_by_content(people: dict[str, Any]) -> None:
    project, engineer = people["project"], people["ml_engineer"]
    first, created = prompt_template_register(
        actor=engineer, project=project, slug="answer", body="Answer only from {context}, else 'I don't know'.",
        intended_use="grounded answers to support tickets",
    )  # fmt: skip
    same, created_same = prompt_template_register(
        actor=engineer, project=project, slug="answer", body=first.body, intended_use="grounded answers"
    )
    assert created and not created_same and same.pk == first.pk
    second, _ = prompt_template_register(
        actor=engineer, project=project, slug="answer", body=["Retrieve {context}", "Answer from it only"],
        intended_use="two-step chain", kind="chain",
    )  # fmt: skip
    assert (second.version, second.kind) == (2, "chain") and second.content_digest != first.content_digest
    for bad in (
        {"body": ""},
        {"body": "x", "intended_use": " "},
        {"body": "x", "kind": "poem"},
        {"body": [], "kind": "chain"},
    ):
        arguments = {"actor": engineer, "project": project, "slug": "answer", "intended_use": "u"} | bad
        with pytest.raises(DomainError):
            prompt_template_register(**arguments)
    with pytest.raises(Exception, match="ml_engineer"):
        prompt_template_register(actor=people["auditor"], project=project, slug="x", body="y", intended_use="z")


def test_model_versions_are_mirrored_in_the_mlflow_registry(people: dict[str, Any], tmp_path: Path) -> None:
    from django.conf import settings
    from mlflow import MlflowClient

    from registry.services import model_version_mirror_to_mlflow

    root = tmp_path / "imports"
    model = model_create(actor=people["ml_engineer"], project=people["project"], slug="assistant", name="Assistant")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[root.resolve()]):
        version, _ = model_version_register_folder(
            actor=people["ml_engineer"], model=model, folder=str(build_tiny_gpt2(root / "base"))
        )
    mirrored = model_version_mirror_to_mlflow(model_version_id=version.pk, actor=people["system"])
    assert (mirrored.mlflow_model_name, mirrored.mlflow_alias) == ("assistant.assistant", "registry-v1")
    client = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_REGISTRY_URI)
    by_alias = client.get_model_version_by_alias("assistant.assistant", "registry-v1")
    assert str(by_alias.version) == mirrored.mlflow_version and by_alias.run_id == mirrored.mlflow_run_id
    assert client.get_run(mirrored.mlflow_run_id).data.params["weights_digest"] == version.weights_digest
    experiment = client.get_experiment_by_name("governance/assistant")
    assert experiment.artifact_location == settings.MLFLOW_ARTIFACT_LOCATION
    again = model_version_mirror_to_mlflow(model_version_id=version.pk, actor=people["system"])
    assert again.mlflow_version == mirrored.mlflow_version  # idempotent: no second registry version
    assert len(client.search_model_versions("name='assistant.assistant'")) == 1
    assert Entry.objects.filter(action="model_version.mirrored_to_mlflow").count() == 1


def test_anonymisation_gives_a_usable_derived_version(people: dict[str, Any], dataset: Any) -> None:
    from registry.services import dataset_version_anonymise_run, dataset_version_review, use_status

    original, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl",
        data=b'{"text": "write to ada@example.org", "meta": {"phone": "+1 212-555-0198"}}\n{"text": "no pii"}\n',
    )  # fmt: skip
    original = _scanned(people, original)
    assert original.pii_verdict == "found"
    dataset_version_review(actor=people["data_steward"], version=original, decision="anonymisation_required")
    original.refresh_from_db()
    assert use_status(original)[0] is False
    with override_settings(**PATTERN_ONLY):
        derived, created = dataset_version_anonymise_run(version_id=original.pk, actor=people["data_steward"])
    assert created and derived.parent == original and derived.derivation == "anonymised"
    from common import artifacts

    content = artifacts.open_blob(derived.sha256).read_bytes().decode()
    assert "ada@example.org" not in content and "555-0198" not in content
    assert "<EMAIL_ADDRESS>" in content and "<PHONE_NUMBER>" in content and "no pii" in content
    derived = _scanned(people, derived)
    assert derived.pii_verdict == "none" and use_status(derived) == (True, "no personal data found")
    assert lineage_of_dataset_version(original)["derived_dataset_versions"] == [derived]
