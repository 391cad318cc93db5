"""Helpers of the optimisation tests: a tiny model trained for a few seconds (so that int8 noise
costs it perplexity, as it costs a trained model; on the random tiny model the delta is noise
around zero), its registration as a version of ``ready``'s model, and an evaluation set approved
for evaluation, all through the services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.test import override_settings

from governance.services import approval_request_decide, approval_request_submit
from registry.models import PiiScan
from registry.services import dataset_version_upload, model_version_register_folder, pii_scan_run
from registry.tests.conftest import make_dataset
from training.tests.conftest import PATTERN_ONLY

EVALUATION_TEXTS = [f"ticket {i}: the customer asked about the refund and the agent answered" for i in range(12)]


def build_trained_tiny(folder: Path, *, steps: int = 60) -> Path:
    """The tiny GPT-2, trained ``steps`` full-batch steps on its own corpus (seconds on a CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from registry.tiny_model import CORPUS, build_tiny_gpt2

    source = build_tiny_gpt2(folder.parent / "random-tiny")
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True)
    batch = tokenizer(sorted(set(CORPUS)), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def register_trained(ready: dict[str, Any], trained: Path) -> Any:
    """``trained`` as a new version of ``ready``'s tiny model."""
    with override_settings(REGISTRY_ALLOWED_ROOTS=[trained.parent.resolve()]):
        version, _ = model_version_register_folder(
            actor=ready["ml_engineer"], model=ready["base"].model, folder=str(trained)
        )
    return version


def evaluation_set(ready: dict[str, Any], *, approved: bool = True, texts: list[str] | None = None) -> Any:
    """A scanned dataset version, approved for ``dataset_version.use_for_evaluation`` (or not)."""
    data = "".join(json.dumps({"text": t}) + "\n" for t in texts or EVALUATION_TEXTS).encode()
    dataset = make_dataset(ready, slug="evaluation")
    with override_settings(PII_SCAN_QUEUE="training-tests"):
        version, _ = dataset_version_upload(actor=ready["ml_engineer"], dataset=dataset, filename="e.jsonl", data=data)
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=ready["system"])
    if approved:
        request = approval_request_submit(
            actor=ready["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
            action="dataset_version.use_for_evaluation",
        )  # fmt: skip
        approval_request_decide(actor=ready["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    version.refresh_from_db()
    return version


def actions(run: Any) -> list[str]:
    """The run's own ledger actions (``optimisation_run.*``; its approval's entries left out), in order."""
    from audits.ledger.models import Entry

    return list(
        Entry.objects.filter(
            subject_type="optimisation_run", subject_id=str(run.pk), action__startswith="optimisation_run."
        )
        .order_by("index")
        .values_list("action", flat=True)
    )


def payload(run: Any, action: str) -> dict[str, Any]:
    from audits.ledger.models import Entry

    body = Entry.objects.filter(subject_type="optimisation_run", subject_id=str(run.pk), action=action).last().body
    return json.loads(bytes(body))["payload"]


def policies_with(folder: Path, source: Path, *, deploy_evidence: str) -> Path:
    """A copy of ``source`` (the shipped policies) whose ``model_version.deploy`` and staging
    ``deployment.deploy`` rules ask for ``deploy_evidence`` only."""
    import shutil

    shutil.copytree(source, folder)
    (folder / "model_version.deploy.yaml").write_text(
        "action: model_version.deploy\nrules:\n  - approvals:\n      - {role: platform_admin, count: 1}\n"
        f"    evidence: [{deploy_evidence}]\n    expires_after_days: 30\n"
    )
    policy = folder / "deployment.deploy.yaml"
    text = policy.read_text()
    staging = text.index("  - when: {environment: staging}")
    policy.write_text(
        text[:staging] + "  - when: {environment: staging}\n    approvals:\n      - {role: platform_admin, count: 1}\n"
        f"    evidence: [{deploy_evidence}]\n    expires_after_days: 30\n"
    )
    return folder
