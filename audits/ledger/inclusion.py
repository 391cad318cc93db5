"""One entry's inclusion proof against the latest signed checkpoint, as the admin shows it and as
the proof file an auditor downloads and checks offline (``ledger-verify FILE``).

The proof comes from the ledger's stored subtree hashes (``selectors.inclusion_proof_with_root``,
the API's code) and the file is checked here with the offline verifier's own code
(``llmops_ledger_verify.proof``), so what the page says and what the auditor's verifier says rest
on one implementation of RFC 9162 and of the signed notes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from llmops_ledger_verify.proof import FORMAT, verify_proof
from llmops_ledger_verify.replay import VerificationFailed

from audits.ledger import merkle
from audits.ledger.models import Checkpoint, Entry
from audits.ledger.selectors import inclusion_proof_with_root, latest_checkpoint
from audits.ledger.verification import known_verifiers


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@dataclass(frozen=True)
class PathStep:
    """One hash of the audit path: the subtree over entries ``first..last`` beside the path."""

    first: int
    last: int
    side: str  # "left" or "right" of the path to the root
    hash_b64: str


@dataclass(frozen=True)
class EntryProof:
    entry: Entry
    checkpoint: Checkpoint | None
    next_checkpoint_by: datetime | None = None  # when not covered: when the next signing is due
    document: dict[str, Any] = field(default_factory=dict)  # the proof file; empty when not covered
    steps: list[PathStep] = field(default_factory=list)
    verified: dict[str, Any] | None = None  # the verifier's summary when the proof holds
    failure: str = ""  # the verifier's reason when it does not
    signer_keys: list[str] = field(default_factory=list)  # verifier keys that signed the checkpoint

    @property
    def covered(self) -> bool:
        return bool(self.document)

    def file_name(self) -> str:
        return f"ledger-entry-{self.entry.index}-proof.json"

    def file_bytes(self) -> bytes:
        return (json.dumps(self.document, indent=2, ensure_ascii=False) + "\n").encode()


def _next_signing(last: Checkpoint | None) -> datetime:
    """Beat signs every LEDGER_CHECKPOINT_EVERY_S seconds when the tree has grown; if that moment
    has passed (the signer was busy or stopped), the next period is the best estimate."""
    every = timedelta(seconds=settings.LEDGER_CHECKPOINT_EVERY_S)
    now = timezone.now()
    due = last.created_at + every if last is not None else now + every
    return due if due > now else now + every


def entry_inclusion_proof(entry: Entry) -> EntryProof:
    """The proof of ``entry`` in the latest checkpoint's tree, checked by the offline verifier's
    code against every key the log has published; an entry past that checkpoint gets none yet."""
    checkpoint = latest_checkpoint()
    if checkpoint is None or entry.index >= checkpoint.tree_size:
        return EntryProof(entry=entry, checkpoint=checkpoint, next_checkpoint_by=_next_signing(checkpoint))
    size = checkpoint.tree_size
    _leaf, proof, _root = inclusion_proof_with_root(entry.index, size)
    keys = known_verifiers()
    body = bytes(entry.body)
    document = {
        "format": FORMAT,
        "origin": settings.LEDGER_ORIGIN,
        "index": entry.index,
        "body_b64": _b64(body),
        "leaf_hash_b64": _b64(bytes(entry.leaf_hash)),
        "entry": json.loads(body),
        "tree_size": size,
        "proof_b64": [_b64(h) for h in proof],
        "root_b64": _b64(bytes(checkpoint.root)),
        "checkpoint": checkpoint.note,
        "keys": [k.encode() for k in keys],
        "exported_at": timezone.now().isoformat(),
    }
    steps = [
        PathStep(first=start, last=end - 1, side="left" if start < entry.index else "right", hash_b64=_b64(h))
        for (start, end), h in zip(merkle.inclusion_ranges(entry.index, size), proof, strict=True)
    ]
    try:
        verified = verify_proof(document, keys, settings.LEDGER_ORIGIN)
    except VerificationFailed as failure:
        failed = f"{failure.where}: {failure.why}"
        return EntryProof(entry=entry, checkpoint=checkpoint, document=document, steps=steps, failure=failed)
    by_id = {f"{k.name}+{k.key_id.hex()}": k.encode() for k in keys}
    return EntryProof(
        entry=entry,
        checkpoint=checkpoint,
        document=document,
        steps=steps,
        verified=verified,
        signer_keys=[by_id[name] for name in verified["signed_by"]],
    )
