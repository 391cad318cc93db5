"""SCITT receipts of ledger entries (RFC 9942 COSE receipts), checked by implementations other than
the service's: pycose for the COSE signature, a few lines of RFC 9162 §2.1.3.2 here for the root
(not the project's merkle.py), and the standalone verifier (``llmops_ledger_verify.receipt``) for
every way a receipt, its key or its entry can be wrong."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from django.conf import settings
from django.test import Client
from llmops_ledger_verify.receipt import CborError, cbor_decode, verify_receipt
from llmops_ledger_verify.replay import VerificationFailed
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from audits.ledger import scopes
from audits.ledger.keys import SignerKey, load_signer_keys
from audits.ledger.models import Checkpoint, Entry
from audits.ledger.receipts import ReceiptUnavailable, entry_receipt, entry_receipts
from audits.ledger.services import checkpoint_create
from audits.ledger.verification import known_verifiers
from common.testing import admin_login
from conftest import ROOT

pytestmark = pytest.mark.django_db
CHECKPOINT = "llmops-governance/checkpoint"


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc9162_root(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2, step by step: the root an inclusion proof leads to."""
    assert 0 <= index < size
    fn, sn, r = index, size - 1, leaf
    for p in path:
        assert sn != 0, "the path is longer than the tree is deep"
        if fn % 2 == 1 or fn == sn:
            r = _h(b"\x01" + p + r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _h(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0, "the path is shorter than the tree is deep"
    return r


def _pycose(receipt: bytes) -> Sign1Message:
    # pycose 1.1's decode() expects cbor2 5's mutable lists; cbor2 6 gives tuples inside tags, so
    # the tag is taken off here and pycose builds its message from the four items.
    tagged = cbor2.loads(receipt)
    assert tagged.tag == 18  # COSE_Sign1
    protected, unprotected, payload, signature = tagged.value
    return Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)


def _signer() -> SignerKey:
    return load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)[0]


def _body(index: int) -> bytes:
    return bytes(Entry.objects.get(index=index).body)


@pytest.fixture
def signed(append: Callable[..., Any]) -> Checkpoint:
    append(7)
    checkpoint = checkpoint_create()
    assert checkpoint is not None and checkpoint.tree_size == 7
    return checkpoint


def test_every_receipt_of_a_tree_verifies_with_pycose_and_rfc9162(signed: Checkpoint) -> None:
    signer = _signer()
    root_line = signed.note.split("\n")[2]
    signed_root = base64.b64decode(root_line)
    receipts = entry_receipts(range(7), checkpoint=signed)
    assert sorted(receipts) == list(range(7))
    for index, receipt in receipts.items():
        message = _pycose(receipt)
        assert message.phdr[Algorithm] is EdDSA
        assert message.phdr[KID] == f"{signer.name}+{signer.key_id.hex()}".encode()
        assert message.phdr[395] == 1  # vds: RFC9162_SHA256
        claims = {1: settings.LEDGER_ORIGIN, 2: f"entry {index}", 6: int(signed.created_at.timestamp())}
        assert message.phdr[15] == claims  # CWT claims: iss, sub, iat
        assert message.phdr[16] == "application/scitt-receipt+cose"
        assert message.payload is None  # detached: the root is recomputed
        (proof,) = message.uhdr[396][-1]
        size, leaf_index, path = cbor2.loads(proof)
        assert (size, leaf_index) == (7, index)
        assert message.uhdr[CHECKPOINT] == signed.note
        root = rfc9162_root(index, size, _h(b"\x00" + _body(index)), list(path))
        assert root == signed_root
        message.key = OKPKey(crv=Ed25519, x=signer.public_key)
        assert message.verify_signature(detached_payload=root)
        assert not message.verify_signature(detached_payload=_h(b"another root"))
    # The same entry and checkpoint give the same bytes (Ed25519 and the header are deterministic).
    assert entry_receipt(Entry.objects.get(index=3), checkpoint=signed) == receipts[3]


def test_a_receipt_in_a_tree_of_one_entry_has_an_empty_path(append: Callable[..., Any]) -> None:
    append(1)
    checkpoint = checkpoint_create()
    assert checkpoint is not None
    receipt = entry_receipt(Entry.objects.get(index=0))
    message = _pycose(receipt)
    assert cbor2.loads(message.uhdr[396][-1][0]) == [1, 0, []]
    message.key = OKPKey(crv=Ed25519, x=_signer().public_key)
    assert message.verify_signature(detached_payload=_h(b"\x00" + _body(0)))  # the root is the leaf hash
    assert verify_receipt(receipt, known_verifiers(), entry=_body(0))["tree_size"] == 1


