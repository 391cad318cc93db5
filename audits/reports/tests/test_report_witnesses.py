"""Report verification applies the witness policy: a report whose ledger's witnesses co-signed
another tree (a split view) is refused, as ledger verify and the offline verifier refuse it."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from audits.ledger.models import Checkpoint
from audits.ledger.models_witness import WitnessCosignature, WitnessedLog
from audits.ledger.tests.test_witness import forked_note, over_client, post
from audits.ledger.tests.test_witness import witness as witness
from audits.ledger.witness.submit import request_body, witness_latest
from audits.reports.pdf import build_pdf
from audits.reports.services import report_verify, sign_report_pdf
from audits.reports.tests.test_report_receipts import _report, _signed_ledger

pytestmark = pytest.mark.django_db


def _signed_report(checkpoint: Checkpoint) -> bytes:
    return sign_report_pdf(build_pdf(_report(checkpoint, [0, 1, 2], 1)), reason="witnesses", signed_at=timezone.now())


def test_a_report_is_refused_when_the_witnesses_cosigned_another_tree(witness: Any) -> None:
    honest = _signed_ledger(6)
    assert witness_latest(transport=over_client) == {"witness.test/w1": "co-signed"}
    pdf = _signed_report(honest)
    check = report_verify(pdf)
    assert check.ok, check.reason

    # The witness was shown another tree of size 6 and co-signed it: a split view.
    WitnessedLog.objects.all().delete()
    fork = forked_note(6)
    fork_line = post(request_body(0, [], fork)).content.decode()
    with connection.cursor() as cursor:  # the honest co-signature gives way to the forked one
        cursor.execute("DELETE FROM ledger_witnesscosignature")
    WitnessCosignature.objects.create(
        checkpoint=honest, witness=witness.verifier().encode(), tree_size=6, note=fork, line=fork_line,
        timestamp=0, received_at=honest.created_at,
    )  # fmt: skip
    check = report_verify(pdf)
    assert not check.ok
    assert check.reason.startswith("witnesses: ") and "split view" in check.reason, check.reason
