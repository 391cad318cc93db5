"""Reports carry the SCITT receipts of the entries they cite, in the signed revision: at most
RECEIPTS_LIMIT, the claims' entries first; each read back from the signed PDF and verified by
pycose and an RFC 9162 root computed here, and by the standalone verifier."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.contrib.auth import get_user_model
from llmops_ledger_verify.receipt import verify_receipt
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from audits.ledger.keys import load_signer_keys
from audits.ledger.models import Checkpoint, Entry
from audits.ledger.receipts import entry_receipts
from audits.ledger.services import Actor, AppendRequest, Subject, checkpoint_create, ledger_append_many
from audits.ledger.verification import known_verifiers
from audits.reports.pdf import (
    RECEIPTS_LIMIT,
    Claim,
    Heading,
    Report,
    ReportPdfError,
    Table,
    build_pdf,
    read_attachment,
    read_pdf,
    read_receipts,
    receipt_indexes,
    service_certificate,
    sign_pdf,
    verify_pdf_signature,
)
from conftest import require_tool

pytestmark = pytest.mark.django_db
TREE = 2_000
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _root(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2, written out here rather than taken from the project's merkle.py."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if fn % 2 == 1 or fn == sn:
            r = _h(b"\x01" + p + r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _h(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return r


def _signed_ledger(entries: int) -> Checkpoint:
    """A ledger of ``entries`` entries under a signed checkpoint."""
    actor = Actor.of(get_user_model().objects.create_user(username="report-receipts"))
    first = Entry.objects.count()
    ledger_append_many([
        AppendRequest(actor=actor, action="test.event", subject=Subject(type="thing", id=str(i)), payload={"i": i})
        for i in range(first, entries)
    ])  # fmt: skip
    checkpoint = checkpoint_create()
    assert checkpoint is not None and checkpoint.tree_size == entries
    return checkpoint


@pytest.fixture
def ledger(db: None) -> Checkpoint:
    return _signed_ledger(10)


def _report(checkpoint: Checkpoint, citations: list[int], claimed: int) -> Report:
    return _report_text(checkpoint.note, citations, claimed)


def _report_text(note: str, citations: list[int], claimed: int) -> Report:
    return Report(
        title="Receipts", scope="test", period_start=date(2026, 1, 1), period_end=date(2026, 2, 28),
        generated_at=AT, checkpoint_text=note, report_id="receipts-1",
        sections=[Heading("Cited"), Table(["n"], [[i] for i in citations], citations=citations)],
        claims=[Claim(fact="an event", entry=claimed, field="action", value="test.event")],
    )  # fmt: skip


def test_a_report_citing_10000_entries_gets_100_receipts_the_claims_first() -> None:
    note = "example.org/log\n10000\n" + "A" * 43 + "=\n\n\u2014 example.org/log AAAAAAAA\n"
    report = _report_text(note, list(range(10_000)), claimed=9_999)
    wanted = receipt_indexes(report)
    assert len(wanted) == RECEIPTS_LIMIT == 100
    assert wanted == (*range(99), 9_999)


def test_a_report_embeds_receipts_that_verify_independently(db: None) -> None:
    ledger = _signed_ledger(TREE)
    citations = list(range(0, TREE, 16))  # 125 cited entries, more than the limit
    report = _report(ledger, citations, claimed=TREE - 1)
    wanted = receipt_indexes(report)
    assert len(wanted) == RECEIPTS_LIMIT
    assert TREE - 1 in wanted and set(wanted) - {TREE - 1} == set(citations[:99])  # the claim's entry first
    receipts = entry_receipts(wanted, checkpoint=ledger)
    plain, with_receipts = build_pdf(report), build_pdf(replace(report, receipts=receipts))
    growth = len(with_receipts) - len(plain)
    sizes = sorted(len(r) for r in receipts.values())
    # At 2,000 entries a receipt is about 0.85 KB (11 path hashes of 33 bytes, the checkpoint note,
    # the header, the signature), some 1.3 KB in the PDF with its file entry; each doubling of the
    # log adds 33 bytes: at 10 million entries about 1.3 KB, 1.7 KB in the PDF, 100 at most.
    assert sizes[-1] < 900, sizes
    assert 0 < growth < RECEIPTS_LIMIT * 1400, growth

    key = ec.generate_private_key(ec.SECP256R1())
    certificate = service_certificate(
        key, common_name="llmops-governance reports",
        valid_from=datetime(2026, 1, 1, tzinfo=UTC), valid_to=datetime(2126, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    signed = sign_pdf(with_receipts, private_key=key, certificate=certificate, reason="receipts", signed_at=AT)
    check = verify_pdf_signature(signed, trusted=[certificate])
    assert check.ok, check.reason
    info = read_pdf(signed)
    assert info.receipt_indexes == wanted
    embedded = read_receipts(signed)
    assert embedded == receipts
    assert read_attachment(signed, "report.json") is not None

    public = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)[0].public_key
    root, keys = bytes(ledger.root), known_verifiers()
    bodies = dict(Entry.objects.filter(index__in=wanted).values_list("index", "body"))
    for index, receipt in embedded.items():
        body = bytes(bodies[index])
        tagged = cbor2.loads(receipt)
        protected, unprotected, payload, signature = tagged.value
        message = Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)
        size, leaf_index, path = cbor2.loads(message.uhdr[396][-1][0])
        assert (size, leaf_index) == (TREE, index)
        recomputed = _root(index, size, _h(b"\x00" + body), list(path))
        assert recomputed == root
        message.key = OKPKey(crv=Ed25519, x=public)
        assert message.verify_signature(detached_payload=recomputed)
        assert verify_receipt(receipt, keys, entry=body, origin=settings.LEDGER_ORIGIN)["index"] == index


def test_the_cover_names_the_receipts(ledger: Checkpoint) -> None:
    require_tool(bool(subprocess.run(["which", "pdftotext"], capture_output=True).stdout), "pdftotext (poppler-utils)")
    report = _report(ledger, [1, 2, 3], claimed=2)
    pdf = build_pdf(replace(report, receipts=entry_receipts([1, 2, 3], checkpoint=ledger)))
    text = subprocess.run(["pdftotext", "-l", "1", "-", "-"], input=pdf, capture_output=True, check=True).stdout
    flat = " ".join(text.decode().split())
    assert "SCITT receipts (RFC 9942 COSE receipts) of every cited entry" in flat
    assert "ledger-receipt-<index>.cose" in flat
    assert read_pdf(pdf).receipt_indexes == (1, 2, 3)
    assert read_pdf(build_pdf(report)).receipt_indexes == ()  # none given, none listed


def test_build_pdf_refuses_receipts_that_do_not_belong(ledger: Checkpoint, django_user_model: Any) -> None:
    report = _report(ledger, [1, 2, 3], claimed=2)
    with pytest.raises(ReportPdfError, match="which the report does not cite"):
        build_pdf(replace(report, receipts=entry_receipts([4], checkpoint=ledger)))
    swapped = entry_receipts([1, 2], checkpoint=ledger)
    with pytest.raises(ReportPdfError, match="proves entry 2"):
        build_pdf(replace(report, receipts={1: swapped[2]}))
    with pytest.raises(ReportPdfError, match="is malformed"):
        build_pdf(replace(report, receipts={1: b"not a receipt"}))
    user = django_user_model.objects.create_user(username="later")
    ledger_append_many([AppendRequest(actor=Actor.of(user), action="test.event")])
    later = checkpoint_create()
    assert later is not None
    with pytest.raises(ReportPdfError, match="not in the report's checkpoint"):
        build_pdf(replace(report, receipts=entry_receipts([1], checkpoint=later)))
    many = _report(ledger, list(range(10)), claimed=0)
    fake = dict.fromkeys(range(RECEIPTS_LIMIT + 1), b"")  # counted before any is read
    with pytest.raises(ReportPdfError, match="at most 100"):
        build_pdf(replace(many, receipts=fake))
