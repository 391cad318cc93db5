"""Reports generated from live data, signed, and checked by ``report verify``; tampering caught."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from audits.ledger.keys import load_signer_keys
from audits.ledger.models import Entry
from audits.reports import builders
from audits.reports.models import ReportRun, ReportState
from audits.reports.pdf import Report, Table, build_pdf
from audits.reports.services import (
    report_generate,
    report_pdf,
    report_request,
    report_verify,
    sign_report_pdf,
)
from common.errors import DomainError, PermissionDenied
from governance.services import (
    PolicyViolation,
    approval_break_glass,
    approval_request_decide,
    approval_request_submit,
)

pytestmark = pytest.mark.django_db
TODAY = dt.date.today()


def _generate(ready: dict[str, Any], kind: str, **extra: Any) -> ReportRun:
    today = dt.date.today()  # at the request, not at collection: a run may cross midnight
    run = report_request(actor=ready["compliance_officer"], kind=kind, period_start=today - dt.timedelta(days=7),
                         period_end=today, project=ready["project"], **extra)  # fmt: skip
    done = report_generate(report_pk=run.pk)  # what the reports.generate task runs
    assert done is not None and done.state == ReportState.DONE, done.error if done else "not claimed"
    assert report_generate(report_pk=run.pk) is None  # a second delivery does nothing
    return done


def _verify(path: Path) -> str:
    out = io.StringIO()
    call_command("report", "verify", str(path), stdout=out)
    return out.getvalue()


def _text(document: Report) -> str:
    parts: list[str] = []
    for section in document.sections:
        for value in vars(section).values():
            parts.append(str(value))
    return "\n".join(parts)


def _request_on_a_new_version(ready: dict[str, Any], slug: str) -> Any:
    """A scanned dataset version of a new dataset, and the ML engineer's request to train on it."""
    import json

    from django.test import override_settings

    from registry.models import PiiScan
    from registry.services import dataset_version_upload, pii_scan_run
    from registry.tests.conftest import make_dataset
    from training.tests.conftest import PATTERN_ONLY

    data = "".join(json.dumps({"text": f"note {i}"}) + "\n" for i in range(5)).encode()
    version, _ = dataset_version_upload(
        actor=ready["ml_engineer"], dataset=make_dataset(ready, slug=slug), filename="t.jsonl", data=data
    )
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=ready["system"])
    return approval_request_submit(
        actor=ready["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip


def test_the_governance_audit_report_is_signed_cites_the_ledger_and_verifies(
    ready: dict[str, Any], tmp_path: Path
) -> None:
    # A refusal under separation of duties and a break-glass approval, for the report to show.
    request = _request_on_a_new_version(ready, "second")
    with pytest.raises(PolicyViolation, match="separation of duties"):
        approval_request_decide(actor=ready["ml_engineer"], request_id=request.pk, decision="approve", reason="mine")
    approval_break_glass(actor=ready["platform-admin"], request_id=request.pk,
                         justification="the incident needs this dataset now, reviewed later")  # fmt: skip

    from audits.privacy.services import dsr_receive

    late = dsr_receive(
        actor=ready["compliance_officer"], project=ready["project"], regime="gdpr", kind="access", channel="email",
        received_at=timezone.now() - dt.timedelta(days=70), identifiers=[{"kind": "email", "value": "x@example.org"}],
    )  # fmt: skip
    run = _generate(ready, "governance_audit")
    generated = Entry.objects.get(action="report.generated", subject_id=str(run.report_id))
    assert generated.index == run.ledger_index
    pdf = report_pdf(run)
    path = tmp_path / "audit.pdf"
    path.write_bytes(pdf)
    out = _verify(path)
    assert "verified" in out and f"checkpoint {run.checkpoint_size}" in out

    document = builders.build(run, checkpoint=_checkpoint(run.checkpoint_size), progress=lambda *_: None)
    text = _text(document)
    for needed in (
        "separation_of_duties",
        "self_approval",
        "break-glass",
        "platform-admin",
        "Role grants and revocations",
        "granted",
        "Ledger verification",
        "passed",
        "policy set",
        "subject digest",
        "data_steward",
        "Overdue",
    ):
        assert needed.replace("_", " ") in text.replace("_", " "), needed
    heading = next(i for i, s in enumerate(document.sections) if getattr(s, "text", "").startswith("Overdue items"))
    overdue = document.sections[heading + 1]
    assert ["data-subject request", late.pk] in [row[:2] for row in overdue.rows]
    assert all(row[0] != "model review (open)" for row in overdue.rows)  # no due date: never overdue
    citations = [i for s in document.sections if isinstance(s, Table) and s.citations for i in s.citations if i]
    refused = Entry.objects.get(action="separation_of_duties.refused")
    assert refused.index in citations and all(i < run.checkpoint_size for i in citations)

    # One byte changed: the signature check names it.
    flipped = bytearray(pdf)
    flipped[len(pdf) // 3] ^= 0x01
    (tmp_path / "flipped.pdf").write_bytes(bytes(flipped))
    with pytest.raises(CommandError, match=r"signature: .*(modified|does not verify|readable)"):
        _verify(tmp_path / "flipped.pdf")


def _checkpoint(size: int) -> Any:
    from audits.ledger.models import Checkpoint

    return Checkpoint.objects.filter(tree_size=size).latest("id")


def test_a_report_citing_a_checkpoint_the_ledger_never_signed_fails(ready: dict[str, Any], tmp_path: Path) -> None:
    from django.conf import settings

    from audits.ledger import notes

    run = _generate(ready, "records_of_processing")
    real = _checkpoint(run.checkpoint_size)
    signer = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)[0]
    # Signed with the ledger's own key, but for a root the ledger never had.
    forged = notes.sign(
        notes.Checkpoint(origin=settings.LEDGER_ORIGIN, size=real.tree_size, root=b"\x07" * 32), [signer]
    )
    document = builders.build(run, checkpoint=_checkpoint(run.checkpoint_size), progress=lambda *_: None)
    from dataclasses import replace

    pdf = sign_report_pdf(build_pdf(replace(document, checkpoint_text=forged)), reason="test", signed_at=timezone.now())
    check = report_verify(pdf)
    assert not check.ok and "never signed a checkpoint of size" in check.reason


def test_records_of_processing_hold_every_art_30_field_from_live_data(ready: dict[str, Any]) -> None:
    run = _generate(ready, "records_of_processing")
    document = builders.build(run, checkpoint=_checkpoint(run.checkpoint_size), progress=lambda *_: None)
    text = _text(document)
    dataset = ready["version"].dataset
    for needed in (
        "controller",
        "data protection officer",
        "representative",
        "purpose (b)",
        "data subjects (c)",
        "personal data (c)",
        "recipients (d)",
        "third countries",
        "erasure limit (f)",
        "Security measures",
        dataset.purpose,
        f"{dataset.retention_days} days",
        "model version",
        "how it holds the data",
        "deployments",
    ):
        assert needed in text, needed


def test_annex_iv_and_dpia_document_a_model_version(ready: dict[str, Any]) -> None:
    for kind, needed in (
        ("annex_iv", ("1. General description", "2. Elements of the AI system", "3. Monitoring, functioning",
                      "4. Appropriateness of the performance metrics", "5. Risk management", "6. Changes over the "
                      "lifecycle", "7. Harmonised standards", "8. EU declaration of conformity",
                      "9. Post-market monitoring", ready["base"].weights_digest)),
        ("dpia", ("(a) Systematic description", "(b) Necessity", "(c) Risks", "likelihood", "severity",
                  "(d) Measures")),
    ):  # fmt: skip
        run = _generate(ready, kind, model_version=ready["base"])
        document = builders.build(run, checkpoint=_checkpoint(run.checkpoint_size), progress=lambda *_: None)
        text = _text(document)
        for item in needed:
            assert item in text, (kind, item)


def test_bad_report_requests_are_refused_and_change_nothing(ready: dict[str, Any]) -> None:
    before = Entry.objects.count(), ReportRun.objects.count()
    with pytest.raises(DomainError, match=r"period_end: the period ends .* before it starts"):
        report_request(actor=ready["compliance_officer"], kind="governance_audit", period_start=TODAY,
                       period_end=TODAY - dt.timedelta(days=1), project=ready["project"])  # fmt: skip
    with pytest.raises(DomainError, match=r"period_end: 9999-12-31 is more than a year ahead"):
        report_request(actor=ready["compliance_officer"], kind="ccpa_request_log", period_start=TODAY,
                       period_end=dt.date(9999, 12, 31), project=ready["project"])  # fmt: skip
    with pytest.raises(DomainError, match="kind: one of"):
        report_request(actor=ready["compliance_officer"], kind="horoscope", period_start=TODAY, period_end=TODAY,
                       project=ready["project"])  # fmt: skip
    with pytest.raises(DomainError, match="model_version"):
        report_request(actor=ready["compliance_officer"], kind="annex_iv", period_start=TODAY, period_end=TODAY,
                       project=ready["project"])  # fmt: skip
    with pytest.raises(PermissionDenied):
        report_request(actor=ready["ml_engineer"], kind="governance_audit", period_start=TODAY, period_end=TODAY,
                       project=ready["project"])  # fmt: skip
    assert (Entry.objects.count(), ReportRun.objects.count()) == before


def test_a_cited_entry_changed_in_the_database_fails_the_check(ready: dict[str, Any]) -> None:
    from django.db import connection

    from audits.ledger import merkle, triggers
    from audits.reports.pdf import read_pdf

    run = _generate(ready, "records_of_processing")
    pdf = report_pdf(run)
    assert report_verify(pdf).ok
    index = read_pdf(pdf).cited_indexes[0]
    cited = Entry.objects.get(index=index)
    assert cited.action == "dataset.created"
    # An attacker with the database: triggers dropped, one byte of the body changed, the stored
    # leaf hash (which the proofs are built from) left as it was.
    triggers.drop_rollback_unsafe(connection)
    body = bytes(cited.body).replace(b'"action":"dataset.created"', b'"action":"dataset.creatEd"')
    assert body != bytes(cited.body)
    with connection.cursor() as cursor:
        cursor.execute('UPDATE ledger_entry SET body = %s WHERE "index" = %s', [body, index])
    check = report_verify(pdf)
    assert not check.ok
    assert check.reason == f"entry {index}: its bytes do not hash to its stored leaf hash: it was changed"
    with connection.cursor() as cursor:  # the stored hash rewritten to match: the signed root still differs
        cursor.execute('UPDATE ledger_entry SET leaf_hash = %s WHERE "index" = %s', [merkle.leaf_hash(body), index])
    check = report_verify(pdf)
    assert not check.ok and check.reason.startswith(f"entry {index}: not included in the checkpoint")


def test_the_governance_audit_lists_the_decisions_made_in_the_period(ready: dict[str, Any]) -> None:
    """By when they were made: a request opened before the period and decided in it is in."""
    from governance.models import ApprovalDecision, ApprovalRequest

    request = _request_on_a_new_version(ready, "older")
    before_the_period = timezone.now() - dt.timedelta(days=20)
    ApprovalRequest.objects.filter(pk=request.pk).update(created_at=before_the_period)
    approval_request_decide(actor=ready["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    decision = ApprovalDecision.objects.get(request=request)

    run = _generate(ready, "governance_audit")
    document = builders.build(run, checkpoint=_checkpoint(run.checkpoint_size), progress=lambda *_: None)
    tables = [s for s in document.sections if isinstance(s, Table)]
    decided = next(t for t in tables if list(t.columns[:2]) == ["request", "approver"])
    cited = dict(zip((row[0] for row in decided.rows), decided.citations or [], strict=True))
    assert cited[request.pk] == decision.ledger_index