def test_the_standalone_verifier_accepts_a_receipt(signed: Checkpoint) -> None:
    receipt = entry_receipt(Entry.objects.get(index=5))
    summary = verify_receipt(receipt, known_verifiers(), entry=_body(5), origin=settings.LEDGER_ORIGIN)
    signer = _signer()
    assert summary == {
        "index": 5, "tree_size": 7, "root": base64.b64encode(bytes(signed.root)).decode(),
        "origin": settings.LEDGER_ORIGIN, "signed_by": f"{signer.name}+{signer.key_id.hex()}",
    }  # fmt: skip
    leaf = _h(b"\x00" + _body(5))
    assert verify_receipt(receipt, known_verifiers(), leaf_hash=leaf)["index"] == 5


def _rebuilt(receipt: bytes, *, protected: Any = None, proof: Any = None, signature: Any = None, **extra: Any) -> bytes:
    """The receipt with a part replaced, re-encoded."""
    parts = list(cbor2.loads(receipt).value)
    unprotected = dict(parts[1])
    if protected is not None:
        parts[0] = cbor2.dumps(protected)
    if proof is not None:
        unprotected[396] = {-1: [cbor2.dumps(proof)]}
    unprotected.update(extra)
    parts[1] = unprotected
    if signature is not None:
        parts[3] = signature
    return cbor2.dumps(cbor2.CBORTag(18, parts))


def _refusal(receipt: bytes, *, keys: Any = None, entry: bytes | None = None, origin: str | None = None) -> str:
    with pytest.raises(VerificationFailed) as failure:
        verify_receipt(receipt, known_verifiers() if keys is None else keys, entry=entry or _body(5), origin=origin)
    return str(failure.value)


def test_a_tampered_receipt_is_refused_with_the_reason(signed: Checkpoint) -> None:
    receipt = entry_receipt(Entry.objects.get(index=5))
    parts = cbor2.loads(receipt).value
    header = dict(cbor2.loads(parts[0]))
    size, index, path = cbor2.loads(parts[1][396][-1][0])

    flipped = parts[3][:-1] + bytes([parts[3][-1] ^ 1])
    assert "the COSE signature by" in _refusal(_rebuilt(receipt, signature=flipped))
    later = {**header, 15: {**header[15], 6: header[15][6] + 1}}  # a changed protected header
    assert "the receipt was changed" in _refusal(_rebuilt(receipt, protected=later))
    bent = [path[0][:-1] + bytes([path[0][-1] ^ 1]), *path[1:]]
    assert "lead to a root other than the signed checkpoint's" in _refusal(_rebuilt(receipt, proof=[size, index, bent]))
    assert "the proof is for 8" in _refusal(_rebuilt(receipt, proof=[8, index, path]))
    other = entry_receipt(Entry.objects.get(index=4))
    assert "not the one the receipt proves" in _refusal(other)  # entry 5's bytes, entry 4's receipt
    forged_note = signed.note.replace("\n7\n", "\n8\n")
    assert "receipt checkpoint" in _refusal(_rebuilt(receipt, **{CHECKPOINT: forged_note}))
    attached = cbor2.dumps(cbor2.CBORTag(18, [parts[0], dict(parts[1]), bytes(signed.root), parts[3]]))
    assert "must be detached" in _refusal(attached)
    assert "not EdDSA" in _refusal(_rebuilt(receipt, protected={**header, 1: -7}))
    assert "not a tagged COSE_Sign1" in _refusal(cbor2.dumps(list(parts)))
    assert "not CBOR" in _refusal(receipt[:-3])
    elsewhere = {**header, 15: {**header[15], 1: "example.org/another-log"}}
    assert "is not the checkpoint's origin" in _refusal(_rebuilt(receipt, protected=elsewhere))
    assert "is for origin" in _refusal(receipt, origin="example.org/another-log")


def test_a_receipt_checked_with_the_wrong_key_is_refused(signed: Checkpoint) -> None:
    receipt = entry_receipt(Entry.objects.get(index=5))
    stranger = SignerKey.generate(_signer().name)  # same name, another key: another key id
    assert "not among the trusted keys" in _refusal(receipt, keys=[stranger.verifier()])
    # A receipt signed by another key that names the log's key (kid) fails on its signature.
    parts = cbor2.loads(receipt).value
    from llmops_ledger_verify.receipt import sig_structure

    forged = stranger.sign(sig_structure(parts[0], bytes(signed.root)))
    assert "does not verify" in _refusal(_rebuilt(receipt, signature=forged))
    with pytest.raises(VerificationFailed, match="no trusted key"):
        verify_receipt(receipt, [], entry=_body(5))


