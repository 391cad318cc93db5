"""SCITT receipts of ledger entries: RFC 9942 COSE Receipts over the ledger's RFC 9162 tree.

A receipt proves one entry is in the tree a signed checkpoint covers, in the standard form a
SCITT relying party (RFC 9943) reads, and can be handed to an outsider with nothing else but the
entry's bytes and the log's public key. It is a tagged ``COSE_Sign1`` (CBOR tag 18) signed with
the ledger's Ed25519 signing key (``LEDGER_SIGNING_KEY_FILE``). The header labels, and why:

Protected (signed) header:

- ``1`` (alg) ``-8``: EdDSA, the ledger key is Ed25519. Required by RFC 9942 §5.2.
- ``4`` (kid) ``b"<name>+<key id hex>"``: the C2SP verifier key that signed it, as ``GET
  /api/v1/ledger/keys`` lists it (the first signing key that also signed the checkpoint). RFC 9943
  requires a kid when no certificate is given.
- ``15`` (CWT claims, RFC 9597): ``1`` iss = the log's origin (``LEDGER_ORIGIN``, the first line of
  its checkpoints), ``2`` sub = ``"entry <index>"``, ``6`` iat = when the checkpoint was signed (so
  the same entry and checkpoint always give the same bytes). RFC 9943 requires iss and sub.
- ``16`` (typ, RFC 9596) ``"application/scitt-receipt+cose"``: what the object is, so it is never
  taken for another kind of COSE statement.
- ``395`` (vds) ``1``: RFC9162_SHA256, the tree's hashing. Required by RFC 9942 §5.2.

Unprotected header:

- ``396`` (vdp) ``{-1: [bstr .cbor [tree_size, leaf_index, [audit path...]]]}``: one RFC 9162
  inclusion proof (RFC 9942 §5.2). Unprotected as the RFC has it: the proof is checked by
  recomputing the signed root from it. A tree of one entry has an empty path.
- ``"llmops-governance/checkpoint"``: the C2SP signed checkpoint (the signed note) of that tree
  size, so a reader ties the receipt to the checkpoints the log publishes and witnesses co-sign.
  A text label, as RFC 9052 allows, so no registered label is claimed; unprotected because the
  note carries its own signatures.

Payload: detached (nil). It is the root of the tree of ``tree_size`` (RFC 9942 §5.2.1), which a
verifier recomputes from the entry and the path: a receipt over a tampered entry or path fails.

Only entries below the latest checkpoint's size get receipts (the tree a checkpoint signed);
others are refused with ``ReceiptUnavailable`` (409), which says when the next checkpoint is due.
The offline verifier checks receipts with ``llmops_ledger_verify.receipt.verify_receipt``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

import cbor2
from django.conf import settings
from django.utils import timezone
from llmops_ledger_verify import receipt as cose

from audits.ledger import merkle, notes
from audits.ledger.keys import KeyFileError, SignerKey, load_signer_keys
from audits.ledger.models import Checkpoint, Entry
from audits.ledger.selectors import fetch_nodes, latest_checkpoint
from common.errors import Conflict, DomainError

MEDIA_TYPE = "application/cose"
PROOFS_PER_FETCH = 64  # indexes whose audit paths are read in one query (a few hundred keys)


class ReceiptUnavailable(Conflict):
    """The entry is not yet in the tree of a signed checkpoint (409): no receipt can prove it yet."""


def _signers() -> list[SignerKey]:
    try:
        return load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)
    except KeyFileError as exc:
        raise DomainError("signing_key_unavailable", f"receipts are signed with the ledger key: {exc}",
                          status_code=503) from None  # fmt: skip


def _signer_for(checkpoint: Checkpoint, signers: Sequence[SignerKey]) -> SignerKey:
    """The first signing key that also signed ``checkpoint`` (after a rotation, the one a reader
    already knows from the note), else the first key of the file."""
    _, signatures = notes.parse(checkpoint.note)
    signed = {(s.name, s.key_id) for s in signatures}
    return next((k for k in signers if (k.name, k.key_id) in signed), signers[0])


def _refuse(index: int, checkpoint: Checkpoint | None) -> ReceiptUnavailable:
    every = timedelta(seconds=settings.LEDGER_CHECKPOINT_EVERY_S)
    due = max(checkpoint.created_at + every, timezone.now()) if checkpoint else timezone.now() + every
    signed = f"the latest checkpoint covers entries 0 to {checkpoint.tree_size - 1}" if checkpoint else "none is signed"
    return ReceiptUnavailable(
        "not_in_checkpoint",
        f"entry {index} is not yet in a signed checkpoint ({signed}); a receipt proves inclusion in a signed "
        f"tree, so ask again after the next checkpoint, due by {due:%Y-%m-%dT%H:%M:%SZ}",
    )


def _protected(index: int, checkpoint: Checkpoint, signer: SignerKey) -> bytes:
    claims = {cose.ISS: settings.LEDGER_ORIGIN, cose.SUB: f"entry {index}",
              cose.IAT: int(checkpoint.created_at.timestamp())}  # fmt: skip
    header = {
        cose.ALG: cose.ALG_EDDSA,
        cose.KID: f"{signer.name}+{signer.key_id.hex()}".encode(),
        cose.CWT_CLAIMS: claims,
        cose.TYP: cose.RECEIPT_TYPE,
        cose.VDS: cose.VDS_RFC9162_SHA256,
    }
    return cbor2.dumps(header, canonical=True)


def _receipt(index: int, path: list[bytes], checkpoint: Checkpoint, signer: SignerKey) -> bytes:
    protected = _protected(index, checkpoint, signer)
    root = bytes(checkpoint.root)
    signature = signer.sign(cose.sig_structure(protected, root))
    proof = cbor2.dumps([checkpoint.tree_size, index, path], canonical=True)
    unprotected = {cose.VDP: {cose.INCLUSION_PROOFS: [proof]}, cose.CHECKPOINT_LABEL: checkpoint.note}
    return cbor2.dumps(cbor2.CBORTag(cose.COSE_SIGN1_TAG, [protected, unprotected, None, signature]), canonical=True)


def entry_receipts(indexes: Iterable[int], *, checkpoint: Checkpoint | None = None) -> dict[int, bytes]:
    """Receipts of the entries ``indexes`` in the tree of ``checkpoint`` (default: the latest),
    by index. Raises ``ReceiptUnavailable`` for an index the checkpoint does not cover. Each audit
    path is recomputed to the checkpoint's root before it is signed: a stored tree that disagrees
    with its checkpoint gets no receipt (``DomainError`` ``ledger_inconsistent``)."""
    checkpoint = checkpoint or latest_checkpoint()
    wanted = sorted(set(indexes))
    for index in wanted:
        if checkpoint is None or not 0 <= index < checkpoint.tree_size:
            raise _refuse(index, checkpoint)
    if not wanted:
        return {}
    assert checkpoint is not None
    signer = _signer_for(checkpoint, _signers())
    size, root = checkpoint.tree_size, bytes(checkpoint.root)
    receipts: dict[int, bytes] = {}
    for start in range(0, len(wanted), PROOFS_PER_FETCH):
        chunk = wanted[start : start + PROOFS_PER_FETCH]
        ranges = {index: merkle.inclusion_ranges(index, size) for index in chunk}
        keys = merkle.nodes_for([r for index in chunk for r in [*ranges[index], (index, index + 1)]])
        nodes = fetch_nodes(keys)
        for index in chunk:
            path = [merkle.subtree_hash(a, b, nodes.__getitem__) for a, b in ranges[index]]
            try:
                merkle.verify_inclusion(index, size, nodes[(0, index)], path, root)
            except merkle.ProofError as exc:
                problem = f"entry {index}: the stored tree does not lead to checkpoint {size}'s root ({exc})"
                raise DomainError("ledger_inconsistent", f"{problem}; run `ledger verify`", status_code=500) from None
            receipts[index] = _receipt(index, path, checkpoint, signer)
    return receipts


def entry_receipt(entry: Entry, *, checkpoint: Checkpoint | None = None) -> bytes:
    """The receipt of ``entry`` in the tree of ``checkpoint`` (default: the latest); see
    ``entry_receipts``."""
    return entry_receipts([entry.index], checkpoint=checkpoint)[entry.index]
