"""Full verification of the stored ledger (``python manage.py ledger verify``).

Re-hashes every stored entry, rebuilds the roots, checks every checkpoint's signatures (those in
the database and those in the checkpoint log outside it), checks each consistency step between
checkpoints with proofs built from the stored subtree hashes (the ones served to clients), and
checks the head. The outcome is recorded as a ``VerificationRun`` for the admin.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from audits.ledger import merkle, notes
from audits.ledger.keys import KeyFileError, VerifierKey, load_signer_keys
from audits.ledger.models import Checkpoint, PublishedKey, VerificationRun
from audits.ledger.replay import ReplayResult, VerificationFailed, check_notes, replay
from audits.ledger.selectors import consistency_proof, head_tree

CHUNK = 20_000


def known_verifiers() -> list[VerifierKey]:
    """Every key that ever signed (published in the database) and every key in the key file."""
    keys = {VerifierKey.decode(row.verifier) for row in PublishedKey.objects.all()}
    try:
        keys.update(signer.verifier() for signer in load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE))
    except KeyFileError:
        pass  # verification can proceed on published keys alone
    return sorted(keys, key=lambda k: (k.name, k.key_id))


def read_checkpoint_log(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            texts.append((f"checkpoint log line {number}", json.loads(line)["note"]))
        except (ValueError, KeyError, TypeError):
            raise VerificationFailed(f"checkpoint log line {number}", "not a checkpoint record") from None
    return texts


def stream_entries() -> Iterator[tuple[int, bytes, bytes | None]]:
    """Every entry in index order, straight from the DB-API cursor in chunks: the ORM would
    build a model instance per row, and verification time grows with the log."""
    connection.ensure_connection()
    cursor = connection.connection.cursor()
    try:
        cursor.execute('SELECT "index", body, leaf_hash FROM ledger_entry ORDER BY "index"')
        if connection.vendor == "sqlite":  # BLOBs arrive as bytes already
            while rows := cursor.fetchmany(CHUNK):
                yield from rows
        else:  # bytea arrives as memoryview
            while rows := cursor.fetchmany(CHUNK):
                for index, body, leaf in rows:
                    yield index, bytes(body), bytes(leaf)
    finally:
        cursor.close()


def _verify(progress: Callable[[int], None] | None) -> ReplayResult:
    verifiers = known_verifiers()
    rows = list(Checkpoint.objects.order_by("tree_size", "id"))
    stored = [(f"checkpoint {row.pk}", row.note) for row in rows]
    for row in rows:
        try:
            parsed, _ = notes.parse(row.note)
        except notes.NoteError as exc:
            raise VerificationFailed(f"checkpoint {row.pk}", str(exc)) from None
        if parsed.size != row.tree_size or parsed.root != bytes(row.root):
            raise VerificationFailed(f"checkpoint {row.pk}", "its size or root columns differ from its signed note")
    logged = read_checkpoint_log(settings.LEDGER_CHECKPOINT_LOG)
    in_database = {row.note for row in rows}
    for label, text in logged:
        if text not in in_database:
            raise VerificationFailed(label, "this signed checkpoint is missing from the database")
    if rows and not logged:
        raise VerificationFailed(
            str(settings.LEDGER_CHECKPOINT_LOG), "the checkpoint log outside the database is missing"
        )
    signed = check_notes(stored + logged, verifiers, settings.LEDGER_ORIGIN)
    result = replay(stream_entries, signed, progress=progress)

    sizes = sorted({s.checkpoint.size for s in signed if s.checkpoint.size > 0})
    roots = {s.checkpoint.size: s.checkpoint.root for s in signed}
    for first, second in pairwise(sizes):
        try:
            proof = consistency_proof(first, second)
            merkle.verify_consistency(first, second, roots[first], roots[second], proof)
        except merkle.ProofError as exc:
            raise VerificationFailed(
                f"consistency from size {first} to {second}", f"{exc} (the stored subtree hashes were changed)"
            ) from None
    head = head_tree()
    if head.size != result.tree_size or head.root() != result.root:
        raise VerificationFailed("ledger head", "its size or right edge disagrees with the entries")
    return result


def ledger_verify(*, progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Verify everything; raises ``VerificationFailed`` naming the first fault. Records the run."""
    started = timezone.now()
    try:
        result = _verify(progress)
    except VerificationFailed as failure:
        VerificationRun.objects.create(
            started_at=started, finished_at=timezone.now(), ok=False, tree_size=head_tree().size,
            checkpoints_checked=0, failure=str(failure),
        )  # fmt: skip
        raise
    VerificationRun.objects.create(
        started_at=started, finished_at=timezone.now(), ok=True, tree_size=result.tree_size,
        checkpoints_checked=result.checkpoints_checked,
    )  # fmt: skip
    return result