def test_a_receipt_checked_against_the_wrong_entry_bytes_is_refused(signed: Checkpoint) -> None:
    receipt = entry_receipt(Entry.objects.get(index=5))
    assert "the entry given is entry 2" in _refusal(receipt, entry=_body(2))
    changed = _body(5).replace(b'"i":5', b'"i":6')
    assert changed != _body(5)
    assert "the entry is not the one this receipt proves" in _refusal(receipt, entry=changed)
    with pytest.raises(VerificationFailed, match="root other than"):
        verify_receipt(receipt, known_verifiers(), leaf_hash=_h(b"\x00" + changed))


def test_the_cbor_decoder_refuses_forms_receipts_do_not_use() -> None:
    assert cbor_decode(cbor2.dumps({1: [b"x", "y", -3, None]})) == {1: [b"x", "y", -3, None]}
    for bad, why in [
        (b"\x9f\x01\xff", "indefinite length"),  # an indefinite-length array
        (b"\xa2\x01\x01\x01\x02", "appears twice"),
        (b"\xfb" + b"\x00" * 8, "float"),
        (b"\x01\x02", "follow the data item"),
        (b"\x5a\xff\xff\xff\xff", "truncated"),
        (b"\x81" * 40 + b"\x01", "nested too deep"),
    ]:
        with pytest.raises(CborError, match=why):
            cbor_decode(bad)


def test_no_receipt_for_an_entry_past_the_latest_checkpoint(signed: Checkpoint, append: Callable[..., Any]) -> None:
    append(1)
    with pytest.raises(ReceiptUnavailable) as refused:
        entry_receipt(Entry.objects.get(index=7))
    assert refused.value.status_code == 409 and refused.value.code == "not_in_checkpoint"
    assert "entry 7 is not yet in a signed checkpoint (the latest checkpoint covers entries 0 to 6)" in str(
        refused.value
    )
    with pytest.raises(ReceiptUnavailable, match="entry 8 is not yet"):
        entry_receipts([0, 8])


def test_no_receipt_before_any_checkpoint(append: Callable[..., Any]) -> None:
    append(1)
    with pytest.raises(ReceiptUnavailable, match="none is signed"):
        entry_receipt(Entry.objects.get(index=0))


# --- The API ---------------------------------------------------------------------------------------


def _signed_in(user: Any) -> Client:
    client = Client()
    admin_login(client, user)  # a session past the second factor, as the API accepts it
    return client


def test_the_api_serves_a_receipt_to_whoever_reads_the_entry(
    people: dict[str, Any], append: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(scopes._BY_TYPE, "thing", lambda subject_id: people["project"].pk)
    auditor, officer, engineer = (_signed_in(people[r]) for r in ("auditor", "compliance_officer", "ml_engineer"))
    own = append(3).index
    checkpoint_create()
    pending = append(1).index  # after the checkpoint
    url = f"/api/v1/ledger/entries/{own}/receipt"
    response = auditor.get(url, HTTP_ACCEPT="application/cose")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/cose"
    assert f'filename="ledger-entry-{own}.receipt.cose"' in response["Content-Disposition"]
    body = base64.b64decode(auditor.get(f"/api/v1/ledger/entries/{own}").json()["body_b64"])
    assert verify_receipt(response.content, known_verifiers(), entry=body)["index"] == own
    refused = officer.get(f"/api/v1/ledger/entries/{pending}/receipt", HTTP_ACCEPT="application/cose")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_in_checkpoint", refused.content
    assert f"entry {pending} is not yet in a signed checkpoint" in refused.json()["error"]["message"]
    assert auditor.get("/api/v1/ledger/entries/9999/receipt").status_code == 404
    assert auditor.get(f"/api/v1/ledger/entries/{2**63}/receipt").status_code == 404
    # Not a reader of the entry: refused (a role that reads no entry), or no such entry (the
    # organisation's entry, read by organisation-wide auditors only).
    assert engineer.get(url).status_code == 403
    assert Client().get(url).status_code in (401, 403)
    monkeypatch.setitem(scopes._BY_TYPE, "thing", lambda subject_id: None)
    organisations = append(1).index
    checkpoint_create()
    assert auditor.get(f"/api/v1/ledger/entries/{organisations}/receipt").status_code == 404
    assert auditor.get(f"/api/v1/ledger/entries/{organisations}").status_code == 404  # as the entry


def test_the_verifiers_receipt_module_needs_only_cryptography() -> None:
    """The standalone verifier decodes CBOR itself: importing its receipt module pulls in neither
    cbor2 nor pycose nor Django (all installed here, so their absence from sys.modules tells)."""
    code = (
        "import sys, llmops_ledger_verify.receipt; "
        "print(sorted(m for m in ('cbor2', 'pycose', 'django') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out
