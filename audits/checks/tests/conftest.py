"""A model version to audit and an approved evaluation dataset with a known disparity.

The tiny random GPT-2 answers with a deterministic function of the prompt's last word (it mostly
repeats it: "... about the customer" gives "erererer", "... about the refund" gives "ndndndnd").
The evaluation template ends with the record's topic, and the label mapping reads "erererer" as
approve (1) and "ndndndnd" as decline (0): a classifier whose decisions follow the topic. Group A
asks mostly about customers (8 of 10 approved), group B mostly about refunds (3 of 10): a
demographic parity difference of 0.5 that the default profile's bound of 0.1 must refuse. Two
records ask about "agent", whose answer maps to no label (counted as unparsed).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings

from governance.services import approval_request_decide, approval_request_submit
from registry.models import PiiScan
from registry.services import dataset_version_upload, pii_scan_run, prompt_template_register
from registry.tests.conftest import make_dataset
from training.tests.conftest import PATTERN_ONLY, ready  # noqa: F401  (the fixture, shared)

TOPICS = {"A": ["customer"] * 8 + ["refund"] * 2, "B": ["customer"] * 3 + ["refund"] * 7}
MAPPING = {"erererer": "1", "ndndndnd": "0"}
TEMPLATE = "applicant {id}, who asked about the {topic}"


def evaluation_records() -> list[dict[str, str]]:
    records = []
    for group, topics in TOPICS.items():
        for i, topic in enumerate(topics):
            records.append({"id": f"{group}{i}", "group": group, "topic": topic, "label": str(i % 2)})
    records += [{"id": "A99", "group": "A", "topic": "agent", "label": "1"},
                {"id": "B99", "group": "B", "topic": "agent", "label": "0"}]  # fmt: skip
    return records


@pytest.fixture
def audited(ready: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    dataset = make_dataset(ready, slug="loans")
    data = "".join(json.dumps(r) + "\n" for r in evaluation_records()).encode()
    version, _ = dataset_version_upload(actor=ready["ml_engineer"], dataset=dataset, filename="e.jsonl", data=data)
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=ready["system"])
    version.refresh_from_db()
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_evaluation",
    )  # fmt: skip
    approval_request_decide(actor=ready["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    template, _ = prompt_template_register(
        actor=ready["ml_engineer"], project=ready["project"], slug="loan-decision", body=TEMPLATE,
        intended_use="bias evaluation of the loan assistant",
    )  # fmt: skip
    return {**ready, "evaluation_version": version, "template": template}
