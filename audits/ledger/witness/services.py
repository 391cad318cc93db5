"""This service as a witness of other logs (C2SP tlog-witness ``add-checkpoint``).

``witness_add_checkpoint(body=...)`` takes the request body (``old <size>``, the consistency proof
lines, an empty line, the signed checkpoint) and answers as the spec says: 200 with a co-signature
line; 400 malformed; 404 an origin not in ``LEDGER_WITNESSED_LOGS``; 403 no valid signature by the
log's configured keys; 409 (body: the size co-signed last, ``text/x.tlog.size``) when the old size
is not the one last co-signed, or the same size comes with a different root; 422 when the
consistency proof does not hold; 503 when this witness's own key cannot be read. The check and
the move of the log's state happen under the state row's lock, in one transaction, and the state
is committed before the co-signature is returned; so two different trees of one size are never
co-signed, and the state never moves back.

Nothing here is a governed write: a witness's state is protocol bookkeeping and is not appended to
this service's own ledger (two services witnessing each other would otherwise append forever).
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from llmops_ledger_verify.cosignature import cosign, note_body
from llmops_ledger_verify.keys import VerifierKey

from audits.ledger import merkle, notes
from audits.ledger.keys import KeyFileError
from audits.ledger.models_witness import WitnessConflict, WitnessedLog
from audits.ledger.witness.keys import witness_key

logger = logging.getLogger("audits.ledger.witness")

MAX_PROOF_LINES = 63
MAX_BODY_BYTES = 64 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class WitnessAnswer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: list[bytes]
    note: str


class Malformed(ValueError):
    pass


def _decimal(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or (text != "0" and text.startswith("0")):
        raise Malformed(f"{what} {text[:40]!r} is not a decimal number without leading zeros")
    return int(text)


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """The parts of an add-checkpoint request body; ``Malformed`` names what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise Malformed(f"the request body is over {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("the request body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise Malformed("the request needs an empty line between the old size and proof lines and the checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old "):
        raise Malformed("the request starts with an 'old <size>' line")
    old_size = _decimal(lines[0][4:], "the old size")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise Malformed(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            node = base64.b64decode(line, validate=True)
        except ValueError:
            raise Malformed(f"the proof line {line[:60]!r} is not base64") from None
        if len(node) != 32:
            raise Malformed(f"the proof line {line[:60]!r} is not a 32-byte hash")
        proof.append(node)
    return AddCheckpoint(old_size=old_size, proof=proof, note=note)


def _size_conflict(size: int) -> WitnessAnswer:
    return WitnessAnswer(409, f"{size}\n", SIZE_CONTENT_TYPE)


def _keep_evidence(origin: str, request: AddCheckpoint, body: bytes, reason: str) -> None:
    logger.warning("witness: refused a validly signed checkpoint of %s: %s", origin, reason)
    WitnessConflict.objects.create(
        origin=origin, old_size=request.old_size, request=body.decode("utf-8"), reason=reason,
        received_at=timezone.now(),
    )  # fmt: skip


def witness_add_checkpoint(*, body: bytes) -> WitnessAnswer:
    """Answer one ``POST /witness/add-checkpoint`` (see the module's docstring)."""
    try:
        request = parse_add_checkpoint(body)
        checkpoint, _ = notes.parse(request.note)
    except (Malformed, notes.NoteError) as exc:
        return WitnessAnswer(400, f"malformed add-checkpoint request: {exc}\n")
    keys = settings.LEDGER_WITNESSED_LOGS.get(checkpoint.origin)
    if keys is None:
        return WitnessAnswer(404, f"this witness does not witness the log {checkpoint.origin!r}\n")
    try:
        notes.verify(request.note, [VerifierKey.decode(key) for key in keys], origin=checkpoint.origin)
    except notes.NoteError as exc:
        return WitnessAnswer(403, f"the checkpoint is not signed by a key of {checkpoint.origin}: {exc}\n")
    if request.old_size > checkpoint.size:
        return WitnessAnswer(400, f"the old size {request.old_size} is above the checkpoint's {checkpoint.size}\n")
    if request.old_size == 0 and request.proof:
        return WitnessAnswer(400, "the consistency proof must be empty when the old size is 0\n")
    try:
        signer = witness_key()
    except (KeyFileError, OSError) as exc:
        logger.error("witness: the witness key is unavailable: %s", exc)
        return WitnessAnswer(503, "this witness cannot sign now: its key is unavailable\n")
    WitnessedLog.objects.get_or_create(origin=checkpoint.origin)
    with transaction.atomic():
        state = WitnessedLog.objects.select_for_update().get(origin=checkpoint.origin)
        if request.old_size != state.size:
            return _size_conflict(state.size)
        if state.size == checkpoint.size and state.note:
            if bytes(state.root) != checkpoint.root:
                _keep_evidence(checkpoint.origin, request, body, f"a different tree of size {state.size}: split view")
                return _size_conflict(state.size)
        elif state.size:
            try:
                merkle.verify_consistency(
                    state.size, checkpoint.size, bytes(state.root), checkpoint.root, request.proof
                )
            except merkle.ProofError as exc:
                _keep_evidence(checkpoint.origin, request, body, f"no consistency from size {state.size}: {exc}")
                return WitnessAnswer(422, f"the consistency proof from size {state.size} does not verify: {exc}\n")
        state.size, state.root, state.note, state.updated_at = (
            checkpoint.size,
            checkpoint.root,
            request.note,
            timezone.now(),
        )
        state.save(update_fields=["size", "root", "note", "updated_at"])
    # Signed after the commit: the state that the co-signature vouches for is durable first.
    return WitnessAnswer(200, cosign(note_body(request.note), signer, int(time.time())))
